#!/usr/bin/env bash
# weir against nginx and HAProxy doing the same job, side by side in one run.
#
# Each proxy runs one worker (thread or process) pinned to CPU 1 and splits 90/10 at random over
# the same two nginx upstreams, with keep-alive to them and access logs off. wrk (HTTP/1.1) and
# h2load (h2c) and the upstreams run on CPU 0. Rounds are interleaved (A B C A B C ...) so drift
# hits every peer alike; the table gives medians. Also: weir with 2 threads, RSS idle and under
# load (HTTP/1.1 rounds run before the h2c ones), and p99 at a fixed rate of half nginx's maximum
# (oha with latency correction, so p99 is not hidden by coordinated omission; the proxies' order
# rotated every round) when oha is installed. CPU us/req: the proxy's user and system
# time over the run (nginx: master and worker; from /proc, in clock ticks, so about 1% at 10 s)
# divided by the requests answered.
# Usage: loadtest/compare.sh [DURATION=10s] [ROUNDS=3] [CONNECTIONS=50]
source "$(dirname "$0")/lib.sh"
DURATION=${1:-10s}
ROUNDS=${2:-3}
CONNS=${3:-50}
need wrk wrk
need haproxy haproxy
need h2load nghttp2-client
OHA=$(oha_bin)

start_upstreams 0
start_weir 1 1 127.0.0.1:18080 127.0.0.1:18081
WEIR_PID=${PIDS[-1]}
start_weir 2 0,1 127.0.0.1:18180 127.0.0.1:18181
WEIR2_PID=${PIDS[-1]}
start_nginx_proxy 18090 "" 1 18093
NGINX_PID=${PIDS[-1]}
start_haproxy 18091 1
HAPROXY_PID=${PIDS[-1]}
sleep 1

