#!/usr/bin/env bash
# User-space instructions per proxied request: weir (one worker) runs under valgrind's callgrind,
# splitting 90/10 over the two nginx upstreams; after 2,000 warm-up requests the counters are
# zeroed, h2load sends REQUESTS keep-alive HTTP/1.1 requests over 50 connections, and the count
# is divided by REQUESTS. Unlike req/s or CPU time it does not move with steal time or other
# tenants (repeat runs agree to 0.1%), but it does not see cache misses or the kernel, and it
# counts a `rep movsb` copy as one instruction: judge memory-bound changes with ab.sh.
# Usage: loadtest/instructions.sh [WEIR_BINARY=target/release/weir] [REQUESTS=20000]
source "$(dirname "$0")/lib.sh"
BIN=${1:-}
REQUESTS=${2:-20000}
need valgrind valgrind
need h2load nghttp2-client
if [ -z "$BIN" ]; then cargo build --release -q; BIN=./target/release/weir; fi

start_upstreams
split_config "$WORK/weir.yaml" 127.0.0.1:18380 127.0.0.1:18381
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.%p" \
  "$BIN" run --config "$WORK/weir.yaml" --threads 1 2>"$WORK/valgrind.log" &
PIDS+=($!)
for _ in $(seq 300); do curl -sf -o /dev/null http://127.0.0.1:18380/ && break; sleep 0.2; done
h2load --h1 -n 2000 -c 50 http://127.0.0.1:18380/ >/dev/null
callgrind_control --zero >/dev/null 2>&1
h2load --h1 -n "$REQUESTS" -c 50 http://127.0.0.1:18380/ | grep -E '^requests:'
callgrind_control --dump >/dev/null 2>&1
sleep 1
total=$(callgrind_annotate "$(ls -t "$WORK"/callgrind.* | head -1)" 2>/dev/null |
  awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "$BIN: $total instructions for $REQUESTS requests, $(( total / REQUESTS )) per request"
