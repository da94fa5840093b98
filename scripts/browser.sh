#!/usr/bin/env bash
# Browser tooling for the e2e tests and for trying the web client (idempotent).
#
#   scripts/browser.sh install   Debian `chromium` (apt) unless /usr/bin/chromium exists
#   scripts/browser.sh check     print the Chromium version, exit 1 if it is missing
#   scripts/browser.sh --help
#
# Playwright (a dev dependency in the venv) drives this Chromium with
# `executable_path="/usr/bin/chromium"`; it never downloads a browser of its own.
# The y4m camera files the tests feed Chromium are written by tests/e2e/y4m.py.
set -euo pipefail

CHROMIUM=${ROOMLOG_CHROMIUM:-/usr/bin/chromium}

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
log() { echo "==> browser: $*"; }

apt_install() {
    # another install may hold the dpkg lock (e.g. a parallel `make install`): wait for it
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
    log "apt-get update"
    "${apt[@]}" update -q
    "${apt[@]}" install -y -q --no-install-recommends "$@"
}

install() {
    if [[ -x "$CHROMIUM" ]]; then
        log "chromium: present ($CHROMIUM)"
        return 0
    fi
    [[ $(id -u) == 0 ]] || { echo "browser.sh: installing chromium needs root (apt-get)" >&2; exit 1; }
    log "installing chromium (apt)"
    apt_install chromium fonts-dejavu-core
    "$CHROMIUM" --version
}

check() {
    [[ -x "$CHROMIUM" ]] || { echo "chromium missing: run scripts/browser.sh install" >&2; exit 1; }
    "$CHROMIUM" --headless --no-sandbox --version 2>/dev/null || "$CHROMIUM" --version
}

case "${1:-}" in
    install) install ;;
    check) check ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
