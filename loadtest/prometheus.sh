#!/usr/bin/env bash
# A real Prometheus server (Debian's `prometheus`) scrapes weir's /metrics every second while wrk
# sends a short load through weir; then the per-backend request rate is read back with PromQL.
# Usage: loadtest/prometheus.sh [DURATION=20s]
source "$(dirname "$0")/lib.sh"
DURATION=${1:-20s}
need wrk wrk
need prometheus prometheus
setup_split 1

cat >"$WORK/prometheus.yml" <<YAML
global: { scrape_interval: 1s }
scrape_configs:
  - job_name: weir
    static_configs: [{ targets: ["$WEIR_ADMIN"] }]
YAML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address=127.0.0.1:19090 --log.level=warn 2>"$WORK/prometheus.log" &
PIDS+=($!)
wait_for http://127.0.0.1:19090/-/ready

wrk -t1 -c20 -d"$DURATION" "http://$WEIR/" | grep -E "Requests/sec"
sleep 2
for backend in stable canary; do
  q="sum(rate(weir_requests_total{backend=\"$backend\"}[30s]))"
  printf '%-7s %s = ' "$backend" "$q"
  curl -sfG http://127.0.0.1:19090/api/v1/query --data-urlencode "query=$q" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print("%.0f req/s" % float(r[0]["value"][1]) if r else "no data")'
done
q='histogram_quantile(0.99, sum by (le, backend) (rate(weir_request_duration_seconds_bucket[30s])))'
echo "p99 by backend: $q"
curl -sfG http://127.0.0.1:19090/api/v1/query --data-urlencode "query=$q" |
  python3 -c 'import json,sys
for r in json.load(sys.stdin)["data"]["result"]: print("  %s: %.2f ms" % (r["metric"]["backend"], float(r["value"][1]) * 1e3))'
