#!/usr/bin/env bash
# roomlog local infrastructure: Kafka (KRaft), PostgreSQL, MinIO, coturn, Prometheus - no Docker.
#
# Usage: scripts/infra.sh COMMAND [OPTIONS]
#
# Commands:
#   install        Fetch/build what `up` needs (idempotent, cached outside the repo):
#                  Kafka 4.1.1 jars (Maven), MinIO (go install, pinned), PostgreSQL and
#                  coturn and Prometheus (apt, if missing), ffmpeg (apt, if missing: the
#                  recorder's composite and ffprobe checks).
#   up             Start Kafka, PostgreSQL, MinIO, coturn and Prometheus on loopback, wait until ready,
#                  write $RUN/infra.env.  Components already running from this RUN dir are left alone.
#   down [--wipe]  Stop what this RUN dir started (no process left behind).
#                  --wipe also deletes the data dirs (Kafka log dirs, Postgres cluster, MinIO data).
#   status         One line per component.
#   env            Print $RUN/infra.env (KAFKA_BOOTSTRAP, DATABASE_URL, MINIO_*, TURN_URL, TURN_SECRET).
#   help, --help   This text.
#
# Environment:
#   ROOMLOG_CACHE          download/build cache         (default: $HOME/.cache/roomlog)
#   ROOMLOG_RUN_DIR        state, logs and pid files    (default: <repo>/.run)
#   KAFKA_PORT             Kafka PLAINTEXT listener     (default: 19092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener    (default: 19093)
#   PG_PORT                PostgreSQL                   (default: 15432)
#   MINIO_PORT             MinIO S3 API                 (default: 19000)
#   MINIO_CONSOLE_PORT     MinIO console                (default: 19001)
#   KAFKA_HEAP_OPTS        JVM heap for the broker      (default: -Xms256m -Xmx768m)
#   INFRA_TIMEOUT          readiness timeout, seconds   (default: 180)
#   KAFKA_BOOTSTRAP        if set, use that Kafka instead of starting one
#   DATABASE_URL           if set, use that database instead of starting PostgreSQL
#   MINIO_ENDPOINT         if set, use that S3 endpoint instead of starting MinIO
#                          (with MINIO_ACCESS_KEY / MINIO_SECRET_KEY; defaults roomlog / roomlog-secret)
#   TURN_PORT              coturn listener, udp + tcp   (default: 13478)
#   TURN_LISTEN_IP         coturn listening address     (default: 127.0.0.1)
#   TURN_RELAY_IP          address of relayed candidates (default: 127.0.0.2)
#   TURN_EXTERNAL_IP       coturn external-ip (public address behind NAT; default: none)
#   TURN_PUBLIC_HOST       host written into TURN_URL   (default: TURN_LISTEN_IP)
#   TURN_MIN_PORT / TURN_MAX_PORT  relay port range      (default: 49160 / 49359)
#   TURN_ALLOW_LOOPBACK    1 = relay to 127.x peers (needed on one machine; default: 1)
#   TURN_SECRET            coturn static-auth-secret    (default: a dev value; the api needs the same)
#   TURN_URL               if set (turn:host:port), use that coturn instead of starting one
#                          (TURN_SECRET must then be its static-auth-secret)
#   PROM_PORT              Prometheus web/API           (default: 19090)
#   PROM_SCRAPE_INTERVAL   scrape interval              (default: 2s)
#   PROM_RETENTION         TSDB retention               (default: 7d)
#   PROMETHEUS_URL         if set, use that Prometheus instead of starting one (it does not
#                          read this RUN dir's targets unless configured to)
#   ROOMLOG_TRACING        1/true: `up` also starts Jaeger (tracing, observability/README.md)
#                          and writes ROOMLOG_TRACING=1 and its OTLP endpoint into infra.env
#   JAEGER_OTLP_PORT       Jaeger's OTLP/HTTP receiver (default: 14318)
#   JAEGER_UI_PORT         Jaeger's query API, /api/traces (default: 16686; the Go module has no built UI:
#                          the page there is Jaeger's placeholder)
#   JAEGER_HEALTH_PORT     Jaeger's health check   (default: 13133)
#
# Jaeger (cmd/jaeger v1.75.0, built by `install`; in-memory store, nothing on disk) can also be
# started and stopped alone in a RUN dir: `infra.sh jaeger up|down` (the tracing test does).
#
# Prometheus scrapes the targets listed in $RUN/prometheus/targets/*.json (file_sd: a JSON
# list of {"targets": ["127.0.0.1:PORT"], "labels": {...}}, re-read every 2 s): `make up`
# and the test harness write one file per service with a metrics port (api, streams, media
# nodes, recorder) and delete it when the service stops. infra.env carries PROMETHEUS_URL
# and PROMETHEUS_TARGETS_DIR. Alert rules: observability/prometheus/rules.yml (evaluated every
# PROM_SCRAPE_INTERVAL; firing alerts at $PROMETHEUS_URL/api/v1/alerts, no Alertmanager).
#
# Layout under $RUN:  kafka/ (server.properties, log4j2.properties, data/), pg -> Postgres
# cluster dir (see below), minio/data/, coturn/turnserver.conf (mode 600: it holds the secret),
# prometheus/{prometheus.yml,data/,targets/}, logs/{kafka,postgres,minio,coturn,prometheus}.log,
# pids/*.pid, infra.env (mode 600).
#
# PostgreSQL data dir: postgres refuses to run as root, so the cluster runs as the
# `postgres` user, which must be able to traverse every parent of its data dir.  If it
# can reach $RUN/pg (e.g. RUN under /work or /tmp) the cluster lives there; otherwise
# (e.g. RUN under /root, mode 700) it lives in /tmp/roomlog-pg-<hash of RUN> and $RUN/pg
# is a symlink to it.  No permissions of existing directories are changed.
# The cluster is a disposable dev/test cluster: fsync/synchronous_commit are off.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"