declare -A URL=(
  [direct]=http://127.0.0.1:18001/ [weir]=http://127.0.0.1:18080/ [weir-2t]=http://127.0.0.1:18180/
  [nginx]=http://127.0.0.1:18090/ [haproxy]=http://127.0.0.1:18091/
)
declare -A H2C=([weir]=http://127.0.0.1:18080/ [nginx]=http://127.0.0.1:18093/ [haproxy]=http://127.0.0.1:18091/)
declare -A PID=([weir]=$WEIR_PID [weir-2t]=$WEIR2_PID [nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID)
PEERS=(direct weir nginx haproxy weir-2t)
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

for p in weir weir-2t nginx haproxy; do echo -e "rss_idle\t$p\t$(rss_kib "${PID[$p]}")" >>"$RESULTS"; done

for round in $(seq "$ROUNDS"); do
  for p in "${PEERS[@]}"; do
    before=$([ -n "${PID[$p]:-}" ] && cpu_ticks "${PID[$p]}" || echo 0)
    out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "${URL[$p]}" &
          sleep "$(( ${DURATION%s} / 2 ))"; [ -n "${PID[$p]:-}" ] && echo "RSS $(rss_kib "${PID[$p]}")"; wait)
    after=$([ -n "${PID[$p]:-}" ] && cpu_ticks "${PID[$p]}" || echo 0)
    echo "$out" | awk -v p="$p" -v OFS='\t' -v ticks=$(( after - before )) -v hz="$(getconf CLK_TCK)" '
      /Requests\/sec/ { rps=$2 } /^ +50%/ { p50=$2 } /^ +99%/ { p99=$2 } /^RSS/ { rss=$2 }
      / requests in / { n=$1 } /Non-2xx|Socket errors/ { err=1 }
      END { print "h1", p, rps, p50, p99, rss, err+0, (n > 0 && ticks > 0) ? ticks / hz * 1e6 / n : "" }' >>"$RESULTS"
  done
  echo "HTTP/1.1 round $round done" >&2
done
# h2c after every HTTP/1.1 round: its 500 streams in flight open many upstream connections,
# which would otherwise show in the HTTP/1.1 RSS samples.
for round in $(seq "$ROUNDS"); do
  for p in weir nginx haproxy; do
    before=$(cpu_ticks "${PID[$p]}")
    out=$(taskset -c 0 h2load -c"$CONNS" -m10 -D"${DURATION%s}" "${H2C[$p]}" 2>&1)
    after=$(cpu_ticks "${PID[$p]}")
    echo "$out" | awk -v p="$p" -v OFS='\t' -v ticks=$(( after - before )) -v hz="$(getconf CLK_TCK)" '
      /^finished in/ { rps=$4 } /^requests:/ { ok=$8; failed=$10 }
      END { print "h2c", p, rps, failed, (ok > 0 && ticks > 0) ? ticks / hz * 1e6 / ok : "" }' >>"$RESULTS"
  done
  echo "h2c round $round done" >&2
done

if [ -n "$OHA" ]; then
  nginx_max=$(awk -F'\t' '$1=="h1" && $2=="nginx" { print $3 }' "$RESULTS" | sort -n | awk '{ a[NR]=$1 } END { print a[int((NR+1)/2)] }')
  rate=$(awk -v m="$nginx_max" 'BEGIN { printf "%d", m / 2 }')
  # The order rotates every round (as in tail.sh): the first run after the h2c rounds, or
  # after any one peer, is not always the same proxy's.
  FIXED=(weir nginx haproxy)
  for round in $(seq "$ROUNDS"); do
    for i in "${!FIXED[@]}"; do
      p=${FIXED[$(( (i + round) % ${#FIXED[@]} ))]}
      fixed_rate "$p" "${URL[$p]}" "$rate" "$DURATION" "$CONNS" >>"$RESULTS"
    done
  done
fi

python3 - "$RESULTS" "$DURATION" "$ROUNDS" "$CONNS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
dur, rounds, conns = sys.argv[2:5]
def ms(v):
    v = v.strip()
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
med = statistics.median
h1 = {}
for r in rows:
    if r[0] == "h1":
        h1.setdefault(r[1], []).append(r)
idle = {r[1]: int(r[2]) for r in rows if r[0] == "rss_idle"}
rps = {p: med(float(r[2]) for r in rs) for p, rs in h1.items()}
print(f"\nHTTP/1.1 keep-alive, wrk -t1 -c{conns} -d{dur}, {rounds} interleaved rounds, medians; proxies on 1 pinned CPU")
def cpu(rs, i):
    v = [float(r[i]) for r in rs if len(r) > i and r[i]]
    return f"{med(v):6.1f}" if v else "     -"
print(f"{'peer':10} {'req/s':>10} {'CPU us/req':>10} {'p50 ms':>8} {'p99 ms':>8} {'RSS idle':>9} {'RSS load':>9} {'/weir':>7} {'/direct':>8} errors")
for p in ["direct", "weir", "nginx", "haproxy", "weir-2t"]:
    if p not in h1: continue
    rs = h1[p]
    load = [int(r[5]) for r in rs if len(r) > 5 and r[5]]
    print(f"{p:10} {rps[p]:10.0f} {cpu(rs, 7):>10} {med(ms(r[3]) for r in rs):8.2f} {med(ms(r[4]) for r in rs):8.2f} "
          f"{(str(round(idle[p]/1024,1))+' MiB') if p in idle else '-':>9} {(str(round(max(load)/1024,1))+' MiB') if load else '-':>9} "
          f"{rps[p]/rps['weir']:7.2f} {rps[p]/rps['direct']:8.2f} {sum(int(r[6]) for r in rs)}")
h2 = {}
for r in rows:
    if r[0] == "h2c":
        h2.setdefault(r[1], []).append(r)
if h2:
    print(f"\nh2c, h2load -c{conns} -m10 -D{dur}, medians")
    w = med(float(r[2]) for r in h2["weir"])
    for p, rs in h2.items():
        v = med(float(r[2]) for r in rs)
        print(f"{p:10} {v:10.0f} req/s  {v/w:5.2f}x weir  CPU {cpu(rs, 4)} us/req  failed {sum(int(r[3] or 0) for r in rs)}")
rate = {}
for r in rows:
    if r[0] == "rate":
        rate.setdefault(r[1], []).append(r)
if rate:
    print(f"\nfixed rate of half nginx's maximum ({rate['weir'][0][2]} req/s), oha --latency-correction, medians")
    for p in [p for p in ["weir", "nginx", "haproxy"] if p in rate]:
        rs = rate[p]
        print(f"{p:10} p50 {med(float(r[3]) for r in rs):7.3f} ms  p99 {med(float(r[4]) for r in rs):7.3f} ms  success {min(float(r[5]) for r in rs):.4f}")
PY
