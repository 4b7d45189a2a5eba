#!/usr/bin/env bash
# User-space instructions per proxied request, for weir and for its peers doing the same job.
#
# The proxy runs under valgrind's callgrind with one worker (weir `--threads 1`, nginx with no
# master process, HAProxy `nbthread 1`), splitting 90/10 over the two nginx upstreams of lib.sh;
# after 2,000 warm-up requests the counters are zeroed, h2load sends REQUESTS keep-alive HTTP/1.1
# requests over 50 connections, and the count is divided by REQUESTS. Unlike req/s or CPU time it
# does not move with steal time or other tenants (repeat runs agree to 0.1%), but it does not see
# cache misses or the kernel, and it counts a `rep movsb` copy as one instruction: judge
# memory-bound changes with ab.sh.
#
# H2C=1 sends the same requests as h2c instead (h2load -m10, 10 streams in flight per connection,
# as compare.sh does), to the same single-worker proxies with HTTP/2 enabled on their listener.
#
# WEIR_THREADS=N runs weir with `--threads N` (callgrind runs its threads one at a time).
#
# Usage: [H2C=1] [WEIR_EXTRA=YAML] [WEIR_THREADS=N] [CALLGRIND_KEEP=PREFIX] loadtest/instructions.sh [PEER=weir] [REQUESTS=20000]
#   PEER is `weir` (this checkout's release build), the path of a weir binary, `nginx`,
#   `haproxy`, or `all` (weir, nginx and HAProxy, one after the other, with a summary).
source "$(dirname "$0")/lib.sh"
PEER=${1:-weir}
REQUESTS=${2:-20000}
need valgrind valgrind
need h2load nghttp2-client
need haproxy haproxy

PORT=18380
URL=http://127.0.0.1:$PORT/
# nginx 1.22's `listen ... http2` on a plain port speaks HTTP/2 only: the readiness probe asks
# with prior knowledge too.
if [ "${H2C:-}" = 1 ]; then
  LOAD=(-m10); NGINX_LISTEN=" http2"; PROBE=(--http2-prior-knowledge)
else
  LOAD=(--h1); NGINX_LISTEN=""; PROBE=()
fi

start_upstreams
RESULTS="$WORK/instructions.tsv"
: >"$RESULTS"

# Runs COMMAND under callgrind, loads it, prints and records LABEL's instructions per request.
measure() {
  local label=$1; shift
  local out="$WORK/callgrind.$label"
  valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$@" 2>"$WORK/valgrind.$label.log" &
  local pid=$!
  for _ in $(seq 300); do curl -sf "${PROBE[@]}" -o /dev/null "$URL" && break; sleep 0.2; done
  h2load "${LOAD[@]}" -n 2000 -c 50 "$URL" >/dev/null
  callgrind_control --zero "$pid" >/dev/null 2>&1
  h2load "${LOAD[@]}" -n "$REQUESTS" -c 50 "$URL" | grep -E '^requests:' >&2
  callgrind_control --dump "$pid" >/dev/null 2>&1
  sleep 1
  local total
  total=$(callgrind_annotate "$(ls -t "$out".* | head -1)" 2>/dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  # CALLGRIND_KEEP=PREFIX keeps the profile as PREFIX.LABEL, for callgrind_annotate.
  if [ -n "${CALLGRIND_KEEP:-}" ]; then cp "$(ls -t "$out".* | head -1)" "$CALLGRIND_KEEP.$label"; fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "$label: $total instructions for $REQUESTS requests, $(( total / REQUESTS )) per request"
  echo -e "$label\t$(( total / REQUESTS ))" >>"$RESULTS"
}

measure_weir() {
  local bin=$1
  split_config "$WORK/weir.yaml" "127.0.0.1:$PORT" 127.0.0.1:18381
  # WEIR_EXTRA: top-level YAML appended to weir's config (a `tracing:` or `access_log:` section,
  # to measure what it costs per request).
  if [ -n "${WEIR_EXTRA:-}" ]; then printf '%s\n' "$WEIR_EXTRA" >>"$WORK/weir.yaml"; fi
  RUST_LOG=warn measure weir "$bin" run --config "$WORK/weir.yaml" --threads "${WEIR_THREADS:-1}"
}

# nginx as in lib.sh's start_nginx_proxy, but in the foreground with no master process, so the
# one process under callgrind is the one doing the work.
measure_nginx() {
  mkdir -p "$WORK/proxy"
  cat >"$WORK/proxy/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1;
pid $WORK/proxy/nginx.pid; error_log $WORK/proxy/error.log;
events { worker_connections 8192; }
http { access_log off;
  upstream stable { server 127.0.0.1:18001; keepalive 64; }
  upstream canary { server 127.0.0.1:18002; keepalive 64; }
  split_clients "\${request_id}" \$pool { 90% stable; * canary; }
  server { listen 127.0.0.1:$PORT$NGINX_LISTEN; keepalive_requests 1000000;
    location / { proxy_pass http://\$pool; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGINX
  measure nginx nginx -c "$WORK/proxy/nginx.conf" -p "$WORK/proxy"
}

# HAProxy as in lib.sh's start_haproxy, in the foreground (-db).
measure_haproxy() {
  cat >"$WORK/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$PORT
  default_backend be
backend be
  balance random
  http-reuse always
  server stable 127.0.0.1:18001 weight 90
  server canary 127.0.0.1:18002 weight 10
HAP
  measure haproxy haproxy -f "$WORK/haproxy.cfg" -db
}

weir_bin() {
  cargo build --release -q
  echo ./target/release/weir
}

case "$PEER" in
  weir) measure_weir "$(weir_bin)" ;;
  nginx) measure_nginx ;;
  haproxy) measure_haproxy ;;
  all)
    measure_weir "$(weir_bin)"
    measure_nginx
    measure_haproxy
    awk -F'\t' '{ n[$1]=$2 } END {
      printf "\nuser-space instructions per request: weir %d, nginx %d, haproxy %d; weir / nginx %.2f, weir / haproxy %.2f\n",
        n["weir"], n["nginx"], n["haproxy"], n["weir"] / n["nginx"], n["weir"] / n["haproxy"] }' "$RESULTS"
    ;;
  *) measure_weir "$PEER" ;;
esac