CACHE="${ROOMLOG_CACHE:-$HOME/.cache/roomlog}"
RUN="${ROOMLOG_RUN_DIR:-$REPO/.run}"
[[ "$RUN" = /* ]] || RUN="$PWD/$RUN"
RUN="${RUN%/}"

KAFKA_VERSION=4.1.1
SLF4J_VERSION=2.0.17
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
EXTRA_LIBS="$KAFKA_HOME/extra-libs"
KAFKA_MARKER="$KAFKA_HOME/.install-complete"
BIN="$CACHE/bin"
MINIO_BIN="$BIN/minio"
JAEGER_MODULE=github.com/jaegertracing/jaeger/cmd/jaeger
JAEGER_VERSION=v1.75.0
JAEGER_BIN="$BIN/jaeger-$JAEGER_VERSION"

PIDS="$RUN/pids"
LOGS="$RUN/logs"
STATE_FILE="$RUN/ports.env"   # ports/modes used by the last `up`, read by status/down/env

MINIO_USER_DEFAULT=roomlog
TURN_SECRET_DEFAULT=roomlog-dev-turn-secret
MINIO_PASSWORD_DEFAULT=roomlog-secret

log()  { printf '[infra] %s\n' "$*"; }
warn() { printf '[infra] WARNING: %s\n' "$*" >&2; }
die()  { printf '[infra] ERROR: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

load_ports() {  # load_ports [--recorded]
    # `up`: ports from env, else defaults.  status/down (--recorded): env, else the
    # values recorded by the last `up` in this RUN dir, else defaults.
    local k v
    if [[ "${1-}" = --recorded && -f "$STATE_FILE" ]]; then
        while IFS='=' read -r k v; do
            case "$k" in
                KAFKA_PORT|KAFKA_CONTROLLER_PORT|PG_PORT|MINIO_PORT|MINIO_CONSOLE_PORT|TURN_PORT|TURN_LISTEN_IP|PROM_PORT)
                    [[ -n "${!k-}" ]] || printf -v "$k" '%s' "$v" ;;
            esac
        done < "$STATE_FILE"
    fi
    KAFKA_PORT="${KAFKA_PORT:-19092}"
    KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
    PG_PORT="${PG_PORT:-15432}"
    MINIO_PORT="${MINIO_PORT:-19000}"
    MINIO_CONSOLE_PORT="${MINIO_CONSOLE_PORT:-19001}"
    TURN_PORT="${TURN_PORT:-13478}"
    TURN_LISTEN_IP="${TURN_LISTEN_IP:-127.0.0.1}"
    TURN_RELAY_IP="${TURN_RELAY_IP:-127.0.0.2}"
    TURN_MIN_PORT="${TURN_MIN_PORT:-49160}"
    TURN_MAX_PORT="${TURN_MAX_PORT:-49359}"
    TURN_ALLOW_LOOPBACK="${TURN_ALLOW_LOOPBACK:-1}"
    PROM_PORT="${PROM_PORT:-19090}"
    PROM_SCRAPE_INTERVAL="${PROM_SCRAPE_INTERVAL:-2s}"
    PROM_RETENTION="${PROM_RETENTION:-7d}"
    JAEGER_OTLP_PORT="${JAEGER_OTLP_PORT:-14318}"
    JAEGER_UI_PORT="${JAEGER_UI_PORT:-16686}"
    JAEGER_HEALTH_PORT="${JAEGER_HEALTH_PORT:-13133}"
    TIMEOUT="${INFRA_TIMEOUT:-180}"
}

# ---------------------------------------------------------------- helpers

port_open() {  # port_open PORT  -> 0 if something accepts TCP on 127.0.0.1:PORT
    # shellcheck disable=SC2016  # $1 expands in the child bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

cmdline_has() {  # cmdline_has PID STRING...: the process's argv contains every STRING
    local pid="$1" c s argv=()
    shift
    { mapfile -d '' -t argv < "/proc/$pid/cmdline"; } 2>/dev/null || return 1
    c="${argv[*]-} "
    for s in "$@"; do [[ "$c" == *"$s"* ]] || return 1; done
}

# pid_of NAME STRING...: print the pid of this RUN dir's NAME process: the one in
# $PIDS/NAME.pid if alive and its argv contains every STRING (guards against recycled
# pids and other RUN dirs); else (pidfile lost) any process whose argv matches.
pid_of() {
    local name="$1" f="$PIDS/$1.pid" pid p
    shift
    if [[ -f "$f" ]]; then
        pid="$(head -n1 "$f" 2>/dev/null)"
        if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && cmdline_has "$pid" "$@"; then
            echo "$pid"; return 0
        fi
    fi
    for p in /proc/[0-9]*; do
        pid="${p#/proc/}"
        [[ "$pid" != "$$" && "$pid" != "$BASHPID" ]] || continue
        cmdline_has "$pid" "$@" || continue
        echo "$pid"; return 0
    done
    return 1
}

stop_pid() {  # stop_pid NAME PID TIMEOUT: SIGTERM, wait, SIGKILL
    local name="$1" pid="$2" t="$3" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < t * 5; i++)); do
        kill -0 "$pid" 2>/dev/null || { log "$name stopped (pid $pid)"; return 0; }
        sleep 0.2
    done
    warn "$name (pid $pid) still alive after ${t}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    warn "$name (pid $pid) did not die"
}

fail_start() {  # fail_start NAME LOGFILE MESSAGE
    printf '[infra] ERROR: %s failed to start: %s\n' "$1" "$3" >&2
    printf '[infra]        see %s (last lines below)\n' "$2" >&2
    tail -n 25 "$2" 2>/dev/null | sed 's/^/    | /' >&2 || true
    exit 1
}

pg_bin() {
    local d
    # shellcheck disable=SC2012  # fixed, well-known path names
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
    [[ -n "$d" && -x "$d/postgres" ]] || return 1
    echo "$d"
}

as_pg() { (cd / && runuser -u postgres -- "$@" 8>&-); }  # 8: lock fd, not for daemons

kafka_cp() {
    # The pom resolves slf4j-api 1.7.x (from kafka) next to log4j-slf4j2-impl (an SLF4J 2
    # provider): SLF4J 1.7 cannot see it and logs nothing.  Put slf4j-api 2.x first.
    local cp="$LIBS/*"
    if compgen -G "$LIBS/slf4j-api-1.*.jar" >/dev/null && compgen -G "$EXTRA_LIBS/slf4j-api-2.*.jar" >/dev/null; then
        cp="$EXTRA_LIBS/*:$cp"
    fi
    echo "$cp"
}

kafka_java() {  # kafka_java MAINCLASS ARGS...  (tools: quiet logging, small heap)
    java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
        -Dlog4j2.configurationFile="$RUN/kafka/tools-log4j2.properties" \
        -cp "$(kafka_cp)" "$@"
}

# ---------------------------------------------------------------- install

ensure_cmd() {  # ensure_cmd CMD APT_PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (apt) for '$1'"
    apt_install "$2"
}

APT_UPDATED=0
apt_install() {
    if [[ $APT_UPDATED = 0 ]]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

install_kafka() {
    if [[ -f "$KAFKA_MARKER" && -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]]; then
        log "kafka $KAFKA_VERSION: present ($LIBS)"
        return 0
    fi
    ensure_cmd java openjdk-17-jre-headless
    ensure_cmd mvn maven
    log "kafka $KAFKA_VERSION: downloading jars with Maven into $LIBS (this can take a few minutes)"
    mkdir -p "$LIBS" "$EXTRA_LIBS"
    mvn -B -Dstyle.color=never dependency:copy-dependencies -f "$SCRIPT_DIR/kafka/pom.xml" \
        -DoutputDirectory="$LIBS" -DincludeScope=runtime
    log "kafka $KAFKA_VERSION: fetching slf4j-api $SLF4J_VERSION (logging bridge fix)"
    mvn -B -Dstyle.color=never dependency:copy -f "$SCRIPT_DIR/kafka/pom.xml" \
        -Dartifact="org.slf4j:slf4j-api:$SLF4J_VERSION" -DoutputDirectory="$EXTRA_LIBS"
    [[ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka jars missing after mvn (see output above)"
    date -u +%FT%TZ > "$KAFKA_MARKER"
    log "kafka $KAFKA_VERSION: done"
}

install_minio() {
    # a `go install` of MinIO into the same GOBIN may be running (e.g. a bootstrap step):
    # wait for it instead of starting a second build (or trusting a half-written binary)
    if pgrep -f "go install $MINIO_MODULE" >/dev/null; then
        log "minio: another 'go install $MINIO_MODULE' is running; waiting for it"
        local n=0
        while pgrep -f "go install $MINIO_MODULE" >/dev/null; do
            sleep 5; n=$((n + 5))
            (( n % 30 == 0 )) && log "minio: still building... (${n}s)"
        done
        if [[ -x "$MINIO_BIN" ]]; then
            log "minio: present ($MINIO_BIN)"
            return 0
        fi
        warn "the concurrent build finished without producing $MINIO_BIN; building it now"
    elif [[ -x "$MINIO_BIN" ]]; then
        log "minio: present ($MINIO_BIN)"
        return 0
    fi
    command -v go >/dev/null 2>&1 || die "go is required to build MinIO (not found in PATH)"
    log "minio: building $MINIO_MODULE@$MINIO_VERSION into $BIN (several minutes on 2 cores)"
    mkdir -p "$BIN"
    CGO_ENABLED=0 GOBIN="$BIN" go install -v "$MINIO_MODULE@$MINIO_VERSION"
    [[ -x "$MINIO_BIN" ]] || die "go install finished but $MINIO_BIN is missing"
    log "minio: done"
}

install_jaeger() {
    # Jaeger's all-in-one (`cmd/jaeger`: OTLP receiver, in-memory store, query API; no built UI). Its
    # go.mod has a replace directive, so `go install module@version` refuses it: the pinned module
    # is fetched with `go mod download` (checked against the Go checksum database) and built as
    # the main module. Module and build caches live under $CACHE/go (reused by a fresh clone).
    if [[ -x "$JAEGER_BIN" ]]; then
        log "jaeger: present ($JAEGER_BIN)"
        return 0
    fi
    command -v go >/dev/null 2>&1 || die "go is required to build Jaeger (not found in PATH)"
    log "jaeger: building $JAEGER_MODULE@$JAEGER_VERSION into $BIN (minutes on 2 cores)"
    mkdir -p "$BIN"
    local src
    src=$(cd / && GOPATH="$CACHE/go" GOFLAGS=-modcacherw go mod download -json "${JAEGER_MODULE%/cmd/jaeger}@$JAEGER_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [[ -n "$src" && -f "$src/go.mod" ]] || die "go mod download of Jaeger $JAEGER_VERSION failed"
    (cd "$src" && CGO_ENABLED=0 GOPATH="$CACHE/go" GOCACHE="$CACHE/go/build-cache" GOFLAGS=-modcacherw \
        go build -trimpath -o "$JAEGER_BIN.tmp" ./cmd/jaeger) || die "go build of Jaeger failed"
    mv -f "$JAEGER_BIN.tmp" "$JAEGER_BIN"
    log "jaeger: done"
}

install_postgres() {
    if pg_bin >/dev/null; then
        log "postgresql: present ($(pg_bin))"
    else
        log "postgresql: installing with apt-get"
        apt_install postgresql
        pg_bin >/dev/null || die "postgresql installed but no /usr/lib/postgresql/*/bin/postgres"
    fi
    id postgres >/dev/null 2>&1 || die "user 'postgres' missing (the postgresql package creates it)"
    ensure_cmd psql postgresql-client
}

install_coturn() {
    if command -v turnserver >/dev/null 2>&1; then
        log "coturn: present ($(command -v turnserver))"
        return 0
    fi
    log "coturn: installing with apt-get (the package's own service stays disabled)"
    apt_install coturn
    command -v turnserver >/dev/null 2>&1 || die "coturn installed but no turnserver in PATH"
}

install_prometheus() {
    if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
        log "prometheus: present ($(command -v prometheus))"
        return 0
    fi
    log "prometheus: installing with apt-get (the package's own service stays disabled)"
    apt_install prometheus
    command -v prometheus >/dev/null 2>&1 || die "prometheus installed but not in PATH"
    command -v promtool >/dev/null 2>&1 || die "prometheus installed but no promtool in PATH"
    # on a machine with systemd the package starts a system-wide server on :9090; ours is per RUN dir
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
}

install_gstreamer() {
    # the test camera (tests/rtsp_server.py): GStreamer's RTSP server with x264, run by the
    # system python3 (python3-gi); the project venv does not see the system gi module
    if /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer' >/dev/null 2>&1 \
        && command -v gst-inspect-1.0 >/dev/null 2>&1 && gst-inspect-1.0 x264enc >/dev/null 2>&1 \
        && gst-inspect-1.0 rtph264pay >/dev/null 2>&1; then
        return 0
    fi
    log "gstreamer: installing the RTSP server, x264 and python3-gi with apt-get"
    apt_install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gir1.2-gstreamer-1.0 python3-gi \
        gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
}

cmd_install() {
    mkdir -p "$CACHE"
    ensure_cmd flock util-linux
    exec 9> "$CACHE/.install.lock"
    if ! flock -n 9; then
        log "another 'infra.sh install' holds $CACHE/.install.lock; waiting"
        flock 9
    fi
    ensure_cmd curl curl
    ensure_cmd ip iproute2
    ensure_cmd iptables iptables  # loss injection in the quality tests (no tc netem here)
    ensure_cmd openssl openssl
    install_coturn
    install_prometheus
    install_postgres
    install_kafka
    install_minio
    install_jaeger
    # the recorder's tests probe files with ffprobe; the composite renders with ffmpeg
    ensure_cmd ffprobe ffmpeg
    install_gstreamer
    log "install complete (cache: $CACHE)"
}

# ---------------------------------------------------------------- kafka

kafka_pid() { pid_of kafka "kafka.Kafka $RUN/kafka/server.properties"; }

kafka_write_config() {
    mkdir -p "$RUN/kafka/data"
    cat > "$RUN/kafka/server.properties" <<EOF
# generated by scripts/infra.sh - single-node KRaft (combined broker + controller)
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$RUN/kafka/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=168
EOF
    cat > "$RUN/kafka/log4j2.properties" <<'EOF'
# broker logging (stdout -> $RUN/logs/kafka.log)
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.akafka.name = org.apache.kafka
logger.akafka.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
EOF
    cat > "$RUN/kafka/tools-log4j2.properties" <<'EOF'
# command-line tools: warnings only, to stderr
status = warn
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = ERR
EOF
}

kafka_up() {
    local logf="$LOGS/kafka.log" pid
    if [[ -n "${KAFKA_BOOTSTRAP-}" ]]; then
        log "kafka: using existing server KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP (not started)"
        KAFKA_MODE=external; KAFKA_URL="$KAFKA_BOOTSTRAP"
        return 0
    fi
    KAFKA_MODE=managed; KAFKA_URL="127.0.0.1:$KAFKA_PORT"
    if pid="$(kafka_pid)"; then
        # recorded ports may differ from current env: trust the running config
        KAFKA_PORT="$(sed -n 's#^listeners=PLAINTEXT://127.0.0.1:\([0-9]*\),.*#\1#p' "$RUN/kafka/server.properties")"
        KAFKA_CONTROLLER_PORT="$(sed -n 's#^listeners=.*CONTROLLER://127.0.0.1:\([0-9]*\).*#\1#p' "$RUN/kafka/server.properties")"
        KAFKA_URL="127.0.0.1:$KAFKA_PORT"
        log "kafka: already running (pid $pid) on $KAFKA_URL"
        return 0
    fi
    [[ -f "$KAFKA_MARKER" ]] || die "kafka jars not installed: run scripts/infra.sh install"
    command -v java >/dev/null || die "java not found: run scripts/infra.sh install"
    port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is already in use (set KAFKA_PORT=..., or KAFKA_BOOTSTRAP=host:port to use that server)"
    port_open "$KAFKA_CONTROLLER_PORT" && die "port $KAFKA_CONTROLLER_PORT is already in use (set KAFKA_CONTROLLER_PORT=...)"

    kafka_write_config
    if [[ ! -f "$RUN/kafka/data/meta.properties" ]]; then
        local cid
        cid="$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
        [[ -n "$cid" ]] || die "kafka: could not generate a cluster id"
        log "kafka: formatting storage (cluster id $cid)"
        kafka_java kafka.tools.StorageTool format -t "$cid" -c "$RUN/kafka/server.properties" \
            >> "$logf" 2>&1 || fail_start kafka "$logf" "storage format failed"
    fi
    log "kafka: starting on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT)"
    echo "===== $(date -u +%FT%TZ) infra.sh up =====" >> "$logf"
    KAFKA_LOG_START="$(wc -l < "$logf")"
    # shellcheck disable=SC2086
    setsid nohup java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m} \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
        -Dkafka.logs.dir="$LOGS" \
        -Dlog4j2.configurationFile="$RUN/kafka/log4j2.properties" \
        -cp "$(kafka_cp)" kafka.Kafka "$RUN/kafka/server.properties" \
        >> "$logf" 2>&1 < /dev/null 8>&- &
    echo $! > "$PIDS/kafka.pid"
    KAFKA_STARTED_PID=$!
    KAFKA_START_EPOCH="$(date +%s)"
}

