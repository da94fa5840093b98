#!/usr/bin/env bash
# `make up` / `make down`: run the whole roomlog platform on this machine.
#   scripts/up.sh run    infra + migrations + topics + api + streams + ROOMLOG_MEDIA_NODES
#                        media nodes (1) + one recorder + Prometheus (with the alert rules);
#                        stays in the foreground, Ctrl-C stops everything
#   scripts/up.sh down   stop everything `run` started (from another terminal)
#   scripts/up.sh cert   write a self-signed certificate into $ROOMLOG_RUN_DIR/tls, print its paths
# Ports: ROOMLOG_API_PORT (8080), ROOMLOG_STREAMS_METRICS_PORT (9101),
# ROOMLOG_NODE_METRICS_PORT (9102), ROOMLOG_RECORDER_METRICS_PORT (9103, also its health
# check), plus the infra ports of scripts/infra.sh. The recorder spools closed segments in
# ROOMLOG_RECORDER_SPOOL_DIR ($ROOMLOG_RUN_DIR/recorder-spool).
# Media nodes: ROOMLOG_MEDIA_NODES processes (one per core), node-1..node-N (a single node
# takes ROOMLOG_NODE_NODE_ID if set), node i's metrics on ROOMLOG_NODE_METRICS_PORT + 10*(i-1).
# Prometheus (scripts/infra.sh, PROMETHEUS_URL in infra.env) scrapes the api (plain HTTP
# only), the streams worker and the recorder (listed in $PROMETHEUS_TARGETS_DIR/up.json) and
# every media node (listed in $PROMETHEUS_TARGETS_DIR/media-nodes.json): file_sd.
# HTTPS: ROOMLOG_API_TLS_CERT + ROOMLOG_API_TLS_KEY (PEM files), or ROOMLOG_API_TLS=self-signed
# (certificate for localhost, 127.0.0.1 and the names in ROOMLOG_API_TLS_HOSTS, comma-separated).
# TURN: the api hands out the coturn of scripts/infra.sh (TURN_URL, TURN_SECRET in infra.env)
# unless ROOMLOG_API_TURN_URLS / ROOMLOG_API_TURN_SECRET / ROOMLOG_API_STUN_URLS are set.
# Tracing: ROOMLOG_TRACING=1 make up also starts Jaeger (scripts/infra.sh) and the services
# export their spans to it (ROOMLOG_TRACING, ROOMLOG_TRACING_ENDPOINT in infra.env).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export PYTHONPATH="$repo"
export ROOMLOG_RUN_DIR=${ROOMLOG_RUN_DIR:-$repo/.run}
run=$ROOMLOG_RUN_DIR
mkdir -p "$run/logs" "$run/pids"
export ROOMLOG_API_PORT=${ROOMLOG_API_PORT:-8080}
export ROOMLOG_STREAMS_METRICS_PORT=${ROOMLOG_STREAMS_METRICS_PORT:-9101}
export ROOMLOG_NODE_METRICS_PORT=${ROOMLOG_NODE_METRICS_PORT:-9102}
ROOMLOG_MEDIA_NODES=${ROOMLOG_MEDIA_NODES:-1}
[[ "$ROOMLOG_MEDIA_NODES" =~ ^[1-9][0-9]*$ ]] || { echo "ROOMLOG_MEDIA_NODES is a number >= 1 (got '$ROOMLOG_MEDIA_NODES')" >&2; exit 2; }
NODES=()  # "pid-name node-id metrics-port" per media node
for ((i = 1; i <= ROOMLOG_MEDIA_NODES; i++)); do
  node_id=node-$i
  ((ROOMLOG_MEDIA_NODES == 1)) && node_id=${ROOMLOG_NODE_NODE_ID:-node-1}
  NODES+=("media-node-$i $node_id $((ROOMLOG_NODE_METRICS_PORT + 10 * (i - 1)))")
done
export ROOMLOG_RECORDER_METRICS_PORT=${ROOMLOG_RECORDER_METRICS_PORT:-9103}
export ROOMLOG_RECORDER_SPOOL_DIR=${ROOMLOG_RECORDER_SPOOL_DIR:-$run/recorder-spool}
# development mode: the browser pages sign in with POST /v1/dev/login {name}
export ROOMLOG_API_DEV_MODE=${ROOMLOG_API_DEV_MODE:-true}
SERVICES=(api streams recorder)
for node in "${NODES[@]}"; do SERVICES+=("${node%% *}"); done

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

