#!/usr/bin/env bash
# Memory cap: a Node app (tests/fixtures/metrics/leak.js) leaks 10 or 100
# MiB/s in 1 MiB steps under a 100 MiB cap (`--max-memory-restart 100M`).
# The app records its RSS after each step and the time it starts, so the
# figures are the same whichever supervisor runs it:
#   - crossing to the stop signal: from the first RSS sample above the cap
#     to the app's handler for the supervisor's SIGINT (the supervisor's
#     own part: detection and decision);
#   - crossing to restart: from the same sample to the next process's
#     first line (so it includes the old process's exit and Node's own
#     start, noted);
#   - peak: the largest RSS the process reached, over the cap.
# For procward (default 1 s sampling), PM2 with its default 30 s worker
# interval (10 MiB/s only: at 100 MiB/s it would reach gigabytes) and PM2
# with PM2_WORKER_INTERVAL=1000.
# Usage: benches/memcap.sh     (QUICK=1: fewer restarts, no default PM2)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

LEAK=$ROOT/tests/fixtures/metrics/leak.js
CAP=$((100 * 1024 * 1024))
cycles=5 pm2_default_cycles=2
((QUICK)) && cycles=2 pm2_default_cycles=0

analyse() {  # ID SUBJECT RECORD
    python3 - "$@" "$CAP" <<'PY'
import statistics, sys
fig, subject, path, cap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
starts, rss, signals = [], {}, {}
for line in open(path):
    f = line.split()
    if f[0] == "start":
        starts.append((int(f[1]), f[2]))
    elif f[0] == "rss":
        rss.setdefault(f[2], []).append((int(f[1]), int(f[3])))
    elif f[0] == "signal":
        signals.setdefault(f[2], int(f[1]))
lat, peaks, sig = [], [], []
for (t, pid), (t_next, _) in zip(starts, starts[1:]):
    samples = rss.get(pid, [])
    crossed = next((ts for ts, r in samples if r > cap), None)
    if crossed is not None:
        lat.append(t_next - crossed)
        peaks.append(max(r for _, r in samples) / cap)
        if pid in signals:
            sig.append(signals[pid] - crossed)
if lat:
    if sig:
        print(f"bench: value {fig}-signal | {subject} | {statistics.median(sig):.0f}")
    print(f"bench: value {fig} | {subject} | {statistics.median(lat):.0f}")
    print(f"bench: value {fig}-peak | {subject} | {statistics.median(peaks):.3f}")
    spread = f"crossing to the stop signal {min(sig)}-{max(sig)} ms, " if sig else ""
    print(f"bench: note {fig}: {subject}: {len(lat)} restarts, {spread}crossing to restart {min(lat)}-{max(lat)} ms, "
          f"peak {min(peaks):.3f}-{max(peaks):.3f}x the cap")
else:
    print(f"bench: note {fig}: {subject}: no restart recorded", file=sys.stderr)
PY
}

run() {  # ID SUBJECT EVERY_MS CYCLES
    local fig=$1 subject=$2 every=$3 n=$4 rec=$TMP/$1-$2.rec pid
    local env=(RECORD="$rec" LEAK_MB=1 LEAK_EVERY_MS="$every")
    say "memcap: $subject, 1 MiB every $every ms, $n restarts"
    case $subject in
        procward)
            env "${env[@]}" "$PW" --max-memory-restart 100M -- node "$LEAK" 2>"$TMP/pw.log" &
            pid=$!
            BENCH_PIDS+=("$pid")
            wait_lines "$rec" $((n + 1)) $((n * 30)) '^start' || true
            kill "$pid"
            wait "$pid" 2>/dev/null || true
            ;;
        pm2*)
            [[ $subject == pm2-1s ]] && env+=(PM2_WORKER_INTERVAL=1000)
            env "${env[@]}" PM2_HOME="$TMP/pm2" "$PM2" start "$LEAK" --name leak --max-memory-restart 100M >/dev/null
            wait_lines "$rec" $((n + 1)) $((n * 60)) '^start' || true
            pm2 kill >/dev/null
            ;;
    esac
    analyse "$fig" "$subject" "$rec"
}

figure memcap10-signal ms pm2-1s "<= 100" "memory cap, 10 MiB/s leak, 100 MiB cap: crossing to the stop signal, median"
figure memcap10 ms pm2-1s "" "memory cap, 10 MiB/s leak, 100 MiB cap: crossing to restart (with Node's start), median"
figure memcap10-peak x "" "<= 1.02" "memory cap, 10 MiB/s leak: peak RSS over the cap, median"
run memcap10 procward 100 "$cycles"
if [[ -n $PM2 ]]; then
    run memcap10 pm2-1s 100 "$cycles"
    ((pm2_default_cycles)) && run memcap10 pm2 100 "$pm2_default_cycles"
fi
figure memcap100-signal ms pm2-1s "" "memory cap, 100 MiB/s leak, 100 MiB cap: crossing to the stop signal, median"
figure memcap100 ms pm2-1s "" "memory cap, 100 MiB/s leak, 100 MiB cap: crossing to restart (with Node's start), median"
figure memcap100-peak x "" "<= 1.1" "memory cap, 100 MiB/s leak: peak RSS over the cap, median"
run memcap100 procward 10 "$cycles"
[[ -n $PM2 ]] && run memcap100 pm2-1s 10 "$cycles"

# Node's own start, which every restart above includes.
for _ in 1 2 3 4 5; do
    t0=$(date +%s%3N)
    t1=$(node -e 'console.log(Date.now())')
    echo $((t1 - t0))
done >"$TMP/node"
note "memcap: Node's own start (exec to its first line) took $(median <"$TMP/node") ms here; pm2 is PM2 with its default 30 s worker interval, pm2-1s with PM2_WORKER_INTERVAL=1000"
