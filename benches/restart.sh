#!/usr/bin/env bash
# Restart latency: from an app's exit (exit 1, at once) to the next
# process's main(), as the probe stamps both with CLOCK_MONOTONIC; for a
# bare `while` loop of the shell (the floor), procward and PM2 (process file
# with min_uptime 0 and restart_delay 0).
# Usage: benches/restart.sh     (QUICK=1: fewer crashes)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

crashes=60
((QUICK)) && crashes=15
n=$((crashes + 1))

gaps() {  # FILE -> median of start[k+1] - end[k], ms
    awk 'NR > 1 {print ($1 - end) / 1e6} {end = $2}' "$1" | median
}

figure restart ms bare "<= 1.3x bare" "restart latency: a crash (exit 1) to the new process's main(), median of $crashes"
sh -c 'i=0; while [ $i -lt "$2" ]; do "$0" stamp "$1"; i=$((i+1)); done' "$PROBE" "$TMP/bare.txt" "$n"
value restart bare "$(gaps "$TMP/bare.txt")"

"$PW" --max-restarts 100000 --min-uptime 0 -- "$PROBE" stamp "$TMP/procward.txt" 2>/dev/null &
pid=$!
wait_lines "$TMP/procward.txt" "$n" 60
kill "$pid"
wait "$pid" 2>/dev/null || true
head -n "$n" "$TMP/procward.txt" >"$TMP/procward.cut"
value restart procward "$(gaps "$TMP/procward.cut")"

if [[ -n $PM2 ]]; then
    # min_uptime has no CLI flag in PM2: a process file carries the policy.
    cat >"$TMP/crash.json" <<JSON
{"apps": [{"name": "crash", "script": "$PROBE", "args": ["stamp", "$TMP/pm2.txt"], "interpreter": "none",
  "autorestart": true, "min_uptime": 0, "max_restarts": 100000, "restart_delay": 0}]}
JSON
    pm2 start "$TMP/crash.json" >/dev/null 2>&1
    wait_lines "$TMP/pm2.txt" "$((n + 1))" 120
    pm2 kill >/dev/null 2>&1 || true
    # The first start goes through `pm2 start` itself: restarts only.
    tail -n +2 "$TMP/pm2.txt" | head -n "$n" >"$TMP/pm2.cut"
    value restart pm2 "$(gaps "$TMP/pm2.cut")"
fi
