#!/usr/bin/env bash
# Readiness translation latency: a Node app's process.send('ready') to
# READY=1 at the service manager's notify socket, through procward
# `--wait-ready` (benches/readiness.rs, built here with plain rustc). The
# first send of a start (Node compiles its send path then) and a warm one.
# Usage: benches/ready.sh     (QUICK=1: fewer starts)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

starts=60
((QUICK)) && starts=15
rustc -O --edition 2021 -o "$TMP/readiness" "$ROOT/benches/readiness.rs"
READINESS_STARTS=$starts PROCWARD=$PW ROOT=$ROOT "$TMP/readiness" >"$TMP/out"
cat "$TMP/out" >&2
figure ready-first us "" "<= 300" "\`process.send('ready')\` to READY=1, first send, median of $starts starts"
value ready-first procward "$(sed -n 's/.*first send.*median \([0-9.]*\) us.*/\1/p' "$TMP/out")"
figure ready-warm us "" "" "\`process.send('ready')\` to READY=1, after a first message, median of $starts starts"
value ready-warm procward "$(sed -n 's/.*warm send.*median \([0-9.]*\) us.*/\1/p' "$TMP/out")"
note "ready: PM2 sends no READY=1; PM2's own wait_ready has no notify socket to compare with"
