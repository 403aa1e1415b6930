#!/usr/bin/env bash
# Whole-process benchmark: procward against tini, dumb-init, catatonit, PM2
# and a bare shell loop, in one run, on this machine. Prints one table per
# figure with ratios to the reference the target names:
#   wrap overhead of `X -- /bin/true` (hyperfine)           target: <= catatonit
#   idle RSS of the supervisor while it runs `sleep`        target: <= 2x tini
#   restart latency, crash to the new process's main()      target: <= 1.3x bare loop
#   signal forwarding latency, SIGUSR1 to the supervisor
#   until the app wakes, minus sending it to the app directly  target: <= +60 us
# Usage: benches/compare.sh [--runs N]   (run as root: PID namespaces)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=300          # hyperfine runs per command
CRASHES=40        # restarts measured per supervisor
SIGNALS=500       # signals measured per supervisor
[[ ${1:-} == --runs ]] && RUNS=$2

work=$(mktemp -d /tmp/procward-bench.XXXXXX)
export PM2_HOME=$work/pm2
cleanup() {
    command -v pm2 >/dev/null && pm2 kill >/dev/null 2>&1 || true
    jobs -p | xargs -r kill 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# --- tools: install what is missing, or skip that peer with a clear line ---
apt_get() {
    [[ $(id -u) == 0 ]] || return 1
    if [[ -z ${apt_updated:-} ]]; then apt-get update -qq >/dev/null 2>&1 || true; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}
for tool in hyperfine tini dumb-init catatonit; do
    command -v "$tool" >/dev/null || apt_get "$tool" || true
done
command -v node >/dev/null || apt_get nodejs npm || true
command -v pm2 >/dev/null || { command -v npm >/dev/null && npm install -g --silent pm2@5 >/dev/null 2>&1; } || true
command -v hyperfine >/dev/null || { echo "compare: hyperfine is required (apt-get install hyperfine)" >&2; exit 1; }
have() {
    if command -v "$1" >/dev/null; then return 0; fi
    echo "skip: $1 is not installed and could not be installed" >&2
    return 1
}

# procward twice: static, as deploy/docker/Dockerfile ships it, and the
# default dynamically linked `cargo build --release`.
echo "building procward (release, static and dynamic) and the probe..." >&2
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" cargo build --release --quiet --target "$host" 2>/dev/null
cargo build --release --quiet 2>/dev/null
PW=$PWD/target/$host/release/procward
PWD_DYN=$PWD/target/release/procward
rustc -O --edition 2021 -o "$work/probe" benches/support/probe.rs
PROBE=$work/probe

peers=(procward procward-dyn)
for p in tini dumb-init catatonit; do have "$p" && peers+=("$p"); done
# The same wrapper as each would be used in a container, not as PID 1 here
# (tini and catatonit need to be a subreaper to reap outside PID 1).
wrap() {
    case $1 in
        procward) echo "$PW --no-autorestart --" ;;
        procward-dyn) echo "$PWD_DYN --no-autorestart --" ;;
        tini) echo "tini -s --" ;;
        dumb-init) echo "dumb-init" ;;
        catatonit) echo "catatonit --" ;;
    esac
}
# As PID 1 of a new PID namespace: the same, but tini needs no -s there.
wrap_pid1() {
    if [[ $1 == tini ]]; then echo "tini --"; else wrap "$1"; fi
}

echo
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "procward: $($PW --version), static $(stat -c %s "$PW") bytes, dynamic $(stat -c %s "$PWD_DYN") bytes"

# --- 1. wrap overhead ---
echo
echo "== wrap overhead: X -- /bin/true (hyperfine, $RUNS runs, median) =="
cmds=(/bin/true)
for p in "${peers[@]}"; do cmds+=("$(wrap "$p") /bin/true"); done
hyperfine -N --warmup 30 --runs "$RUNS" --export-json "$work/wrap.json" "${cmds[@]}" >/dev/null 2>&1
python3 - "$work/wrap.json" "${peers[@]}" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
names = ["bare"] + sys.argv[2:]
med = {n: r["median"] * 1000 for n, r in zip(names, res)}
over = {n: med[n] - med["bare"] for n in names}
ref = over.get("catatonit")
print(f"{'':12} {'median ms':>10} {'over bare':>10} {'vs catatonit':>13}")
for n in names:
    ratio = f"{over[n] / ref:.2f}x" if ref and n != "bare" else ""
    print(f"{n:12} {med[n]:10.3f} {over[n]:10.3f} {ratio:>13}")
PY