stop_services() {
  local nodes=() f
  # every node pid file, whatever ROOMLOG_MEDIA_NODES the `make down` terminal has
  for f in "$run"/pids/media-node-*.pid; do [[ -e "$f" ]] && nodes+=("$(basename "$f" .pid)"); done
  for name in recorder "${nodes[@]}" api streams; do
    local pidfile="$run/pids/$name.pid"
    [[ -f "$pidfile" ]] || continue
    local pid; pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

write_targets() {  # the services' metrics ports, for the Prometheus of scripts/infra.sh (file_sd)
  [[ -n "${PROMETHEUS_TARGETS_DIR:-}" ]] || return 0
  mkdir -p "$PROMETHEUS_TARGETS_DIR"
  local api=""
  [[ "$SCHEME" == http ]] && api="{\"targets\": [\"127.0.0.1:$ROOMLOG_API_PORT\"], \"labels\": {\"service\": \"api\", \"name\": \"api\"}},"
  cat >"$PROMETHEUS_TARGETS_DIR/up.tmp" <<JSON
[$api
 {"targets": ["127.0.0.1:$ROOMLOG_STREAMS_METRICS_PORT"], "labels": {"service": "streams", "name": "streams"}},
 {"targets": ["127.0.0.1:$ROOMLOG_RECORDER_METRICS_PORT"], "labels": {"service": "recorder", "name": "recorder-1"}}]
JSON
  mv "$PROMETHEUS_TARGETS_DIR/up.tmp" "$PROMETHEUS_TARGETS_DIR/up.json"
  local node pid_name node_id port sep="" entries=""
  for node in "${NODES[@]}"; do
    read -r pid_name node_id port <<<"$node"
    entries+="$sep {\"targets\": [\"127.0.0.1:$port\"], \"labels\": {\"service\": \"media_node\", \"name\": \"$node_id\"}}"
    sep=$',\n'
  done
  printf '[%s]\n' "$entries" >"$PROMETHEUS_TARGETS_DIR/media-nodes.tmp"
  mv "$PROMETHEUS_TARGETS_DIR/media-nodes.tmp" "$PROMETHEUS_TARGETS_DIR/media-nodes.json"
}

down() {
  echo "==> stopping roomlog services"
  rm -f "${PROMETHEUS_TARGETS_DIR:-$run/prometheus/targets}/up.json" \
    "${PROMETHEUS_TARGETS_DIR:-$run/prometheus/targets}/media-nodes.json"
  stop_services
  scripts/infra.sh down
  rm -f "$run/up.pid"
}

start() {  # name, command...
  local name=$1; shift
  nohup "$@" >"$run/logs/$name.log" 2>&1 &
  echo $! >"$run/pids/$name.pid"
}

self_signed_cert() {  # writes $run/tls/{cert,key}.pem (reused while valid for the same names)
  local dir=$run/tls names="DNS:localhost,IP:127.0.0.1" h
  IFS=',' read -ra hosts <<<"${ROOMLOG_API_TLS_HOSTS:-}"
  for h in "${hosts[@]}"; do
    h=${h// /}; [[ -n "$h" ]] || continue
    if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then names+=",IP:$h"; else names+=",DNS:$h"; fi
  done
  mkdir -p "$dir"
  if [[ -f "$dir/cert.pem" && -f "$dir/key.pem" && "$(cat "$dir/names" 2>/dev/null)" == "$names" ]] \
      && openssl x509 -checkend 86400 -noout -in "$dir/cert.pem" >/dev/null 2>&1; then
    return 0
  fi
  command -v openssl >/dev/null || { echo "openssl not found: run make install" >&2; return 1; }
  (umask 077; openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=roomlog-dev" \
      -addext "subjectAltName=$names" -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null) \
    || { echo "openssl could not create a certificate" >&2; return 1; }
  echo "$names" >"$dir/names"
  echo "==> self-signed certificate for $names: $dir/cert.pem" >&2
}

setup_tls() {  # sets SCHEME and exports ROOMLOG_API_TLS_CERT/KEY for the api
  case "${ROOMLOG_API_TLS:-}" in
    ""|off) ;;
    self-signed)
      self_signed_cert
      export ROOMLOG_API_TLS_CERT=$run/tls/cert.pem ROOMLOG_API_TLS_KEY=$run/tls/key.pem ;;
    *) echo "ROOMLOG_API_TLS is 'self-signed' or unset (got '$ROOMLOG_API_TLS')" >&2; return 2 ;;
  esac
  SCHEME=http
  if [[ -n "${ROOMLOG_API_TLS_CERT:-}${ROOMLOG_API_TLS_KEY:-}" ]]; then
    for f in "${ROOMLOG_API_TLS_CERT:-}" "${ROOMLOG_API_TLS_KEY:-}"; do
      [[ -n "$f" && -r "$f" ]] || { echo "set ROOMLOG_API_TLS_CERT and ROOMLOG_API_TLS_KEY to readable PEM files ('$f')" >&2; return 2; }
    done
    SCHEME=https
  fi
}

