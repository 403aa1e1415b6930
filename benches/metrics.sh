#!/usr/bin/env bash
# Benchmarks of resource sampling, /metrics and memory caps, printed as
# figures (nothing is asserted):
#   1. idle CPU and RSS of procward supervising 1 and 100 instances with
#      --metrics on and 1 s sampling;
#   2. /metrics latency (p50, p99) under wrk with 100 instances;
#   3. memory-cap detection: a Node app leaking 10 MB/s under a 100 MiB cap,
#      from crossing the cap to the next process start, and the peak RSS,
#      for procward (1 s sampling) and PM2 (default 30 s worker interval,
#      and PM2_WORKER_INTERVAL=1000).
# Usage: benches/metrics.sh [idle|wrk|memcap]...   (default: all)
# Needs: a release build, node, wrk, pm2 (for the PM2 side; skipped if absent).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
PW=$PWD/target/release/procward
LEAK=$PWD/tests/fixtures/metrics/leak.js
IDLE_SECONDS=${IDLE_SECONDS:-30}
CYCLES=${CYCLES:-5}
PM2_CYCLES=${PM2_CYCLES:-3}
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CPU ticks (utime+stime, proc(5) fields 14 and 15) of a pid.
ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

wait_http() {
    for _ in $(seq 100); do
        curl -fs "http://$1/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "procward at $1 did not answer" >&2
    return 1
}

start_procward() { # N -> sets PW_PID, ADDR
    ADDR=127.0.0.1:$(free_port)
    "$PW" --metrics "$ADDR" --sample-interval 1s -i "$1" -- sleep 1000000 2>"$tmp/pw-$1.log" &
    PW_PID=$!
    pids+=("$PW_PID")
    wait_http "$ADDR"
}

bench_idle() {
    local hz; hz=$(getconf CLK_TCK)
    for n in 1 100; do
        start_procward "$n"
        sleep 5 # let every instance start and the first samples settle
        local t0 w0 t1 w1
        t0=$(ticks "$PW_PID"); w0=$(date +%s.%N)
        sleep "$IDLE_SECONDS"
        t1=$(ticks "$PW_PID"); w1=$(date +%s.%N)
        local rss; rss=$(rss_kb "$PW_PID")
        python3 - "$n" "$t0" "$t1" "$w0" "$w1" "$hz" "$rss" <<'EOF'
import sys
n, t0, t1, w0, w1, hz, rss = sys.argv[1:]
cpu = (float(t1) - float(t0)) / float(hz)
wall = float(w1) - float(w0)
print(f"idle {n:>3} instances: {100 * cpu / wall:.3f}% of a core over {wall:.0f} s "
      f"(1 s sampling, --metrics on), procward RSS {int(rss) / 1024:.1f} MiB")
EOF
        kill "$PW_PID"; wait "$PW_PID" 2>/dev/null || true
    done
}

bench_wrk() {
    start_procward 100
    sleep 3
    local size; size=$(curl -fs "http://$ADDR/metrics" | wc -c)
    echo "/metrics with 100 instances: $size bytes"
    wrk -t2 -c8 -d10s --latency "http://$ADDR/metrics" >"$tmp/wrk.txt"
    awk '/Requests\/sec/ {print "wrk -t2 -c8 -d10s: " $2 " requests/s"}
         /^ +50%/ {print "  p50 " $2} /^ +99%/ {print "  p99 " $2}' "$tmp/wrk.txt"
    # A request after the reuse window (1 s) pays for a full gather, as a
    # Prometheus scraping every 15 s does.
    local cold=()
    for _ in 1 2 3 4 5; do
        sleep 1.2
        cold+=("$(curl -fs -o /dev/null -w '%{time_total}' "http://$ADDR/metrics")")
    done
    echo "  one request after 1.2 s idle (full gather): ${cold[*]} s"
    kill "$PW_PID"; wait "$PW_PID" 2>/dev/null || true
}

# Reads a leak.js record file: per process, crossing of the cap to the next
# start, and its peak RSS.
analyse() { # label record cap_bytes
    python3 - "$@" <<'EOF'
import statistics, sys
label, path, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
starts, rss = [], {}
for line in open(path):
    f = line.split()
    if f[0] == "start":
        starts.append((int(f[1]), f[2]))
    elif f[0] == "rss":
        rss.setdefault(f[2], []).append((int(f[1]), int(f[3])))
lat, peaks = [], []
for (t, pid), (t_next, _) in zip(starts, starts[1:]):
    samples = rss.get(pid, [])
    crossed = next((ts for ts, r in samples if r > cap), None)
    if crossed is None:
        continue
    lat.append((t_next - crossed) / 1000)
    peaks.append(max(r for _, r in samples))
if not lat:
    print(f"{label}: no restart recorded"); sys.exit()
print(f"{label}: {len(lat)} restarts; crossing to restart median {statistics.median(lat):.2f} s "
      f"(min {min(lat):.2f}, max {max(lat):.2f}); peak RSS {min(peaks) / 2**20:.0f}-{max(peaks) / 2**20:.0f} MiB "
      f"= {max(peaks) / cap:.2f}x the cap")
EOF
}

wait_starts() { # record count timeout_s
    local deadline=$((SECONDS + $3))
    until [ "$(grep -c '^start' "$1" 2>/dev/null || echo 0)" -gt "$2" ]; do
        [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $2 restarts" >&2; return 0; }
        sleep 0.5
    done
}

bench_memcap() {
    local cap=$((100 * 1024 * 1024))
    local rec=$tmp/procward.rec
    RECORD=$rec LEAK_MB=10 LEAK_EVERY_MS=1000 "$PW" --max-memory-restart 100M --sample-interval 1s \
        -- node "$LEAK" 2>"$tmp/memcap.log" &
    local p=$!; pids+=("$p")
    wait_starts "$rec" "$CYCLES" $((CYCLES * 30))
    kill "$p"; wait "$p" 2>/dev/null || true
    analyse "procward (1 s sampling)      " "$rec" "$cap"

    command -v pm2 >/dev/null || { echo "pm2 not installed: PM2 side skipped"; return; }
    for interval in default 1000; do
        local home=$tmp/pm2-$interval rec=$tmp/pm2-$interval.rec cycles=$CYCLES
        mkdir -p "$home"
        local envs=(PM2_HOME="$home" RECORD="$rec" LEAK_MB=10 LEAK_EVERY_MS=1000)
        [ "$interval" = default ] && cycles=$PM2_CYCLES || envs+=(PM2_WORKER_INTERVAL="$interval")
        env "${envs[@]}" pm2 start "$LEAK" --name leak --max-memory-restart 100M >/dev/null
        wait_starts "$rec" "$cycles" $((cycles * 60))
        env PM2_HOME="$home" pm2 kill >/dev/null
        analyse "pm2 5 (worker interval $interval)" "$rec" "$cap"
    done
}

what=("$@")
[ ${#what[@]} -gt 0 ] || what=(idle wrk memcap)
for w in "${what[@]}"; do "bench_$w"; done
