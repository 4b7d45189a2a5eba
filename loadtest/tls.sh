#!/usr/bin/env bash
# TLS termination, side by side: weir and nginx each terminate TLS on one worker and split 90/10
# over the same two nginx upstreams. Measures HTTPS keep-alive req/s (wrk), new handshakes/s
# (wrk with `Connection: close`), and HTTP/2 with h2load against weir's h2 (TLS) and h2c
# listeners and nginx's h2 listener.
# Usage: loadtest/tls.sh [DURATION=10s]
source "$(dirname "$0")/lib.sh"
DURATION=${1:-10s}
need wrk wrk
need h2load nghttp2-client
need openssl openssl
make_cert
start_upstreams
start_weir 1 "" "$WEIR" "$WEIR_ADMIN" "  - name: tls
    address: 127.0.0.1:18443
    tls: { certificates: [{ cert: cert.pem, key: key.pem }] }"
start_nginx_proxy 18090 18444
sleep 0.3

echo "== HTTPS keep-alive, wrk -t1 -c50 -d$DURATION"
wrk_line "weir  https (1 thread)" -t1 -c50 -d"$DURATION" https://127.0.0.1:18443/
wrk_line "nginx https (1 worker)" -t1 -c50 -d"$DURATION" https://127.0.0.1:18444/
echo "== new TLS handshake per request, wrk -t1 -c20 -d$DURATION -H 'Connection: close'"
wrk_line "weir  handshakes" -t1 -c20 -d"$DURATION" -H "Connection: close" https://127.0.0.1:18443/
wrk_line "nginx handshakes" -t1 -c20 -d"$DURATION" -H "Connection: close" https://127.0.0.1:18444/
echo "== HTTP/2, h2load -c50 -m10 -D$DURATION"
D=${DURATION%s}
h2load_line "weir  h2 over TLS" -c50 -m10 -D"$D" https://127.0.0.1:18443/
h2load_line "weir  h2c" -c50 -m10 -D"$D" "http://$WEIR/"
h2load_line "nginx h2 over TLS" -c50 -m10 -D"$D" https://127.0.0.1:18444/