kafka_wait() {
    [[ "$KAFKA_MODE" = managed && -n "${KAFKA_STARTED_PID-}" ]] || return 0
    local logf="$LOGS/kafka.log" pid="$KAFKA_STARTED_PID" deadline=$((SECONDS + TIMEOUT)) logging=0
    compgen -G "$EXTRA_LIBS/slf4j-api-2.*.jar" >/dev/null || compgen -G "$LIBS/slf4j-api-2.*.jar" >/dev/null && logging=1
    while :; do
        kill -0 "$pid" 2>/dev/null || fail_start kafka "$logf" "process $pid exited"
        if port_open "$KAFKA_PORT"; then
            if [[ $logging = 1 ]]; then
                # printed by KafkaRaftServer once broker+controller are up and serving requests
                # (awk reads the file itself: `tail | grep -q` fails under pipefail on long logs)
                awk -v s="$KAFKA_LOG_START" 'NR >= s && /Kafka Server started/ {f = 1; exit} END {exit !f}' \
                    "$logf" && break
            else
                kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
                    --list >/dev/null 2>&1 && break
            fi
        fi
        (( SECONDS < deadline )) || fail_start kafka "$logf" "not ready after ${TIMEOUT}s"
        sleep 0.2
    done
    log "kafka: ready on 127.0.0.1:$KAFKA_PORT ($(( $(date +%s) - KAFKA_START_EPOCH ))s after launch)"
}

