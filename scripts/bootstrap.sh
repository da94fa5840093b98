#!/usr/bin/env bash
# Create the project venv (.venv) from requirements.lock, idempotently.
# uv and its wheel cache live outside the clone (ROOMLOG_CACHE, default ~/.cache/roomlog),
# so a fresh clone installs from cache in seconds.
set -euo pipefail
usage() { echo "usage: scripts/bootstrap.sh [--help]  (creates .venv from requirements.lock)"; }
[[ "${1:-}" == "--help" || "${1:-}" == "-h" ]] && { usage; exit 0; }

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${ROOMLOG_CACHE:-$HOME/.cache/roomlog}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
"$python" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { echo "Python 3.11+ is required" >&2; exit 1; }

uv="$cache/bootstrap/bin/uv"
if [[ ! -x "$uv" ]]; then
  echo "==> installing uv into $cache/bootstrap"
  "$python" -m venv "$cache/bootstrap"
  "$cache/bootstrap/bin/pip" install --progress-bar on -q uv==0.13.8
fi
export UV_CACHE_DIR="$cache/uv"

lock="$repo/requirements.lock"
stamp="$repo/.venv/.lock.sha256"
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [[ -x "$repo/.venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "==> installing Python dependencies into .venv (from requirements.lock)"
[[ -x "$repo/.venv/bin/python" ]] || "$uv" venv -q "$repo/.venv" --python "$python"
"$uv" pip install --python "$repo/.venv/bin/python" -r "$lock"
echo "$want" > "$stamp"
