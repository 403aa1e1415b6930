#!/usr/bin/env bash
# Readiness translation latency: a Node app's process.send('ready') to
# READY=1 at the service manager's notify socket, through procward
# `--wait-ready` (benches/readiness.rs, built here with plain rustc). The
# first send of a start (Node compiles its send path then) and a warm one;
# the floor is the same app whose channel the benchmark reads itself.
# Usage: benches/ready.sh     (QUICK=1: fewer starts)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

starts=60
((QUICK)) && starts=15
rustc -O --edition 2021 -o "$TMP/readiness" "$ROOT/benches/readiness.rs"
READINESS_STARTS=$starts PROCWARD=$PW ROOT=$ROOT "$TMP/readiness" >"$TMP/out"
cat "$TMP/out" >&2
med() { sed -n "s/.*$1, $2 starts: median \([0-9.]*\) us.*/\1/p" "$TMP/out"; }
figure ready-first us bare "<= 300" "\`process.send('ready')\` to READY=1, first send, median of $starts starts"
value ready-first procward "$(med "first send" "$starts")"
value ready-first bare "$(med "first send, floor (no procward)" "$starts")"
figure ready-warm us bare "" "\`process.send('ready')\` to READY=1, after a first message, median of $starts starts"
value ready-warm procward "$(med "warm send" "$starts")"
value ready-warm bare "$(med "warm send, floor (no procward)" "$starts")"
note "ready: PM2 sends no READY=1; PM2's own wait_ready has no notify socket to compare with"
