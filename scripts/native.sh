#!/usr/bin/env bash
# The native forwarding core (native/): C + Debian's libsrtp2, bound with cffi (idempotent).
#
#   scripts/native.sh build   install libsrtp2-dev if missing, compile native/_rn_core*.so
#                             (skipped when the sources' hash matches the last build)
#   scripts/native.sh test    build, then run the C unit tests (native/tests/test_rn_core.c)
#   scripts/native.sh --help
#
# Objects are built under ${ROOMLOG_CACHE:-$HOME/.cache/roomlog}/native/<hash>/, outside
# the clone; only the finished module is copied into native/ (gitignored).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${ROOMLOG_CACHE:-$HOME/.cache/roomlog}/native
py="$repo/.venv/bin/python"
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
log() { echo "==> native: $*"; }
CFLAGS=(-O2 -g -fPIC -Wall -Wextra -Wno-unused-parameter -std=gnu11)

deps() {
    local include
    include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    if [[ ! -f /usr/include/srtp2/srtp.h || ! -f "$include/Python.h" ]] || ! command -v gcc >/dev/null; then
        local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
        log "apt-get install libsrtp2-dev gcc python3-dev"
        "${apt[@]}" update -q
        "${apt[@]}" install -y -q --no-install-recommends libsrtp2-dev gcc libc6-dev python3-dev
    fi
}

sources_hash() {
    (cd "$repo" && cat native/src/*.c native/src/*.h native/build.py scripts/native.sh \
        && "$py" -c 'import sys, cffi; print(sys.version, cffi.__version__)' && gcc --version | head -1) \
        | sha256sum | cut -c1-16
}

build() {
    deps
    local suffix hash dir so
    suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
    hash=$(sources_hash)
    so="$repo/native/_rn_core$suffix"
    if [[ -f "$so" && "$(cat "$repo/native/.build-hash" 2>/dev/null)" == "$hash" ]]; then
        return 0
    fi
    dir="$cache/$hash"
    if [[ ! -f "$dir/_rn_core$suffix" ]]; then
        log "compiling native/_rn_core$suffix"
        mkdir -p "$dir"
        "$py" "$repo/native/build.py" "$dir/_rn_core.c"
        local include
        include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
        # hidden: only PyInit__rn_core is exported, the core's internal names stay inside
        gcc "${CFLAGS[@]}" -fvisibility=hidden -shared -I"$include" -I"$repo/native/src" \
            "$dir/_rn_core.c" "$repo"/native/src/*.c -lsrtp2 -lm -lpthread -o "$dir/_rn_core$suffix.tmp"
        mv "$dir/_rn_core$suffix.tmp" "$dir/_rn_core$suffix"
    fi
    cp "$dir/_rn_core$suffix" "$so.tmp" && mv "$so.tmp" "$so"
    echo "$hash" > "$repo/native/.build-hash"
}

test_c() {
    build
    local bin
    bin="$cache/$(sources_hash)-test-$(sha256sum "$repo/native/tests/test_rn_core.c" | cut -c1-16)"
    if [[ ! -x "$bin" ]]; then
        gcc "${CFLAGS[@]}" -fsanitize=address,undefined -I"$repo/native/src" \
            "$repo/native/tests/test_rn_core.c" "$repo"/native/src/*.c -lsrtp2 -lm -lpthread -o "$bin.tmp"
        mv "$bin.tmp" "$bin"
    fi
    "$bin"
}

case "${1:-}" in
    build) build ;;
    test) test_c ;;
    -h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac
