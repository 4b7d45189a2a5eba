#!/usr/bin/env bash
# A quick, bounded look at weir's throughput: wrk straight to an nginx upstream, then through weir
# doing a 90/10 split over two nginx upstreams. Each run lasts DURATION.
# Usage: loadtest/quick.sh [DURATION=10s] [CONNECTIONS=50]
source "$(dirname "$0")/lib.sh"
DURATION=${1:-10s}
CONNS=${2:-50}
need wrk wrk
setup_split 1

run() { wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$1" | awk -v n="$2" '
  /Requests\/sec/ { rps=$2 } /^ +50%/ { p50=$2 } /^ +99%/ { p99=$2 }
  END { printf "%-22s %12s req/s  p50 %8s  p99 %8s\n", n, rps, p50, p99 }'; }
echo "wrk -t1 -c$CONNS -d$DURATION, HTTP/1.1 keep-alive, weir with 1 worker thread"
run "http://127.0.0.1:18001/" "direct (nginx)"
run "http://$WEIR/" "weir 90/10"
