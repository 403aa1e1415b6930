#!/usr/bin/env bash
# `procward status` against `pm2 list`, side by side in one run: each lists
# the same app (two instances of `sleep`) from its running supervisor, in
# turns, and the median wall time of one command is printed.
#
# Target: under 5 ms per `procward status`, and under a tenth of PM2's time
# (PM2 7 starts node for every command, then asks its daemon over RPC).
#
# Run as root from the repository: benches/control.sh [ROUNDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ -f $here/lib.sh ]]; then
    . "$here/lib.sh"
else
    # On its own: the same set-up lib.sh does, for this benchmark only.
    ROOT=$(cd "$here/.." && pwd)
    QUICK=${QUICK:-0}
    figure() { echo "bench: figure $1 | $5 | $2 | $3 | $4"; }
    value() { echo "bench: value $1 | $2 | $3"; }
    note() { echo "bench: note $*"; }
    say() { echo "$*" >&2; }
    median() { sort -g | awk '{v[NR] = $1} END {if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
    tools=$ROOT/target/bench-tools
    PM2=$tools/pm2-7/node_modules/.bin/pm2
    if ! [[ -x $PM2 ]]; then
        say "installing pm2@7 into $tools/pm2-7..."
        command -v npm >/dev/null &&
            npm install --prefix "$tools/pm2-7" --no-audit --no-fund --silent pm2@7 >/dev/null 2>&1 || true
    fi
    [[ -x $PM2 ]] || { say "skip: pm2@7 could not be installed with npm"; PM2=""; }
    say "building procward (release)..."
    (cd "$ROOT" && cargo build --release --quiet) || exit 1
    PW=${CARGO_TARGET_DIR:-$ROOT/target}/release/procward
    TMP=$(mktemp -d /tmp/procward-bench.XXXXXX)
    BENCH_PIDS=()
    trap 'for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done;
          [[ -n $PM2 ]] && PM2_HOME=$TMP/pm2 "$PM2" kill >/dev/null 2>&1; wait 2>/dev/null; rm -rf "$TMP"' EXIT
    pm2() { PM2_HOME=$TMP/pm2 "$PM2" "$@"; }
fi

rounds=${1:-$(( QUICK == 1 ? 20 : 100 ))}
sock=$TMP/procward.sock
"$PW" --control "$sock" --name web -i 2 -- sleep 100000 2>"$TMP/procward.log" &
BENCH_PIDS+=($!)
for _ in $(seq 200); do [[ -S $sock ]] && break; sleep 0.01; done
"$PW" status --control "$sock" >/dev/null

if [[ -n $PM2 ]]; then
    pm2 start sleep --name web -i 2 -- 100000 >/dev/null 2>&1 ||
        pm2 start "$(command -v sleep)" --name web -f -i 2 -- 100000 >/dev/null 2>&1
    pm2 list >/dev/null
fi

# Milliseconds one command takes, start to exit (bash's own clock: no fork
# for the clock itself).
ms() {
    local t0=$EPOCHREALTIME
    "$@" >/dev/null 2>&1
    local t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", (b - a) * 1000}'
}

: >"$TMP/t-pw"; : >"$TMP/t-pwj"; : >"$TMP/t-pm2"; : >"$TMP/t-pm2j"
for ((k = 0; k < rounds; k++)); do
    ms "$PW" status --control "$sock" >>"$TMP/t-pw"
    ms "$PW" status --json --control "$sock" >>"$TMP/t-pwj"
    # PM2 is ~100x slower: a tenth of the rounds gives as steady a median.
    if [[ -n $PM2 ]] && ((k % 10 == 0)); then
        ms pm2 list >>"$TMP/t-pm2"
        ms pm2 jlist >>"$TMP/t-pm2j"
    fi
done

pw=$(median <"$TMP/t-pw")
pwj=$(median <"$TMP/t-pwj")
figure control_status ms pm2 "<= 5" "\`procward status\` vs \`pm2 list\`, one command, median"
value control_status procward "$pw"
figure control_json ms pm2 "<= 0.1x pm2" "\`procward status --json\` vs \`pm2 jlist\`, one command, median"
value control_json procward "$pwj"
say "procward status:        median $pw ms over $rounds runs"
say "procward status --json: median $pwj ms over $rounds runs"
if [[ -n $PM2 ]]; then
    p=$(median <"$TMP/t-pm2")
    pj=$(median <"$TMP/t-pm2j")
    value control_status pm2 "$p"
    value control_json pm2 "$pj"
    say "pm2 list:               median $p ms over $(wc -l <"$TMP/t-pm2") runs ($(pm2 --version 2>/dev/null | tail -n 1))"
    say "pm2 jlist:              median $pj ms"
    say "procward / pm2:         $(awk -v a="$pw" -v b="$p" 'BEGIN {printf "%.3f", a / b}') (target < 0.1)"
fi
note "control: procward status talks to the running procward's unix socket; pm2 list starts node and asks its daemon"