kafka_down() {
    local pid
    if pid="$(kafka_pid)"; then
        log "kafka: stopping (pid $pid)"
        stop_pid kafka "$pid" "${KAFKA_STOP_TIMEOUT:-30}"
    fi
    rm -f "$PIDS/kafka.pid"
}

# ---------------------------------------------------------------- postgres

PG_FALLBACK="/tmp/roomlog-pg-$(printf '%s' "$RUN" | sha256sum | cut -c1-12)"

pg_dir() {  # where the cluster dir is (no side effects)
    if [[ -L "$RUN/pg" ]]; then readlink -f "$RUN/pg"; else echo "$RUN/pg"; fi
}

pg_dir_prepare() {  # choose & create the cluster dir, see header comment
    local d="$RUN/pg"
    if [[ -L "$d" ]]; then
        d="$(readlink -f "$d")"
        mkdir -p "$d"; chown postgres:postgres "$d"; chmod 700 "$d"
        echo "$d"; return
    fi
    mkdir -p "$d"
    chown postgres:postgres "$d"; chmod 700 "$d"
    if as_pg test -w "$d" -a -x "$d"; then echo "$d"; return; fi
    # postgres cannot reach $RUN/pg (a parent dir is not traversable): use /tmp + symlink
    [[ -z "$(ls -A "$d")" ]] || die "postgres user cannot access $d and it is not empty"
    rmdir "$d"
    mkdir -p "$PG_FALLBACK"; chown postgres:postgres "$PG_FALLBACK"; chmod 700 "$PG_FALLBACK"
    ln -s "$PG_FALLBACK" "$RUN/pg"
    echo "$PG_FALLBACK"
}

pg_running() {  # prints postmaster pid if the cluster of this RUN dir runs
    local d pid bin
    d="$(pg_dir)/data"
    [[ -f "$d/postmaster.pid" ]] || return 1
    pid="$(head -n1 "$d/postmaster.pid" 2>/dev/null)"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    local cmdline
    cmdline="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *"$d"* ]] || return 1
    echo "$pid"
}

pg_psql() { psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAq "$@"; }