# --- 2. idle RSS ---
echo
echo "== idle RSS of the supervisor while it runs sleep (VmRSS) =="
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
first_child() {
    local pid=$1 c=""
    for _ in $(seq 1000); do
        c=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null | awk '{print $1}')
        [[ -n $c ]] && { echo "$c"; return; }
        sleep 0.01
    done
}
declare -A RSS
for p in "${peers[@]}"; do
    # shellcheck disable=SC2046
    $(wrap "$p") sleep 1000 2>/dev/null &
    pid=$!
    first_child "$pid" >/dev/null
    sleep 1
    RSS[$p]=$(rss_kb "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
done
if have pm2; then
    pm2 start sleep --name idle --no-autorestart -- 1000 >/dev/null 2>&1
    sleep 2
    god=$(cat "$PM2_HOME/pm2.pid")
    RSS[pm2]=$(rss_kb "$god")
    pm2 delete idle >/dev/null 2>&1 || true
fi
printf '%-12s %10s %10s\n' "" "RSS KB" "vs tini"
for p in "${peers[@]}" pm2; do
    [[ -n ${RSS[$p]:-} ]] || continue
    ratio=""; [[ -n ${RSS[tini]:-} ]] && ratio=$(awk -v a="${RSS[$p]}" -v b="${RSS[tini]}" 'BEGIN{printf "%.2fx", a/b}')
    printf '%-12s %10s %10s\n' "$p" "${RSS[$p]}" "$ratio"
done

# --- 3. restart latency ---
echo
echo "== restart latency: crash (exit 1) to the new process's main(), $CRASHES crashes =="
gaps() {  # FILE -> "median mean" in ms of (start[k+1] - end[k])
    python3 - "$1" <<'PY'
import sys, statistics
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
g = sorted((rows[k + 1][0] - rows[k][1]) / 1e6 for k in range(len(rows) - 1))
print(f"{statistics.median(g):.3f} {statistics.mean(g):.3f} {len(g)}")
PY
}
wait_lines() {  # FILE N
    for _ in $(seq 3000); do
        [[ -f $1 && $(wc -l <"$1") -ge $2 ]] && return 0
        sleep 0.01
    done
    echo "timed out waiting for $2 starts in $1" >&2; return 1
}
declare -A RESTART
n=$((CRASHES + 1))
sh -c 'i=0; while [ $i -lt '"$n"' ]; do "$0" stamp "$1"; i=$((i+1)); done' "$PROBE" "$work/bare.txt"
RESTART[bare-loop]=$(gaps "$work/bare.txt")
"$PW" --max-restarts 100000 --min-uptime 0 -- "$PROBE" stamp "$work/procward.txt" 2>/dev/null &
pid=$!
wait_lines "$work/procward.txt" "$n"; kill "$pid"; wait "$pid" 2>/dev/null || true
head -n "$n" "$work/procward.txt" >"$work/procward.cut"
RESTART[procward]=$(gaps "$work/procward.cut")
if have pm2; then
    # min_uptime has no CLI flag in PM2: a process file carries the policy.
    cat >"$work/crash.json" <<JSON
{"apps": [{"name": "crash", "script": "$PROBE", "args": ["stamp", "$work/pm2.txt"], "interpreter": "none",
  "autorestart": true, "min_uptime": 0, "max_restarts": 100000, "restart_delay": 0}]}
JSON
    pm2 start "$work/crash.json" >/dev/null 2>&1
    wait_lines "$work/pm2.txt" "$((n + 2))"
    pm2 delete crash >/dev/null 2>&1 || true
    # The first start goes through `pm2 start` itself: measure restarts only.
    tail -n +2 "$work/pm2.txt" | head -n "$n" >"$work/pm2.cut"
    RESTART[pm2]=$(gaps "$work/pm2.cut")
fi
printf '%-12s %10s %10s %6s %12s\n' "" "median ms" "mean ms" "gaps" "vs bare loop"
base=$(echo "${RESTART[bare-loop]}" | awk '{print $1}')
for p in bare-loop procward pm2; do
    [[ -n ${RESTART[$p]:-} ]] || continue
    read -r med mean cnt <<<"${RESTART[$p]}"
    printf '%-12s %10s %10s %6s %12s\n' "$p" "$med" "$mean" "$cnt" "$(awk -v a="$med" -v b="$base" 'BEGIN{printf "%.2fx", a/b}')"
done

# --- 4. signal forwarding latency ---
echo
echo "== signal forwarding: SIGUSR1 sent until the app wakes (us, $SIGNALS signals) =="
printf '%-12s %-8s %10s %10s %10s %14s\n' "" "as" "median" "p90" "mean" "median-direct"
direct=$("$PROBE" latency "$SIGNALS" self "$PROBE" child)
read -r dmed dp90 dmean <<<"$direct"
printf '%-12s %-8s %10s %10s %10s %14s\n' "direct" "-" "$dmed" "$dp90" "$dmean" "0"
for p in "${peers[@]}"; do
    # shellcheck disable=SC2046
    r=$("$PROBE" latency "$SIGNALS" self $(wrap "$p") "$PROBE" child)
    read -r med p90 mean <<<"$r"
    printf '%-12s %-8s %10s %10s %10s %14s\n' "$p" "child" "$med" "$p90" "$mean" "$(awk -v a="$med" -v b="$dmed" 'BEGIN{printf "%+.1f", a-b}')"
    # shellcheck disable=SC2046
    r=$("$PROBE" latency "$SIGNALS" child unshare --pid --fork --mount-proc $(wrap_pid1 "$p") "$PROBE" child)
    read -r med p90 mean <<<"$r"
    printf '%-12s %-8s %10s %10s %10s %14s\n' "$p" "PID 1" "$med" "$p90" "$mean" "$(awk -v a="$med" -v b="$dmed" 'BEGIN{printf "%+.1f", a-b}')"
done
echo "pm2: no signal forwarding to compare (its CLI's sendSignal goes through the daemon's RPC)"
