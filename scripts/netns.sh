#!/usr/bin/env bash
# Run a command inside a fresh, loopback-only network namespace.
#
#   scripts/netns.sh [--] COMMAND [ARGS...]
#
# Inside the namespace only `lo` exists (brought up, with 127.0.0.1/8 and an
# extra 127.0.0.2/8), so nothing can reach or be reached from the host network
# or from other namespaces.  Typical use:
#
#   ROOMLOG_RUN_DIR=/tmp/it scripts/netns.sh bash -c 'scripts/infra.sh up && pytest ...; scripts/infra.sh down'
#
# Notes:
#   * needs root (CAP_SYS_ADMIN) for `unshare -n`;
#   * processes started inside keep the namespace alive after COMMAND exits:
#     stop them (e.g. `scripts/infra.sh down`) from inside the same command;
#   * the exit status is the one of COMMAND (it is exec'ed).
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

case "${1-}" in
    -h|--help) usage; exit 0 ;;
    --) shift ;;
esac

if [[ $# -eq 0 ]]; then
    usage >&2
    echo "netns.sh: missing COMMAND" >&2
    exit 2
fi

# Arguments are passed as positional parameters to `sh -c`, never re-parsed.
exec unshare -n sh -c '
    ip link set lo up || exit 125
    ip addr add 127.0.0.2/8 dev lo 2>/dev/null || true
    exec "$@"
' sh "$@"
