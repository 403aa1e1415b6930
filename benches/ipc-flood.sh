#!/usr/bin/env bash
# What an app's IPC messages cost procward: the app sends FLOOD_COUNT (64)
# messages of 1 MB JSON arrays, then process.send('ready'). Prints
# procward's peak and final RSS and the time from start to ready.
# Usage: benches/ipc-flood.sh [PROCWARD_BINARY] [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/procward}
export FLOOD_COUNT=${2:-64}
log=$(mktemp)
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT

start=$(date +%s%N)
"$bin" --wait-ready --listen-timeout 60s -- node benches/ipc-flood/flood.js 2>"$log" &
pid=$!
until grep -q 'to="online"' "$log"; do sleep 0.01; done
ready=$(date +%s%N)
sleep 0.5
hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
echo "messages=$FLOOD_COUNT start_to_ready_ms=$(( (ready - start) / 1000000 )) peak_rss_kb=$hwm rss_kb=$rss"
