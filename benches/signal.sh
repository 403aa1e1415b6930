#!/usr/bin/env bash
# Signal forwarding latency: SIGUSR1 sent to the supervisor until the app
# wakes in sigwaitinfo(2), minus the same sent to the app directly; with
# the supervisor as a plain child, and as PID 1 of a new PID namespace
# (`unshare --pid --fork --mount-proc`). Every subject is measured in each
# of several rounds, taking turns; the figure is the median of its round
# medians minus the median of direct delivery's.
# Usage: benches/signal.sh     (QUICK=1: fewer signals)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

rounds=3 signals=300
((QUICK)) && rounds=2 signals=100
subjects=(procward $PEERS)

for ((r = 0; r < rounds; r++)); do
    "$PROBE" latency "$signals" self "$PROBE" child | awk '{print $1}' >>"$TMP/direct"
    for p in "${subjects[@]}"; do
        # shellcheck disable=SC2046
        "$PROBE" latency "$signals" self $(wrap "$p") "$PROBE" child | awk '{print $1}' >>"$TMP/child-$p"
        # shellcheck disable=SC2046
        "$PROBE" latency "$signals" child unshare --pid --fork --mount-proc $(wrap_pid1 "$p") "$PROBE" child |
            awk '{print $1}' >>"$TMP/pid1-$p"
    done
done
direct=$(median <"$TMP/direct")
over() { awk -v a="$(median <"$1")" -v b="$direct" 'BEGIN {printf "%.1f", a - b}'; }
figure signal-child us tini "<= tini" "signal forwarding over direct delivery, supervisor a plain child (median)"
for p in "${subjects[@]}"; do value signal-child "$p" "$(over "$TMP/child-$p")"; done
figure signal-pid1 us tini "<= tini" "signal forwarding over direct delivery, supervisor PID 1 of a PID namespace (median)"
for p in "${subjects[@]}"; do value signal-pid1 "$p" "$(over "$TMP/pid1-$p")"; done
note "signal: direct delivery took $direct us (median of $rounds rounds of $signals signals); PM2 has no signal forwarding to compare"
