#!/usr/bin/env bash
# p99 at a fixed rate, weir against nginx and HAProxy, judged on a noisy host.
#
# One round loads each peer in turn at the same rate (oha with latency correction, from CPU 0;
# the proxies have one worker each pinned to CPU 1, as in compare.sh), and the upstream straight
# ("direct": the floor the load generator and the upstream reach without a proxy). The order
# rotates every round. A single round's p99 here moves by 10x with the host's steal time, for
# every peer alike, so the script runs many short rounds and prints, per peer, the median and
# quartiles of its p99s, and, for weir against each peer, in how many rounds weir's p99 was the
# lower (paired within a round, so the host's state is shared). Under the hypothesis that the two
# tails are the same, that count is binomial(ROUNDS, 1/2): the two-sided p-value is printed.
# RATE defaults to half nginx's maximum, measured first (wrk, three 5 s rounds, median).
# Each proxy's CPU time per request at that rate is printed too (user and system time from /proc
# over the round, nginx's master and worker, divided by RATE x DURATION, the requests oha sends
# when it holds the rate; DURATION in seconds, `5s`): a proxy that needs more CPU per request
# when requests come one at a time queues sooner when the host stalls it. So is, per request, how
# often the proxies' CPU went idle over the round (its cpuidle states' entries, when the kernel
# has them): in a VM each idle entry may halt the vCPU, and the next request then waits until the
# host runs it again, which a busy host can delay. For each proxy, the rank correlation of its
# rounds' idle entries and p99s (Spearman's, no p-value: a hint, not a test) shows whether its
# tail moves with them.
# Usage: loadtest/tail.sh [RATE=half nginx's maximum] [DURATION=5s] [ROUNDS=15] [CONNECTIONS=50]
source "$(dirname "$0")/lib.sh"
RATE=${1:-}
DURATION=${2:-5s}
ROUNDS=${3:-15}
CONNS=${4:-50}
need wrk wrk
need haproxy haproxy
[ -n "$(oha_bin)" ] || { echo "oha is needed: cargo install --root /tmp/oha oha" >&2; exit 1; }

start_upstreams 0
start_weir 1 1 127.0.0.1:18080 127.0.0.1:18081
declare -A PID=([weir]=${PIDS[-1]})
start_nginx_proxy 18090 "" 1
PID[nginx]=${PIDS[-1]}
start_haproxy 18091 1
PID[haproxy]=${PIDS[-1]}
sleep 1
# Idle entries of CPU 1, the proxies' CPU, so far (0 when the kernel has no cpuidle states).
idle_entries() {
  local n=0 f
  for f in /sys/devices/system/cpu/cpu1/cpuidle/state*/usage; do
    if [ -r "$f" ]; then n=$(( n + $(<"$f") )); fi
  done
  echo "$n"
}
declare -A URL=(
  [direct]=http://127.0.0.1:18001/ [weir]=http://127.0.0.1:18080/
  [nginx]=http://127.0.0.1:18090/ [haproxy]=http://127.0.0.1:18091/
)
if [ -z "$RATE" ]; then
  max=$(for _ in 1 2 3; do taskset -c 0 wrk -t1 -c"$CONNS" -d5s "${URL[nginx]}" | awk '/Requests\/sec/ { print $2 }'; done |
    sort -n | sed -n 2p)
  RATE=$(awk -v m="$max" 'BEGIN { printf "%d", m / 2 }')
fi
PEERS=(direct weir nginx haproxy)
RESULTS="$WORK/tail.tsv"
for round in $(seq "$ROUNDS"); do
  for i in "${!PEERS[@]}"; do
    p=${PEERS[$(( (i + round) % ${#PEERS[@]} ))]}
    before=$([ -n "${PID[$p]:-}" ] && cpu_ticks "${PID[$p]}" || echo 0)
    idle_before=$(idle_entries)
    row=$(fixed_rate "$p" "${URL[$p]}" "$RATE" "$DURATION" "$CONNS")
    idle_after=$(idle_entries)
    after=$([ -n "${PID[$p]:-}" ] && cpu_ticks "${PID[$p]}" || echo 0)
    per_request=$(awk -v t=$(( after - before )) -v i=$(( idle_after - idle_before )) -v hz="$(getconf CLK_TCK)" \
      -v r="$RATE" -v d="${DURATION%s}" 'BEGIN { printf "%.1f\t%.4f", t / hz * 1e6 / (r * d), i / (r * d) }')
    echo -e "$round\t$row\t$per_request" >>"$RESULTS"
  done
done

python3 - "$RESULTS" "$RATE" "$DURATION" "$ROUNDS" "$CONNS" <<'PY'
import math, statistics, sys
rate, dur, rounds, conns = sys.argv[2:6]
p99, p50, ok, cpu, idle = {}, {}, {}, {}, {}
for line in open(sys.argv[1]):
    rnd, _, peer, _, m50, m99, success, us, idles = line.rstrip("\n").split("\t")
    p99.setdefault(peer, {})[rnd] = float(m99)
    cpu.setdefault(peer, []).append(float(us))
    idle.setdefault(peer, {})[rnd] = float(idles)
    p50.setdefault(peer, []).append(float(m50))
    ok.setdefault(peer, []).append(float(success))
print(f"fixed rate {rate} req/s, oha -c{conns} --latency-correction, {rounds} rounds of {dur}, order rotated")
print(f"{'peer':8} {'p50 ms':>8} {'p99 ms: q1':>11} {'median':>8} {'q3':>8}  success  CPU us/req  CPU 1 idle entries/req")
for peer in ["direct", "weir", "nginx", "haproxy"]:
    v = sorted(p99[peer].values())
    q1, _, q3 = statistics.quantiles(v, n=4)
    us = f"{statistics.median(cpu[peer]):10.1f}" if peer != "direct" else f"{'':>10}"
    print(f"{peer:8} {statistics.median(p50[peer]):8.3f} {q1:11.2f} {statistics.median(v):8.2f} {q3:8.2f}  {min(ok[peer]):.4f}  {us}  {statistics.median(idle[peer].values()):22.4f}")
def two_sided(k, n):
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
for peer in ["nginx", "haproxy"]:
    both = [r for r in p99["weir"] if r in p99[peer]]
    wins = sum(p99["weir"][r] < p99[peer][r] for r in both)
    print(f"weir's p99 below {peer}'s in {wins} of {len(both)} rounds (same tails: p = {two_sided(wins, len(both)):.2f})")
def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r
# Does a proxy's p99 rise in the rounds where its CPU idled more often? Spearman's rank
# correlation over its rounds (1: same order, 0: none, -1: opposite).
for peer in ["weir", "nginx", "haproxy"]:
    rs = sorted(p99[peer])
    x, y = ranks([idle[peer][r] for r in rs]), ranks([p99[peer][r] for r in rs])
    if len(set(x)) > 1 and len(set(y)) > 1:
        rho = f"{statistics.correlation(x, y):+.2f}"
    else:
        rho = "n/a (no idle counts)"
    print(f"{peer}: rank correlation of a round's idle entries and its p99: {rho} over {len(rs)} rounds")
PY
