#!/usr/bin/env bash
# Each cluster worker's share of requests: an unmodified Node server in
# cluster mode under procward (every worker accepts on the socket procward
# holds; with NODE_CLUSTER_SCHED_POLICY=rr in the environment, procward
# accepts and hands each connection to a worker in turn), loaded
# with wrk. Prints requests/s and each worker's share as a
# multiple of its fair share (target: none above 1.5).
# Usage: benches/cluster-share.sh [PROCWARD_BINARY] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/procward}
secs=${2:-5}
command -v wrk >/dev/null || { echo "cluster-share: needs wrk (apt-get install wrk)"; exit 1; }
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
cat > "$work/count.js" <<'JS'
const http = require('http'), fs = require('fs');
let n = 0;
http.createServer((req, res) => { n++; res.end('ok\n'); }).listen(Number(process.env.PORT));
setInterval(() => fs.writeFileSync(`${process.env.OUT}/${process.pid}`, String(n)), 100);
JS
port=3197
for instances in 2 4; do
    for conn in keep-alive close; do
        out=$work/out-$instances-$conn
        mkdir -p "$out"
        # A log per run: the last run's would show its workers online.
        log=$out.log
        PORT=$port OUT=$out "$bin" -i "$instances" -- node "$work/count.js" 2>"$log" &
        pid=$!
        until [ "$(grep -sc 'to="online"' "$log")" -ge "$instances" ]; do sleep 0.05; done
        rps=$(wrk -t2 -c50 -d"${secs}s" -H "Connection: $conn" "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')
        sleep 0.3
        kill $pid; wait $pid 2>/dev/null || true; pid=
        python3 - "$out" "$instances" "$conn" "$rps" <<'PY'
import os, sys
out, n, conn, rps = sys.argv[1:]
v = [int(open(os.path.join(out, f)).read()) for f in os.listdir(out)]
fair = sum(v) / len(v)
print(f"workers={n} connection={conn:10} req/s={rps:>9}  shares x fair: "
      + " ".join(f"{x / fair:.2f}" for x in sorted(v)) + f"  (max {max(v) / fair:.2f})")
PY
    done
done