setup_turn() {  # the coturn from infra.env, unless the api's own settings say otherwise
  [[ -n "${TURN_URL:-}" ]] || return 0
  export ROOMLOG_API_TURN_URLS=${ROOMLOG_API_TURN_URLS:-$TURN_URL}
  export ROOMLOG_API_TURN_SECRET=${ROOMLOG_API_TURN_SECRET:-$TURN_SECRET}
  export ROOMLOG_API_STUN_URLS=${ROOMLOG_API_STUN_URLS:-${TURN_URL/#turn:/stun:}}
}

wait_http() {  # url, seconds, name
  local deadline=$((SECONDS + $2))
  until curl -sfk -o /dev/null "$1"; do
    if ((SECONDS > deadline)); then
      echo "$3 did not answer $1 within $2 s; see $run/logs/$3.log" >&2
      tail -20 "$run/logs/$3.log" >&2 || true
      return 1
    fi
    sleep 0.3
  done
}

run_platform() {
  setup_tls
  scripts/infra.sh up
  set -a; . "$run/infra.env"; set +a
  setup_turn
  echo "==> migrations";  .venv/bin/python -m db.migrate upgrade head
  echo "==> topics";      .venv/bin/python -m producers.admin create-topics
  echo $$ >"$run/up.pid"
  trap 'echo; down; exit 0' INT TERM
  echo "==> starting services (logs in $run/logs)"
  start streams .venv/bin/python -m streams
  start api .venv/bin/python -m api
  local node pid_name node_id port
  for node in "${NODES[@]}"; do
    read -r pid_name node_id port <<<"$node"
    ROOMLOG_NODE_METRICS_PORT=$port start "$pid_name" .venv/bin/python -m media_node --node-id "$node_id"
  done
  # the recorder joins rooms through the api (a self-signed certificate is trusted for it)
  ROOMLOG_RECORDER_API_URL=${ROOMLOG_RECORDER_API_URL:-$SCHEME://127.0.0.1:$ROOMLOG_API_PORT} \
    SSL_CERT_FILE=${ROOMLOG_API_TLS_CERT:-${SSL_CERT_FILE:-}} \
    start recorder .venv/bin/python -m recorder --recorder-id "${ROOMLOG_RECORDER_RECORDER_ID:-recorder-1}"
  write_targets
  wait_http "$SCHEME://127.0.0.1:$ROOMLOG_API_PORT/readyz" "${UP_TIMEOUT:-180}" api
  wait_http "http://127.0.0.1:$ROOMLOG_RECORDER_METRICS_PORT/metrics" 60 recorder
  cat <<MSG

roomlog is up:
  api          $SCHEME://127.0.0.1:$ROOMLOG_API_PORT   (/healthz /readyz /metrics /docs)
  web client   $SCHEME://127.0.0.1:$ROOMLOG_API_PORT/web/   (development sign-in)
  streams      worker; metrics http://127.0.0.1:$ROOMLOG_STREAMS_METRICS_PORT/metrics
$(for node in "${NODES[@]}"; do read -r _ node_id port <<<"$node"; echo "  media node   $node_id; metrics http://127.0.0.1:$port/metrics"; done)
  recorder     ${ROOMLOG_RECORDER_RECORDER_ID:-recorder-1}; metrics http://127.0.0.1:$ROOMLOG_RECORDER_METRICS_PORT/metrics
  kafka        $KAFKA_BOOTSTRAP
  postgres     $DATABASE_URL
  minio        http://$MINIO_ENDPOINT
  prometheus   ${PROMETHEUS_URL:-(none)}   (scrapes the services above)
  jaeger       ${JAEGER_URL:-(off: ROOMLOG_TRACING=1 make up traces every service)}
  turn         ${ROOMLOG_API_TURN_URLS:-(none)}
Ctrl-C or 'make down' stops everything.
MSG
  while true; do
    for name in "${SERVICES[@]}"; do
      pid=$(cat "$run/pids/$name.pid" 2>/dev/null || echo)
      if [[ -z "$pid" ]]; then down; exit 0; fi  # `make down` from elsewhere
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "$name exited; see $run/logs/$name.log" >&2
        tail -20 "$run/logs/$name.log" >&2 || true
        down; exit 1
      fi
    done
    sleep 1 & wait $!
  done
}

case "${1:-}" in
  run) run_platform ;;
  cert) self_signed_cert && echo "$run/tls/cert.pem $run/tls/key.pem" ;;
  down)
    if [[ -f "$run/up.pid" ]] && kill -0 "$(cat "$run/up.pid")" 2>/dev/null; then
      kill -TERM "$(cat "$run/up.pid")"
      for _ in $(seq 1 150); do kill -0 "$(cat "$run/up.pid" 2>/dev/null || echo 0)" 2>/dev/null || break; sleep 0.2; done
    fi
    down ;;
  -h|--help|"") usage ;;
  *) usage; exit 2 ;;
esac
