#!/usr/bin/env bash
# Cluster mode under wrk (benches/cluster-share.sh, in the result lines of
# benches/run): an unmodified Node cluster server under procward, 2 and 4
# workers, keep-alive and new connections; requests/s and the busiest
# worker's share of requests over the fair share.
# Usage: benches/cluster.sh     (QUICK=1: shorter loads)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

secs=5
((QUICK)) && secs=2
rc=0
bash "$ROOT/benches/cluster-share.sh" "$PW" "$secs" >"$TMP/out" || rc=$?
cat "$TMP/out" >&2
((rc == 0)) || note "cluster: benches/cluster-share.sh failed (exit $rc) after the figures shown; see the log"
while read -r workers conn rps max; do
    id=cluster-$workers-$conn
    figure "$id-share" x "" "<= 1.5" "cluster mode, $workers workers, $conn, \`wrk -c50 -d${secs}s\`: the busiest worker's share over the fair share"
    value "$id-share" procward "$max"
    figure "$id-rps" req/s "" "" "cluster mode, $workers workers, $conn: requests/s"
    value "$id-rps" procward "$rps"
done < <(sed -n 's/^workers=\([0-9]*\) connection=\([a-z-]*\) *req\/s= *\([0-9.]*\).*(max \([0-9.]*\)).*/\1 \2 \3 \4/p' "$TMP/out")
