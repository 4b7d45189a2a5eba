# Shared set-up for the load scripts: two nginx upstreams answering "stable" and "canary", and
# weir in front with a 90/10 split. Loopback only. Source it; call `setup_split THREADS`;
# everything started is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx
need curl curl

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM

WEIR=127.0.0.1:18080
WEIR_ADMIN=127.0.0.1:18081

wait_for() { for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

# The two upstreams: one nginx worker answering "stable" on 18001 and "canary" on 18002, pinned to
# CPUS (default: any).
start_upstreams() {
  local cpus=${1:-}
  cat >"$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 8192; }
http {
  access_log off;
  server { listen 127.0.0.1:18001; keepalive_requests 1000000; location / { return 200 "stable"; } }
  server { listen 127.0.0.1:18002; keepalive_requests 1000000; location / { return 200 "canary"; } }
}
NGINX
  pin "$cpus" nginx -c "$WORK/nginx.conf" -p "$WORK"
}

# Runs a command pinned to CPUS when given.
pin() {
  local cpus=$1; shift
  if [ -n "$cpus" ]; then taskset -c "$cpus" "$@"; else "$@"; fi
}

# weir's config for the 90/10 split over the two upstreams, written to FILE: listener on ADDRESS,
# admin on ADMIN; EXTRA is more YAML list items under `listeners:` (the TLS listener of tls.sh).
split_config() {
  local file=$1 address=$2 admin=$3 extra=${4:-}
  cat >"$file" <<YAML
listeners:
  - { name: main, address: $address }
$extra
admin: { address: $admin }
upstreams:
  - { name: stable, endpoints: [127.0.0.1:18001] }
  - { name: canary, endpoints: [127.0.0.1:18002] }
routes:
  - name: app
    backends: [{ upstream: stable, weight: 90 }, { upstream: canary, weight: 10 }]
YAML
}

# weir with THREADS workers on ADDRESS (admin ADMIN), splitting 90/10, pinned to CPUS. EXTRA is
# as for split_config. WEIR_BIN, when set, is the binary to run instead of this checkout's
# release build (ab.sh compares two builds).
start_weir() {
  local threads=${1:-1} cpus=${2:-} address=${3:-$WEIR} admin=${4:-$WEIR_ADMIN} extra=${5:-}
  local config="$WORK/weir-$threads-${address##*:}.yaml"
  split_config "$config" "$address" "$admin" "$extra"
  local bin=${WEIR_BIN:-./target/release/weir}
  [ -n "${WEIR_BIN:-}" ] || cargo build --release -q
  # taskset execs weir, so $! is weir itself (a shell function here would put a subshell there).
  RUST_LOG=warn taskset -c "${cpus:-0-$(( $(nproc) - 1 ))}" "$bin" run \
    --config "$config" --threads "$threads" &
  PIDS+=($!)
  wait_for "http://$address/"
}

setup_split() {
  start_upstreams
  start_weir "${1:-1}"
}

# A self-signed certificate for localhost / 127.0.0.1, in $WORK.
make_cert() {
  openssl req -x509 -nodes -days 2 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
}

# nginx as a peer doing weir's job: a 90/10 split over the same two upstreams with keep-alive,
# one worker, access log off. Plain HTTP on $1 (HTTP/1.1), TLS on $2 (h2 and http/1.1) if given,
# h2c (prior knowledge) on $4 if given; pinned to CPUS ($3).
start_nginx_proxy() {
  local plain=$1 tls=${2:-} cpus=${3:-} h2c=${4:-}
  mkdir -p "$WORK/proxy"
  {
    echo "worker_processes 1; pid $WORK/proxy/nginx.pid; error_log $WORK/proxy/error.log;"
    echo "events { worker_connections 8192; }"
    echo "http { access_log off;"
    echo "  upstream stable { server 127.0.0.1:18001; keepalive 64; }"
    echo "  upstream canary { server 127.0.0.1:18002; keepalive 64; }"
    echo "  split_clients \"\${request_id}\" \$pool { 90% stable; * canary; }"
    echo "  server { listen 127.0.0.1:$plain; keepalive_requests 1000000;"
    echo "    location / { proxy_pass http://\$pool; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
    if [ -n "$h2c" ]; then
      echo "  server { listen 127.0.0.1:$h2c http2; keepalive_requests 1000000;"
      echo "    location / { proxy_pass http://\$pool; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
    fi
    if [ -n "$tls" ]; then
      echo "  server { listen 127.0.0.1:$tls ssl http2; keepalive_requests 1000000;"
      echo "    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;"
      echo "    location / { proxy_pass http://\$pool; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
    fi
    echo "}"
  } >"$WORK/proxy/nginx.conf"
  pin "$cpus" nginx -c "$WORK/proxy/nginx.conf" -p "$WORK/proxy"
  sleep 0.2
  PIDS+=("$(cat "$WORK/proxy/nginx.pid")")
}

# HAProxy doing the same job: one thread, weighted random 90/10, keep-alive to the upstreams,
# no logging; HTTP/1.1 and h2c (preface detection) on port $1, pinned to CPUS ($2).
start_haproxy() {
  local port=$1 cpus=${2:-}
  cat >"$WORK/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 4000
  pidfile $WORK/haproxy.pid
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$port
  default_backend be
backend be
  balance random
  http-reuse always
  server stable 127.0.0.1:18001 weight 90
  server canary 127.0.0.1:18002 weight 10
HAP
  pin "$cpus" haproxy -f "$WORK/haproxy.cfg" -D
  sleep 0.2
  PIDS+=("$(cat "$WORK/haproxy.pid")")
}

# The sum of what awk program $3 prints for /proc/PID/$2 over process $1 and its children
# (nginx's worker).
proc_sum() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
    total=$(( total + $(awk "$3" "/proc/$p/$2" 2>/dev/null || echo 0) ))
  done
  echo "$total"
}