pg_up() {
    local logf="$LOGS/postgres.log" pid bin dir sockdir
    if [[ -n "${DATABASE_URL-}" ]]; then
        log "postgres: using existing database DATABASE_URL=$DATABASE_URL (not started)"
        PG_MODE=external; PG_URL="$DATABASE_URL"
        return 0
    fi
    PG_MODE=managed
    bin="$(pg_bin)" || die "PostgreSQL server not installed: run scripts/infra.sh install"
    if pid="$(pg_running)"; then
        PG_PORT="$(sed -n 's/^port = \([0-9]*\).*/\1/p' "$(pg_dir)/data/postgresql.auto.conf" 2>/dev/null || true)"
        PG_PORT="${PG_PORT:-15432}"
        log "postgres: already running (pid $pid) on 127.0.0.1:$PG_PORT"
    else
        port_open "$PG_PORT" && die "port $PG_PORT is already in use (set PG_PORT=..., or DATABASE_URL=... to use that server)"
        dir="$(pg_dir_prepare)"
        if [[ "$dir" != "$RUN/pg" ]]; then
            # the postgres user cannot reach $LOGS either: log next to the cluster
            [[ -L "$logf" ]] || { [[ -f "$logf" ]] && cat "$logf" >> "$dir/postgres.log"; rm -f "$logf"; }
            ln -sfn "$dir/postgres.log" "$logf"
            logf="$dir/postgres.log"
        fi
        touch "$logf"; chown postgres:postgres "$logf"
        if [[ ! -f "$dir/data/PG_VERSION" ]]; then
            log "postgres: initdb in $dir/data"
            as_pg "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
                --no-sync --no-instructions >> "$logf" 2>&1 || fail_start postgres "$logf" "initdb failed"
        fi
        # settings live in postgresql.auto.conf so status/up can read back the port
        cat > "$dir/data/postgresql.auto.conf" <<EOF
# generated by scripts/infra.sh (disposable dev/test cluster)
port = $PG_PORT
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
        chown postgres:postgres "$dir/data/postgresql.auto.conf"
        # unix socket in the cluster dir when the path fits (sun_path is 108 bytes); TCP is what we use
        sockdir="$dir"
        (( ${#sockdir} < 90 )) || sockdir=""
        log "postgres: starting on 127.0.0.1:$PG_PORT"
        as_pg "$bin/pg_ctl" -D "$dir/data" -l "$logf" -w -t "$TIMEOUT" \
            -o "-p $PG_PORT -k '$sockdir' -c listen_addresses=127.0.0.1" start >/dev/null \
            || fail_start postgres "$logf" "pg_ctl start failed"
        pid="$(pg_running)" || fail_start postgres "$logf" "postmaster not running after start"
    fi
    echo "$pid" > "$PIDS/postgres.pid"
    local deadline=$((SECONDS + TIMEOUT))
    until pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres; do
        (( SECONDS < deadline )) || fail_start postgres "$logf" "pg_isready failed for ${TIMEOUT}s"
        sleep 0.2
    done
    if [[ "$(pg_psql -c "SELECT 1 FROM pg_roles WHERE rolname='roomlog'")" != 1 ]]; then
        log "postgres: creating role roomlog"
        pg_psql -c "CREATE ROLE roomlog LOGIN PASSWORD 'roomlog' CREATEDB"
    fi
    if [[ "$(pg_psql -c "SELECT 1 FROM pg_database WHERE datname='roomlog'")" != 1 ]]; then
        log "postgres: creating database roomlog"
        pg_psql -c "CREATE DATABASE roomlog OWNER roomlog"
    fi
    PG_URL="postgresql+asyncpg://roomlog:roomlog@127.0.0.1:$PG_PORT/roomlog"
    log "postgres: ready on 127.0.0.1:$PG_PORT"
}

pg_down() {
    local pid bin
    if pid="$(pg_running)"; then
        log "postgres: stopping (pid $pid)"
        if bin="$(pg_bin)"; then
            as_pg "$bin/pg_ctl" -D "$(pg_dir)/data" -m fast -w -t 30 stop >/dev/null || true
        fi
        pid="$(pg_running)" && stop_pid postgres "$pid" 10
        log "postgres: stopped"
    fi
    rm -f "$PIDS/postgres.pid"
}

# ---------------------------------------------------------------- minio

minio_pid() { pid_of minio "minio server $RUN/minio/data "; }

minio_up() {
    local logf="$LOGS/minio.log" pid
    MINIO_USER="${MINIO_ACCESS_KEY:-$MINIO_USER_DEFAULT}"
    MINIO_PASS="${MINIO_SECRET_KEY:-$MINIO_PASSWORD_DEFAULT}"
    if [[ -n "${MINIO_ENDPOINT-}" ]]; then
        log "minio: using existing endpoint MINIO_ENDPOINT=$MINIO_ENDPOINT (not started)"
        MINIO_MODE=external; MINIO_URL="$MINIO_ENDPOINT"
        return 0
    fi
    # a server we start always uses the default credentials
    MINIO_MODE=managed; MINIO_USER="$MINIO_USER_DEFAULT"; MINIO_PASS="$MINIO_PASSWORD_DEFAULT"
    if pid="$(minio_pid)"; then
        MINIO_PORT="$(tr '\0' '\n' < "/proc/$pid/cmdline" | sed -n '/^--address$/{n;s/.*://p}')"
        MINIO_CONSOLE_PORT="$(tr '\0' '\n' < "/proc/$pid/cmdline" | sed -n '/^--console-address$/{n;s/.*://p}')"
        MINIO_URL="127.0.0.1:$MINIO_PORT"
        log "minio: already running (pid $pid) on $MINIO_URL"
        return 0
    fi
    [[ -x "$MINIO_BIN" ]] || die "minio not installed ($MINIO_BIN): run scripts/infra.sh install"
    port_open "$MINIO_PORT" && die "port $MINIO_PORT is already in use (set MINIO_PORT=..., or MINIO_ENDPOINT=host:port to use that server)"
    port_open "$MINIO_CONSOLE_PORT" && die "port $MINIO_CONSOLE_PORT is already in use (set MINIO_CONSOLE_PORT=...)"
    mkdir -p "$RUN/minio/data"
    log "minio: starting on 127.0.0.1:$MINIO_PORT (console :$MINIO_CONSOLE_PORT)"
    echo "===== $(date -u +%FT%TZ) infra.sh up =====" >> "$logf"
    MINIO_ROOT_USER="$MINIO_USER" MINIO_ROOT_PASSWORD="$MINIO_PASS" \
    MINIO_UPDATE=off MINIO_CALLHOME_ENABLE=off \
        setsid nohup "$MINIO_BIN" server "$RUN/minio/data" \
            --address "127.0.0.1:$MINIO_PORT" --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" \
            >> "$logf" 2>&1 < /dev/null 8>&- &
    echo $! > "$PIDS/minio.pid"
    MINIO_STARTED_PID=$!
    MINIO_URL="127.0.0.1:$MINIO_PORT"
}

minio_wait() {
    [[ "$MINIO_MODE" = managed && -n "${MINIO_STARTED_PID-}" ]] || return 0
    local logf="$LOGS/minio.log" pid="$MINIO_STARTED_PID" deadline=$((SECONDS + TIMEOUT))
    until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$MINIO_PORT/minio/health/ready"; do
        kill -0 "$pid" 2>/dev/null || fail_start minio "$logf" "process $pid exited"
        (( SECONDS < deadline )) || fail_start minio "$logf" "not ready after ${TIMEOUT}s"
        sleep 0.2
    done
    log "minio: ready on 127.0.0.1:$MINIO_PORT"
}

minio_down() {
    local pid
    if pid="$(minio_pid)"; then
        log "minio: stopping (pid $pid)"
        stop_pid minio "$pid" 15
    fi
    rm -f "$PIDS/minio.pid"
}

# ---------------------------------------------------------------- coturn

turn_pid() { pid_of coturn "turnserver -c $RUN/coturn/turnserver.conf"; }

turn_port_open() {  # turn_port_open HOST PORT: something accepts TCP there
    # shellcheck disable=SC2016  # $1/$2 expand in the child bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

turn_write_config() {  # the secret goes to a 0600 file, never onto a command line
    mkdir -p "$RUN/coturn"
    (
        umask 077
        cat > "$RUN/coturn/turnserver.conf" <<CONF
# generated by scripts/infra.sh - coturn with ephemeral (TURN REST API) credentials
listening-ip=$TURN_LISTEN_IP
listening-port=$TURN_PORT
relay-ip=$TURN_RELAY_IP
${TURN_EXTERNAL_IP:+external-ip=$TURN_EXTERNAL_IP}
min-port=$TURN_MIN_PORT
max-port=$TURN_MAX_PORT
use-auth-secret
static-auth-secret=$TURN_SECRET
realm=roomlog
fingerprint
no-tls
no-dtls
no-cli
no-multicast-peers
$([[ "$TURN_ALLOW_LOOPBACK" = 1 ]] && echo allow-loopback-peers || echo "# loopback peers denied")
userdb=$RUN/coturn/turndb
pidfile=$RUN/coturn/turnserver.pid
log-file=$LOGS/coturn.log
simple-log
no-stdout-log
CONF
    )
}

turn_up() {
    local logf="$LOGS/coturn.log" pid
    if [[ -n "${TURN_URL-}" ]]; then
        [[ -n "${TURN_SECRET-}" ]] || die "TURN_URL is set: also set TURN_SECRET (the server's static-auth-secret)"
        log "coturn: using existing server TURN_URL=$TURN_URL (not started)"
        TURN_MODE=external; TURN_ADDR="$TURN_URL"
        return 0
    fi
    TURN_MODE=managed
    TURN_SECRET="${TURN_SECRET:-$TURN_SECRET_DEFAULT}"
    if pid="$(turn_pid)"; then
        TURN_PORT="$(sed -n 's/^listening-port=//p' "$RUN/coturn/turnserver.conf")"
        TURN_LISTEN_IP="$(sed -n 's/^listening-ip=//p' "$RUN/coturn/turnserver.conf")"
        TURN_SECRET="$(sed -n 's/^static-auth-secret=//p' "$RUN/coturn/turnserver.conf")"
        TURN_ADDR="turn:${TURN_PUBLIC_HOST:-$TURN_LISTEN_IP}:$TURN_PORT"
        log "coturn: already running (pid $pid) on $TURN_LISTEN_IP:$TURN_PORT"
        return 0
    fi
    command -v turnserver >/dev/null || die "coturn not installed: run scripts/infra.sh install"
    turn_port_open "$TURN_LISTEN_IP" "$TURN_PORT" \
        && die "port $TURN_LISTEN_IP:$TURN_PORT is already in use (set TURN_PORT=..., or TURN_URL=turn:host:port to use that server)"
    turn_write_config
    log "coturn: starting on $TURN_LISTEN_IP:$TURN_PORT udp+tcp (relay $TURN_RELAY_IP:$TURN_MIN_PORT-$TURN_MAX_PORT)"
    echo "===== $(date -u +%FT%TZ) infra.sh up =====" >> "$logf"
    setsid nohup turnserver -c "$RUN/coturn/turnserver.conf" >> "$logf" 2>&1 < /dev/null 8>&- &
    echo $! > "$PIDS/coturn.pid"
    TURN_STARTED_PID=$!
    TURN_ADDR="turn:${TURN_PUBLIC_HOST:-$TURN_LISTEN_IP}:$TURN_PORT"
}

turn_wait() {
    [[ "$TURN_MODE" = managed && -n "${TURN_STARTED_PID-}" ]] || return 0
    local logf="$LOGS/coturn.log" pid="$TURN_STARTED_PID" deadline=$((SECONDS + TIMEOUT))
    until turn_port_open "$TURN_LISTEN_IP" "$TURN_PORT"; do
        kill -0 "$pid" 2>/dev/null || fail_start coturn "$logf" "process $pid exited"
        (( SECONDS < deadline )) || fail_start coturn "$logf" "not listening after ${TIMEOUT}s"
        sleep 0.2
    done
    log "coturn: ready on $TURN_LISTEN_IP:$TURN_PORT"
}

turn_down() {
    local pid
    if pid="$(turn_pid)"; then
        log "coturn: stopping (pid $pid)"
        stop_pid coturn "$pid" 10
    fi
    rm -f "$PIDS/coturn.pid"
}

# ---------------------------------------------------------------- prometheus

prom_pid() { pid_of prometheus "prometheus --config.file=$RUN/prometheus/prometheus.yml"; }

prom_write_config() {
    mkdir -p "$RUN/prometheus/data" "$RUN/prometheus/targets"
    cat > "$RUN/prometheus/prometheus.yml" <<EOF
# generated by scripts/infra.sh - scrapes what $RUN/prometheus/targets/*.json lists
global:
  scrape_interval: $PROM_SCRAPE_INTERVAL
  scrape_timeout: $PROM_SCRAPE_INTERVAL
  evaluation_interval: $PROM_SCRAPE_INTERVAL
rule_files: ["$REPO/observability/prometheus/rules.yml"]
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$PROM_PORT"]
  - job_name: roomlog
    file_sd_configs:
      - files: ["$RUN/prometheus/targets/*.json"]
        refresh_interval: 2s
EOF
    promtool check config "$RUN/prometheus/prometheus.yml" >/dev/null \
        || die "prometheus: generated config is invalid ($RUN/prometheus/prometheus.yml)"
}

prom_up() {
    local logf="$LOGS/prometheus.log" pid
    if [[ -n "${PROMETHEUS_URL-}" ]]; then
        log "prometheus: using existing server PROMETHEUS_URL=$PROMETHEUS_URL (not started)"
        PROM_MODE=external; PROM_URL="$PROMETHEUS_URL"
        mkdir -p "$RUN/prometheus/targets"
        return 0
    fi
    PROM_MODE=managed
    if pid="$(prom_pid)"; then
        PROM_PORT="$(tr '\0' '\n' < "/proc/$pid/cmdline" | sed -n 's/^--web.listen-address=.*://p')"
        PROM_URL="http://127.0.0.1:$PROM_PORT"
        log "prometheus: already running (pid $pid) on $PROM_URL"
        return 0
    fi
    command -v prometheus >/dev/null || die "prometheus not installed: run scripts/infra.sh install"
    port_open "$PROM_PORT" && die "port $PROM_PORT is already in use (set PROM_PORT=..., or PROMETHEUS_URL=... to use that server)"
    prom_write_config
    log "prometheus: starting on 127.0.0.1:$PROM_PORT (scrape every $PROM_SCRAPE_INTERVAL)"
    echo "===== $(date -u +%FT%TZ) infra.sh up =====" >> "$logf"
    setsid nohup prometheus --config.file="$RUN/prometheus/prometheus.yml" \
        --storage.tsdb.path="$RUN/prometheus/data" --storage.tsdb.retention.time="$PROM_RETENTION" \
        --web.listen-address="127.0.0.1:$PROM_PORT" \
        >> "$logf" 2>&1 < /dev/null 8>&- &
    echo $! > "$PIDS/prometheus.pid"
    PROM_STARTED_PID=$!
    PROM_URL="http://127.0.0.1:$PROM_PORT"
}

prom_wait() {
    [[ "$PROM_MODE" = managed && -n "${PROM_STARTED_PID-}" ]] || return 0
    local logf="$LOGS/prometheus.log" pid="$PROM_STARTED_PID" deadline=$((SECONDS + TIMEOUT))
    until curl -sf -o /dev/null --max-time 2 "$PROM_URL/-/ready"; do
        kill -0 "$pid" 2>/dev/null || fail_start prometheus "$logf" "process $pid exited"
        (( SECONDS < deadline )) || fail_start prometheus "$logf" "not ready after ${TIMEOUT}s"
        sleep 0.2
    done
    log "prometheus: ready on $PROM_URL"
}

prom_down() {
    local pid
    if pid="$(prom_pid)"; then
        log "prometheus: stopping (pid $pid)"
        stop_pid prometheus "$pid" 15
    fi
    rm -f "$PIDS/prometheus.pid"
}

# ---------------------------------------------------------------- jaeger

tracing_on() { [[ "${ROOMLOG_TRACING-}" =~ ^(1|true|yes|on)$ ]]; }

jaeger_pid() { pid_of jaeger "$JAEGER_BIN --config $RUN/jaeger/config.yaml"; }

jaeger_write_config() {  # only what a dev platform needs: OTLP/HTTP in, memory store, query API
    mkdir -p "$RUN/jaeger"
    cat > "$RUN/jaeger/config.yaml" <<EOF
# generated by scripts/infra.sh
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:$JAEGER_HEALTH_PORT
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:$JAEGER_UI_PORT
    grpc:
      endpoint: 127.0.0.1:$((JAEGER_UI_PORT - 1))
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 50000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$JAEGER_OTLP_PORT
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
}

jaeger_up() {  # starts Jaeger and waits until its query API answers
    local logf="$LOGS/jaeger.log" pid deadline
    mkdir -p "$PIDS" "$LOGS"
    if pid="$(jaeger_pid)"; then
        log "jaeger: already running (pid $pid)"
        return 0
    fi
    [[ -x "$JAEGER_BIN" ]] || die "jaeger not installed: run scripts/infra.sh install"
    port_open "$JAEGER_OTLP_PORT" && die "port $JAEGER_OTLP_PORT is already in use (set JAEGER_OTLP_PORT=...)"
    port_open "$JAEGER_UI_PORT" && die "port $JAEGER_UI_PORT is already in use (set JAEGER_UI_PORT=...)"
    jaeger_write_config
    log "jaeger: starting (OTLP/HTTP 127.0.0.1:$JAEGER_OTLP_PORT, query 127.0.0.1:$JAEGER_UI_PORT)"
    echo "===== $(date -u +%FT%TZ) infra.sh up =====" >> "$logf"
    setsid nohup "$JAEGER_BIN" --config "$RUN/jaeger/config.yaml" >> "$logf" 2>&1 < /dev/null 8>&- &
    pid=$!
    echo "$pid" > "$PIDS/jaeger.pid"
    deadline=$((SECONDS + TIMEOUT))
    until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$JAEGER_UI_PORT/api/services" \
        && port_open "$JAEGER_OTLP_PORT"; do
        kill -0 "$pid" 2>/dev/null || fail_start jaeger "$logf" "process $pid exited"
        (( SECONDS < deadline )) || fail_start jaeger "$logf" "not ready after ${TIMEOUT}s"
        sleep 0.2
    done
    log "jaeger: ready (query API http://127.0.0.1:$JAEGER_UI_PORT/api/traces)"
}

jaeger_down() {
    local pid
    if pid="$(jaeger_pid)"; then
        log "jaeger: stopping (pid $pid)"
        stop_pid jaeger "$pid" 10
    fi
    rm -f "$PIDS/jaeger.pid"
}

cmd_jaeger() {
    case "${1-}" in
        up) mkdir -p "$RUN"
            jaeger_up >&2
            echo "JAEGER_URL=http://127.0.0.1:$JAEGER_UI_PORT"
            echo "ROOMLOG_TRACING_ENDPOINT=http://127.0.0.1:$JAEGER_OTLP_PORT/v1/traces" ;;
        down) jaeger_down ;;
        *) die "usage: infra.sh jaeger up|down" ;;
    esac
}

# ---------------------------------------------------------------- commands

lock_run() {  # serialize up/down on one RUN dir
    exec 8> "$RUN/.lock"
    flock -w 120 8 || die "another infra.sh up/down holds $RUN/.lock"
}

cmd_up() {
    local t0=$SECONDS
    mkdir -p "$RUN" "$PIDS" "$LOGS"
    lock_run
    # Kafka and MinIO start in the background; Postgres starts while they boot.
    kafka_up
    minio_up
    turn_up
    prom_up
    pg_up
    minio_wait
    turn_wait
    prom_wait
    if tracing_on; then jaeger_up; fi
    kafka_wait
    {
        echo "KAFKA_PORT=$KAFKA_PORT"
        echo "KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT"
        echo "PG_PORT=$PG_PORT"
        echo "MINIO_PORT=$MINIO_PORT"
        echo "MINIO_CONSOLE_PORT=$MINIO_CONSOLE_PORT"
        echo "KAFKA_MODE=$KAFKA_MODE"
        echo "PG_MODE=$PG_MODE"
        echo "MINIO_MODE=$MINIO_MODE"
        echo "TURN_PORT=$TURN_PORT"
        echo "TURN_LISTEN_IP=$TURN_LISTEN_IP"
        echo "TURN_MODE=$TURN_MODE"
        echo "PROM_PORT=$PROM_PORT"
        echo "PROM_MODE=$PROM_MODE"
    } > "$STATE_FILE"
    {
        echo "KAFKA_BOOTSTRAP=$KAFKA_URL"
        echo "DATABASE_URL=$PG_URL"
        echo "MINIO_ENDPOINT=$MINIO_URL"
        echo "MINIO_ACCESS_KEY=$MINIO_USER"
        echo "MINIO_SECRET_KEY=$MINIO_PASS"
        echo "TURN_URL=$TURN_ADDR"
        echo "TURN_SECRET=$TURN_SECRET"
        echo "PROMETHEUS_URL=$PROM_URL"
        echo "PROMETHEUS_TARGETS_DIR=$RUN/prometheus/targets"
        if tracing_on; then
            echo "ROOMLOG_TRACING=1"
            echo "ROOMLOG_TRACING_ENDPOINT=http://127.0.0.1:$JAEGER_OTLP_PORT/v1/traces"
            echo "JAEGER_URL=http://127.0.0.1:$JAEGER_UI_PORT"
        fi
    } > "$RUN/infra.env.tmp"
    chmod 600 "$RUN/infra.env.tmp"
    mv "$RUN/infra.env.tmp" "$RUN/infra.env"
    echo
    printf '  %-9s %-9s %s\n' COMPONENT MODE ADDRESS
    printf '  %-9s %-9s %s\n' kafka "$KAFKA_MODE" "$KAFKA_URL$([[ $KAFKA_MODE = managed ]] && echo "  (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT)")"
    printf '  %-9s %-9s %s\n' postgres "$PG_MODE" "$PG_URL"
    printf '  %-9s %-9s %s\n' minio "$MINIO_MODE" "$MINIO_URL$([[ $MINIO_MODE = managed ]] && echo "  (console 127.0.0.1:$MINIO_CONSOLE_PORT)")"
    printf '  %-9s %-9s %s\n' coturn "$TURN_MODE" "$TURN_ADDR$([[ $TURN_MODE = managed ]] && echo "  (relay $TURN_RELAY_IP:$TURN_MIN_PORT-$TURN_MAX_PORT)")"
    printf '  %-9s %-9s %s\n' prometheus "$PROM_MODE" "$PROM_URL  (targets: $RUN/prometheus/targets/*.json)"
    echo
    log "up in $((SECONDS - t0))s; env: $RUN/infra.env (load with: set -a; . $RUN/infra.env; set +a)"
}

cmd_down() {
    local wipe=0
    case "${1-}" in
        "") ;;
        --wipe) wipe=1 ;;
        *) die "down: unknown option '$1' (only --wipe)" ;;
    esac
    [[ -d "$RUN" ]] || { log "nothing to stop ($RUN does not exist)"; return 0; }
    lock_run
    # stop in parallel-ish order: clients of nothing, so any order works
    minio_down
    turn_down
    prom_down
    jaeger_down
    kafka_down
    pg_down
    rm -f "$RUN/infra.env"
    if [[ $wipe = 1 ]]; then
        local d
        d="$(pg_dir)"
        log "wiping data: $RUN/kafka $RUN/minio $d"
        rm -rf "$RUN/kafka" "$RUN/minio" "$RUN/coturn" "$RUN/prometheus" "$RUN/jaeger" "$STATE_FILE"
        [[ -L "$RUN/pg" ]] && rm -f "$RUN/pg"
        [[ -L "$LOGS/postgres.log" ]] && rm -f "$LOGS/postgres.log"
        rm -rf "$d"
    fi
    log "down"
}

