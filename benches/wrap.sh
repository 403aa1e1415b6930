#!/usr/bin/env bash
# Wrap overhead: `X -- /bin/true` minus `/bin/true` alone, for procward
# (`--no-autorestart`) and each peer, timed with hyperfine. The commands
# take turns in rounds, so a change of load on a shared machine falls on
# all of them alike; the figure is the median over every run of every
# round. With perf, also the page faults of each (`perf stat`, children
# included) over those of /bin/true alone.
# Usage: benches/wrap.sh     (QUICK=1: fewer runs)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

rounds=5 runs=60
((QUICK)) && rounds=2 runs=25
names=(bare procward $PEERS)
cmds=(/bin/true)
for p in "${names[@]:1}"; do cmds+=("$(wrap "$p") /bin/true"); done

say "wrap: $rounds rounds of $runs runs of each: ${names[*]}"
for ((r = 0; r < rounds; r++)); do
    hyperfine -N --warmup 10 --runs "$runs" --export-json "$TMP/wrap-$r.json" "${cmds[@]}" >/dev/null 2>&1
done
figure wrap ms catatonit "<= tini" 'wrap overhead: `X -- /bin/true` over `/bin/true` alone, median'
python3 - "$TMP" "$rounds" "${names[@]}" <<'PY'
import json, statistics, sys
tmp, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
times = {n: [] for n in names}
for r in range(rounds):
    for n, res in zip(names, json.load(open(f"{tmp}/wrap-{r}.json"))["results"]):
        times[n] += res["times"]
med = {n: statistics.median(t) * 1000 for n, t in times.items()}
for n in names[1:]:
    print(f"bench: value wrap | {n} | {med[n] - med['bare']:.3f}")
print(f"bench: note wrap: `/bin/true` alone took {med['bare']:.3f} ms (median of {len(times['bare'])} runs)")
PY

if command -v perf >/dev/null && perf stat -e page-faults -x, /bin/true >/dev/null 2>&1; then
    n=200
    ((QUICK)) && n=50
    faults() {  # CMD... -> mean page faults per run
        # shellcheck disable=SC2068
        perf stat -x, -e page-faults -r "$n" $@ 2>&1 >/dev/null | awk -F, '/page-faults/ {print $1}'
    }
    base=$(faults /bin/true)
    figure wrap-faults faults catatonit "" 'page faults of `X -- /bin/true` over `/bin/true` alone (perf stat, mean)'
    for p in "${names[@]:1}"; do
        # shellcheck disable=SC2046
        value wrap-faults "$p" "$(awk -v a="$(faults $(wrap "$p") /bin/true)" -v b="$base" 'BEGIN {print a - b}')"
    done
    note "wrap-faults: \`/bin/true\` alone: $base page faults"
else
    say "wrap: perf is not usable here, page faults not counted"
fi
