#!/usr/bin/env bash
# Log capture throughput, in one run on this machine: the same Node app
# writes SIZE MiB of 100-byte lines to stdout, as fast as its reader takes
# them, and each way of keeping them ends with every byte in a file on the
# same filesystem:
#   pass-through    procward -- app > file (the app writes the file itself)
#   capture         procward -o file -- app
#   capture --time  procward -o file --time -- app (a timestamp per line)
#   pm2 7           pm2 start app -o file (its daemon already running)
# Prints MB/s (best of RUNS) and each capture's cost relative to
# pass-through. Target: capture <= 1.5x pass-through, and faster than PM2.
# Usage: benches/logs.sh [SIZE_MIB] [RUNS]     (defaults: 256 3)
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${1:-256}
RUNS=${2:-3}
BYTES=$((SIZE_MIB * 1024 * 1024))
WANT=$(( (BYTES + 99) / 100 * 100 ))
APP=$PWD/tests/fixtures/logs/write.js

work=$(mktemp -d /tmp/procward-logs-bench.XXXXXX)
export PM2_HOME=$work/pm2
PM2=""
cleanup() {
    [[ -n $PM2 ]] && "$PM2" kill >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "building procward (release)..." >&2
cargo build --release --quiet
PW=$PWD/target/release/procward

# PM2 7, installed into the scratch directory so that no global pm2 changes.
if command -v npm >/dev/null && npm install --prefix "$work/npm" --silent pm2@7 >/dev/null 2>&1; then
    PM2=$work/npm/node_modules/.bin/pm2
    "$PM2" ping >/dev/null 2>&1
else
    echo "skip: pm2@7 could not be installed with npm" >&2
fi

now() { date +%s.%N; }

# Waits until FILE holds WANT bytes.
wait_size() {
    while [[ $(stat -c %s "$1" 2>/dev/null || echo 0) -lt $WANT ]]; do sleep 0.01; done
}

run_once() {
    local how=$1 f=$work/out.log t0 t1
    rm -f "$f" "$work"/err.log
    t0=$(now)
    case $how in
        pass-through) "$PW" --no-autorestart -- node "$APP" "$BYTES" 100 > "$f" 2>/dev/null ;;
        capture) "$PW" --no-autorestart -o "$f" -- node "$APP" "$BYTES" 100 2>/dev/null ;;
        capture-time) "$PW" --no-autorestart -o "$f" --time -- node "$APP" "$BYTES" 100 2>/dev/null ;;
        pm2)
            "$PM2" start "$APP" --name bench --no-autorestart -o "$f" -e "$work/err.log" \
                -- "$BYTES" 100 >/dev/null
            wait_size "$f"
            ;;
    esac
    t1=$(now)
    [[ $how == pm2 ]] && "$PM2" delete bench >/dev/null 2>&1
    local got
    got=$(stat -c %s "$f")
    if [[ $how != capture-time && $got -ne $WANT ]]; then
        echo "$how: wrote $got bytes, expected $WANT" >&2
        exit 1
    fi
    echo "$t0 $t1" | awk -v b="$BYTES" '{ printf "%.1f\n", b / 1e6 / ($2 - $1) }'
}

best() {
    local how=$1 b=0 r
    for _ in $(seq "$RUNS"); do
        r=$(run_once "$how")
        b=$(echo "$r $b" | awk '{ print ($1 > $2) ? $1 : $2 }')
    done
    echo "$b"
}

ways=(pass-through capture capture-time)
[[ -n $PM2 ]] && ways+=(pm2)
declare -A mbs
for w in "${ways[@]}"; do mbs[$w]=$(best "$w"); done

echo
echo "log capture: $SIZE_MIB MiB of 100-byte lines, best of $RUNS, $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"
printf '%-14s %10s %22s\n' way MB/s "cost vs pass-through"
for w in "${ways[@]}"; do
    printf '%-14s %10s %21sx\n' "$w" "${mbs[$w]}" \
        "$(echo "${mbs[pass-through]} ${mbs[$w]}" | awk '{ printf "%.2f", $1 / $2 }')"
done
