#!/usr/bin/env bash
# This checkout's weir (B) against another weir binary (A), side by side: same 90/10 split over
# the same nginx upstreams, one worker each pinned to CPU 1, wrk on CPU 0, rounds interleaved
# A B A B ... Prints per build the median req/s, p50, p99 and CPU time per request (the weir
# process's user + system time over the requests it served: steal time and other tenants do not
# count, so this is the steadiest figure on a shared host). For judging a change on a noisy host,
# where two separate runs of compare.sh are not comparable. H2C=1 loads both with h2c instead
# (h2load -m10, as compare.sh; p50 and p99 are then not measured and print as -). THREADS=N runs
# both with `--threads N` on the CPUs in CPUS (default 1 on CPU 1; THREADS=2 CPUS=0,1 puts both
# threads beside the load generator, as compare.sh's `--threads 2` row).
# Usage: [H2C=1] [THREADS=N CPUS=LIST] loadtest/ab.sh OTHER_WEIR_BINARY [DURATION=5s] [ROUNDS=5] [CONNECTIONS=50]
source "$(dirname "$0")/lib.sh"
OTHER=${1:?usage: loadtest/ab.sh OTHER_WEIR_BINARY [DURATION] [ROUNDS] [CONNECTIONS]}
DURATION=${2:-5s}
ROUNDS=${3:-5}
CONNS=${4:-50}
if [ "${H2C:-}" = 1 ]; then
  need h2load nghttp2-client
  LOAD="h2load (h2c) -c$CONNS -m10 -D${DURATION%s}"
else
  need wrk wrk
  LOAD="wrk -t1 -c$CONNS -d$DURATION"
fi

start_upstreams 0
THREADS=${THREADS:-1}
CPUS=${CPUS:-1}
WEIR_BIN=$OTHER start_weir "$THREADS" "$CPUS" 127.0.0.1:18280 127.0.0.1:18281
declare -A PID=([A]=${PIDS[-1]})
start_weir "$THREADS" "$CPUS" 127.0.0.1:18080 127.0.0.1:18081
PID[B]=${PIDS[-1]}
declare -A URL=([A]=http://127.0.0.1:18280/ [B]=http://127.0.0.1:18080/)
RESULTS="$WORK/ab.tsv"
TICK=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for p in A B; do
    before=$(cpu_ticks "${PID[$p]}")
    if [ "${H2C:-}" = 1 ]; then
      out=$(taskset -c 0 h2load -c"$CONNS" -m10 -D"${DURATION%s}" "${URL[$p]}" 2>&1)
    else
      out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "${URL[$p]}")
    fi
    after=$(cpu_ticks "${PID[$p]}")
    echo "$out" | awk -v p="$p" -v cpu=$((after - before)) -v tick="$TICK" -v OFS='\t' '
      BEGIN { p50 = "-"; p99 = "-" }
      /requests in/ { n=$1 } /Requests\/sec/ { rps=$2 } /^ +50%/ { p50=$2 } /^ +99%/ { p99=$2 }
      /^finished in/ { rps=$4 } /^requests:/ { n=$8 }
      END { print p, rps, p50, p99, (n > 0 ? cpu / tick * 1e6 / n : "") }' >>"$RESULTS"
  done
done
echo "$LOAD, weir --threads $THREADS on CPU $CPUS, $ROUNDS interleaved rounds, medians (A: $OTHER, B: this checkout)"
for p in A B; do
  rps=$(awk -v p="$p" '$1 == p { print $2 }' "$RESULTS" | sort -n | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2)')
  p50=$(awk -v p="$p" '$1 == p { print $3 }' "$RESULTS" | sort -n | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2)')
  p99=$(awk -v p="$p" '$1 == p { print $4 }' "$RESULTS" | sort -n | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2)')
  cpu=$(awk -v p="$p" '$1 == p { print $5 }' "$RESULTS" | sort -n | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2)')
  printf "%s  %9.0f req/s  p50 %s  p99 %s  CPU %.1f us/request\n" "$p" "$rps" "$p50" "$p99" "$cpu"
done
awk '{ r[$1] = r[$1] " " $2; c[$1] = c[$1] sprintf(" %.1f", $5) }
  END { print "req/s A:" r["A"]; print "req/s B:" r["B"]; print "CPU us/req A:" c["A"]; print "CPU us/req B:" c["B"] }' "$RESULTS"
