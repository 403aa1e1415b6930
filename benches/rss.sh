#!/usr/bin/env bash
# Idle RSS of the supervisor while it runs `sleep` (VmRSS, a second after
# the child started): procward, each peer, and PM2's God daemon.
# Usage: benches/rss.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

figure rss KB tini "<= 2x tini" 'idle RSS of the supervisor running `sleep`'
for p in procward $PEERS; do
    # shellcheck disable=SC2046
    $(wrap "$p") sleep 1000 2>/dev/null &
    pid=$!
    first_child "$pid" >/dev/null
    sleep 1
    value rss "$p" "$(rss_kb "$pid")"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
if [[ -n $PM2 ]]; then
    pm2 start sleep --name idle --no-autorestart -- 1000 >/dev/null 2>&1
    sleep 2
    value rss pm2 "$(rss_kb "$(cat "$TMP/pm2/pm2.pid")")"
    note "rss: PM2's is its God daemon's alone (the CLI exits)"
    pm2 kill >/dev/null 2>&1 || true
fi
