#!/usr/bin/env bash
# Run the whole test suite against freshly started infrastructure, then tear it down.
# `make test` runs this inside a loopback-only network namespace (scripts/netns.sh).
set -euo pipefail
[[ "${1:-}" == "--help" ]] && { echo "usage: scripts/test.sh [pytest args]  (use make test)"; exit 0; }
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export PYTHONPATH="$repo"
export ROOMLOG_RUN_DIR=${ROOMLOG_TEST_RUN_DIR:-$repo/.run/test}
mkdir -p "$ROOMLOG_RUN_DIR"

# every run starts from empty servers and leaves nothing behind
cleanup() { scripts/infra.sh down --wipe || true; }
trap cleanup EXIT
scripts/infra.sh down --wipe >/dev/null 2>&1 || true
scripts/infra.sh up
set -a; . "$ROOMLOG_RUN_DIR/infra.env"; set +a
.venv/bin/python -m db.migrate upgrade head
rc=0
# `scripts/test.sh tests/e2e/test_x.py -k name` runs just that; no argument runs everything
if [[ "${1:-}" == tests/* ]]; then targets=("$@"); else targets=(tests/unit tests/integration tests/e2e "$@"); fi
.venv/bin/python -m pytest "${targets[@]}" -v -rA --durations=15 || rc=$?
exit "$rc"
