#!/usr/bin/env bash
# Resource sampling and /metrics, procward alone (PM2 has no /metrics):
#   - idle CPU of procward supervising 1 and 100 `sleep` instances with
#     --metrics on and the default 1 s sampling, and its RSS with 100;
#   - /metrics with 100 instances under `wrk -t2 -c8`: p50 and p99;
#   - one request after 1.2 s without any (past the 1 s reuse window, so a
#     full gather, as a Prometheus scraping every 15 s sees);
#   - /healthz asked 1 ms after such a request, while its body is being
#     encoded: whether the encoding holds up the event loop.
# Usage: benches/metrics.sh     (QUICK=1: shorter)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

idle=30 wrk_s=10
((QUICK)) && idle=5 wrk_s=3
# CPU time of every thread of a pid, ns (schedstat(5) is finer than the
# clock ticks of stat(5)).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{t += $1} END {printf "%.0f\n", t}'; }

start() {  # N -> PW_PID, ADDR
    ADDR=127.0.0.1:$(free_port)
    "$PW" --metrics "$ADDR" -i "$1" -- sleep 1000000 2>"$TMP/pw-$1.log" &
    PW_PID=$!
    BENCH_PIDS+=("$PW_PID")
    wait_http "$ADDR"
    sleep 3 # every instance started, the first samples taken
}
stop() { kill "$PW_PID"; wait "$PW_PID" 2>/dev/null || true; }

cpu_share() {  # -> % of a core over $idle seconds
    local t0 w0 t1 w1
    t0=$(cpu_ns "$PW_PID") w0=$(date +%s%N)
    sleep "$idle"
    t1=$(cpu_ns "$PW_PID") w1=$(date +%s%N)
    awk -v t="$((t1 - t0))" -v w="$((w1 - w0))" 'BEGIN {printf "%.3f", 100 * t / w}'
}

# wrk prints latencies as 451.00us, 6.60ms or 1.20s: in ms.
to_ms() { awk '{v = $1 + 0; if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /[0-9]s$/ && $1 !~ /ms$/) v *= 1000; print v}'; }

figure idle-cpu-1 % "" "" "idle CPU of procward with 1 instance, % of a core over ${idle} s (--metrics on, 1 s sampling)"
start 1
value idle-cpu-1 procward "$(cpu_share)"
stop
figure idle-cpu-100 % "" "" "idle CPU of procward with 100 instances, % of a core over ${idle} s"
start 100
value idle-cpu-100 procward "$(cpu_share)"
figure idle-rss KB "" "" "RSS of procward supervising 100 instances, --metrics on"
value idle-rss procward "$(rss_kb "$PW_PID")"

size=$(curl -fs "http://$ADDR/metrics" | wc -c)
wrk -t2 -c8 -d"${wrk_s}s" --latency "http://$ADDR/metrics" >"$TMP/wrk.txt"
cat "$TMP/wrk.txt" >&2
figure scrape-p50 ms "" "" "/metrics, 100 instances, \`wrk -t2 -c8 -d${wrk_s}s\`, p50"
value scrape-p50 procward "$(awk '$1 == "50%" {print $2}' "$TMP/wrk.txt" | to_ms)"
figure scrape-p99 ms "" "<= 5" "/metrics, 100 instances, \`wrk -t2 -c8 -d${wrk_s}s\`, p99"
value scrape-p99 procward "$(awk '$1 == "99%" {print $2}' "$TMP/wrk.txt" | to_ms)"
note "metrics: the /metrics body with 100 instances is $size bytes; wrk: $(awk '/Requests\/sec/ {print $2}' "$TMP/wrk.txt") requests/s"
for _ in 1 2 3 4 5; do
    sleep 1.2
    curl -fs -o /dev/null -w '%{time_total}\n' "http://$ADDR/metrics" | awk '{print $1 * 1000}' >>"$TMP/cold"
done
figure scrape-cold ms "" "" "/metrics, 100 instances, one request after 1.2 s without any (a full gather), median of 5"
value scrape-cold procward "$(median <"$TMP/cold")"
for _ in $(seq $((QUICK ? 3 : 9))); do
    sleep 1.2
    curl -fs -o /dev/null "http://$ADDR/metrics" &
    sleep 0.001
    curl -fs -o /dev/null -w '%{time_total}\n' "http://$ADDR/healthz" | awk '{print $1 * 1000}' >>"$TMP/during"
    wait $!
done
figure scrape-healthz ms "" "" "/healthz asked while a /metrics body with 100 instances is encoded, median of $((QUICK ? 3 : 9))"
value scrape-healthz procward "$(median <"$TMP/during")"
stop