cmd_status() {
    local pid mode
    mode="$(sed -n 's/^KAFKA_MODE=//p' "$STATE_FILE" 2>/dev/null || true)"
    if [[ -n "${KAFKA_BOOTSTRAP-}" ]]; then
        printf '%-9s external  %s\n' kafka "$KAFKA_BOOTSTRAP"
    elif pid="$(kafka_pid)"; then
        printf '%-9s running   pid %-7s 127.0.0.1:%s %s\n' kafka "$pid" "$KAFKA_PORT" "$(port_open "$KAFKA_PORT" && echo listening || echo 'NOT reachable from this netns')"
    elif [[ "$mode" = external ]]; then
        printf '%-9s external  (see infra.env)\n' kafka
    else
        printf '%-9s stopped\n' kafka
    fi
    mode="$(sed -n 's/^PG_MODE=//p' "$STATE_FILE" 2>/dev/null || true)"
    if [[ -n "${DATABASE_URL-}" ]]; then
        printf '%-9s external  %s\n' postgres "$DATABASE_URL"
    elif pid="$(pg_running)"; then
        printf '%-9s running   pid %-7s 127.0.0.1:%s %s (data %s)\n' postgres "$pid" "$PG_PORT" "$(pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres && echo ready || echo 'NOT ready/reachable')" "$(pg_dir)/data"
    elif [[ "$mode" = external ]]; then
        printf '%-9s external  (see infra.env)\n' postgres
    else
        printf '%-9s stopped\n' postgres
    fi
    mode="$(sed -n 's/^MINIO_MODE=//p' "$STATE_FILE" 2>/dev/null || true)"
    if [[ -n "${MINIO_ENDPOINT-}" ]]; then
        printf '%-9s external  %s\n' minio "$MINIO_ENDPOINT"
    elif pid="$(minio_pid)"; then
        printf '%-9s running   pid %-7s 127.0.0.1:%s %s\n' minio "$pid" "$MINIO_PORT" "$(curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$MINIO_PORT/minio/health/ready" && echo ready || echo 'NOT ready/reachable')"
    elif [[ "$mode" = external ]]; then
        printf '%-9s external  (see infra.env)\n' minio
    else
        printf '%-9s stopped\n' minio
    fi
    mode="$(sed -n 's/^TURN_MODE=//p' "$STATE_FILE" 2>/dev/null || true)"
    if [[ -n "${TURN_URL-}" ]]; then
        printf '%-9s external  %s\n' coturn "$TURN_URL"
    elif pid="$(turn_pid)"; then
        printf '%-9s running   pid %-7s %s:%s %s\n' coturn "$pid" "$TURN_LISTEN_IP" "$TURN_PORT" "$(turn_port_open "$TURN_LISTEN_IP" "$TURN_PORT" && echo listening || echo 'NOT reachable from this netns')"
    elif [[ "$mode" = external ]]; then
        printf '%-9s external  (see infra.env)\n' coturn
    else
        printf '%-9s stopped\n' coturn
    fi
    if [[ -n "${PROMETHEUS_URL-}" ]]; then
        printf '%-9s external  %s\n' prometheus "$PROMETHEUS_URL"
    elif pid="$(prom_pid)"; then
        printf '%-9s running   pid %-7s 127.0.0.1:%s %s\n' prometheus "$pid" "$PROM_PORT" "$(curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$PROM_PORT/-/ready" && echo ready || echo 'NOT ready/reachable')"
    else
        printf '%-9s stopped\n' prometheus
    fi
    if pid="$(jaeger_pid)"; then
        printf '%-9s running   pid %-7s 127.0.0.1:%s (OTLP 127.0.0.1:%s)\n' jaeger "$pid" "$JAEGER_UI_PORT" "$JAEGER_OTLP_PORT"
    else
        printf '%-9s stopped\n' jaeger
    fi
    return 0
}

cmd_env() {
    [[ -f "$RUN/infra.env" ]] || die "$RUN/infra.env not found: run scripts/infra.sh up"
    cat "$RUN/infra.env"
}

main() {
    local cmd="${1-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        install) cmd_install "$@" ;;
        up)      load_ports; cmd_up "$@" ;;
        down)    load_ports --recorded; cmd_down "$@" ;;
        status)  load_ports --recorded; cmd_status "$@" ;;
        jaeger)  load_ports; cmd_jaeger "$@" ;;
        env)     cmd_env "$@" ;;
        -h|--help|help) usage ;;
        "") usage >&2; exit 2 ;;
        *) usage >&2; die "unknown command '$cmd'" ;;
    esac
}

main "$@"