# CPU time (user + system, in clock ticks) of process $1 and its children.
cpu_ticks() { proc_sum "$1" stat '{ print $14 + $15 }'; }

# Resident memory (KiB) of process $1 and its children.
rss_kib() { proc_sum "$1" status '/^VmRSS/ { print $2 }'; }

# wrk summary on one line: LABEL req/s p50 p99.
wrk_line() {
  local label=$1; shift
  wrk "$@" --latency | awk -v n="$label" '
    /Requests\/sec/ { rps=$2 } /^ +50%/ { p50=$2 } /^ +99%/ { p99=$2 } /Non-2xx|Socket errors/ { err=err" "$0 }
    END { printf "%-34s %10s req/s  p50 %8s  p99 %8s%s\n", n, rps, p50, p99, err }'
}

# oha, the fixed-rate load generator (with latency correction, so p99 is not hidden by
# coordinated omission): its path, or empty when neither installed nor in /tmp/oha (`cargo
# install --root /tmp/oha oha`).
oha_bin() { command -v oha || ls /tmp/oha/bin/oha 2>/dev/null || true; }

# One fixed-rate run from CPU 0: `oha -q RATE` on URL for DURATION over CONNS connections, printed
# as a TSV row: rate, LABEL, RATE, p50 ms, p99 ms, success rate.
fixed_rate() {
  local label=$1 url=$2 rate=$3 duration=$4 conns=$5
  taskset -c 0 "$(oha_bin)" -z "$duration" -c "$conns" -q "$rate" --latency-correction --no-tui \
    --output-format json "$url" 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["latencyPercentiles"]; s=d["summary"]
print("rate\t%s\t%s\t%.3f\t%.3f\t%.4f" % (sys.argv[1], sys.argv[2], p["p50"]*1e3, p["p99"]*1e3, s["successRate"]))' "$label" "$rate"
}

# h2load summary on one line: LABEL req/s and failures.
h2load_line() {
  local label=$1; shift
  h2load "$@" 2>&1 | awk -v n="$label" '
    /^finished in/ { rps=$4 } /^requests:/ { failed=$10; errored=$12 }
    END { printf "%-34s %10s req/s  failed %s errored %s\n", n, rps, failed, errored }'
}
