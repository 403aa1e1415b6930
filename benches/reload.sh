#!/usr/bin/env bash
# Reloads under load, in one run: PM2 7 in cluster mode, PM2 7 in fork mode
# and procward in cluster mode, each serving one Node app on 127.0.0.1 while
# `wrk -t2 -c50` (keep-alive) runs for D seconds with 3 reloads at D/4,
# D/2 and 3D/4. Two apps: examples/web/server.js, which drains (answers
# what still arrives with `Connection: close`, then closes), and a plain
# server that does not. PM2 cluster mode is also run without a reload, for
# the p99 baseline. Prints, per run: requests, errors by kind (wrk's
# connect/read/write/timeout socket errors and non-2xx answers), p99
# latency, and each instance's share of the answers (x its fair share).
# Targets: 0 errors with the draining app; with the plain app, no more
# read (keep-alive reset) errors than PM2 cluster; p99 during reloads no
# worse than PM2 cluster's p99 without a reload.
# The table goes to stderr; result lines for benches/run (benches/README.md)
# to stdout.
# Usage: benches/reload.sh [PROCWARD_BINARY] [SECONDS]   (default 20 s, 5 s
# with QUICK=1; under benches/run, $PW and $PM2 from benches/lib.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${1:-${PW:-}}
if [[ -z $bin ]]; then
    bin=target/release/procward
    [[ -x $bin ]] || bin=target/debug/procward
fi
bin=$(realpath "$bin")
secs=${2:-20}
[[ -n ${2:-} || ${QUICK:-0} != 1 ]] || secs=5
command -v wrk >/dev/null || { echo "reload: needs wrk (apt-get install wrk)"; exit 1; }
command -v node >/dev/null || { echo "reload: needs node"; exit 1; }

work=$(mktemp -d /tmp/procward-reload.XXXXXX)
export PM2_HOME=$work/pm2-home
pm2=${PM2:-$root/target/pm2/node_modules/.bin/pm2}
pid=
cleanup() {
    [[ -x $pm2 ]] && "$pm2" kill >/dev/null 2>&1 || true
    [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# PM2 7 in a local prefix, not global.
if [[ ! -x $pm2 ]]; then
    echo "reload: installing pm2@7 into target/pm2"
    npm install --silent --no-audit --no-fund --prefix target/pm2 pm2@7 >/dev/null
fi

cat > "$work/plain.js" <<'JS'
// Does not drain: no signal handler, so SIGINT ends it at once.
require('http').createServer((req, res) => {
  res.end(`hello from instance ${process.env.NODE_APP_INSTANCE || 0} (pid ${process.pid})\n`);
}).listen(Number(process.env.PORT), '127.0.0.1');
JS
cp examples/web/server.js "$work/drain.js"

# Each answer's instance, tallied per wrk thread and summed at the end.
cat > "$work/share.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body)
  local i = body and body:match("instance (%d+)")
  if i then counts[i] = (counts[i] or 0) + 1 end
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, k .. "=" .. v) end
  table.sort(parts)
  io.write("SHARES " .. table.concat(parts, " ") .. "\n")
  io.write(string.format("P99 %.2f\n", latency:percentile(99) / 1000))
end
LUA

port=3297
url=http://127.0.0.1:$port/

# wrk for $secs with `reload` run 3 times meanwhile (none for "-").
load() {
    local reload=$1 out=$2
    wrk -t2 -c50 -d"${secs}s" -s "$work/share.lua" "$url" >"$out" 2>&1 &
    local w=$!
    if [[ $reload != - ]]; then
        for k in 1 2 3; do
            sleep "$(awk "BEGIN { print $secs / 4 }")"
            eval "$reload" >/dev/null 2>&1
        done
    fi
    wait $w
}

# One summary line from a wrk output.
report() {
    local name=$1 out=$2 instances=$3
    python3 - "$name" "$out" "$instances" "$work/results" <<'PY' >&2
import re, sys
name, path, n, results = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t = open(path).read()
req = int(re.search(r"(\d+) requests in", t).group(1))
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
conn, read, write, timeout = map(int, m.groups()) if m else (0, 0, 0, 0)
m = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
non2xx = int(m.group(1)) if m else 0
p99 = float(re.search(r"P99 ([\d.]+)", t).group(1))
shares = dict(kv.split("=") for kv in re.search(r"SHARES (.*)", t).group(1).split())
total = sum(int(v) for v in shares.values()) or 1
fair = total / n
share = " ".join(f"{k}:{int(v) / fair:.2f}" for k, v in sorted(shares.items()))
errors = conn + read + write + timeout + non2xx
with open(results, "a") as f:
    f.write(f"{name.split(',')[0].replace(' ', '-')}|{name}|{errors}|{read}|{p99}|{max(int(v) for v in shares.values()) / fair:.2f}\n")
print(f"{name:34} {req:>8} {errors:>6} {conn:>7} {read:>6} {write:>6} {timeout:>7} {non2xx:>6} {p99:>8.2f}  {share}")
PY
}

wait_port() {
    for _ in $(seq 200); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0
        sleep 0.05
    done
    echo "reload: nothing listens on $port"; exit 1
}

pm2_run() {
    local name=$1 app=$2 mode=$3 instances=$4 reload=$5
    if [[ $mode == fork ]]; then
        PORT=$port "$pm2" start "$work/$app.js" --name b >/dev/null
    else
        PORT=$port "$pm2" start "$work/$app.js" --name b -i "$instances" >/dev/null
    fi
    wait_port
    sleep 1
    load "$([[ $reload == yes ]] && echo "$pm2 reload b" || echo -)" "$work/out"
    report "$name" "$work/out" "$instances"
    "$pm2" delete b >/dev/null 2>&1 || true
    sleep 0.5
}

procward_run() {
    local name=$1 app=$2 extra=$3
    PORT=$port "$bin" -i 2 --name b $extra -- node "$work/$app.js" >/dev/null 2>"$work/log" &
    pid=$!
    until [[ $(grep -c 'to="online"' "$work/log") -ge 2 ]]; do sleep 0.05; done
    sleep 1
    load "kill -HUP $pid" "$work/out"
    report "$name" "$work/out" 2
    local aborted
    aborted=$(grep -c "reload aborted" "$work/log" || true)
    [[ $aborted == 0 ]] || echo "  ($aborted reloads aborted)" >&2
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    sleep 0.5
}

echo "wrk -t2 -c50 -d${secs}s keep-alive, 3 reloads; node $(node --version), pm2 $("$pm2" --version | tail -1), $(basename "$bin") $("$bin" --version 2>/dev/null | head -1)" >&2
printf '%-34s %8s %6s %7s %6s %6s %7s %6s %8s  %s\n' >&2 run requests errors connect read write timeout non2xx p99_ms "instance:share"
for app in drain plain; do
    pm2_run "pm2 cluster -i 2, $app, no reload" $app cluster 2 no
    pm2_run "pm2 cluster -i 2, $app" $app cluster 2 yes
    pm2_run "pm2 fork, $app" $app fork 1 yes
    case $app in
        drain) procward_run "procward cluster -i 2, $app" $app "--shutdown-with-message" ;;
        plain) procward_run "procward cluster -i 2, $app" $app "" ;;
    esac
done

# Result lines (benches/README.md): subjects pm2 (cluster), pm2-fork,
# pm2-noreload (cluster, no reload) and procward.
python3 - "$work/results" "$secs" <<'PY'
import sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1])]
secs = sys.argv[2]
def subject(name):
    if name.startswith("procward"): return "procward"
    if "no reload" in name: return "pm2-noreload"
    if name.startswith("pm2 fork"): return "pm2-fork"
    return "pm2"
def out(kind, *f): print(f"bench: {kind} " + " | ".join(f))
for app, what in (("drain", "the draining example app"), ("plain", "a plain app that does not drain")):
    rs = [r for r in rows if f", {app}" in r[1]]
    out("figure", f"reload-{app}-errors", f"wrk errors of any kind, 3 reloads under `wrk -t2 -c50 -d{secs}s`, {what}", "errors", "", "<= 0" if app == "drain" else "")
    out("figure", f"reload-{app}-resets", f"keep-alive resets (wrk read errors), 3 reloads, {what}", "errors", "pm2", "<= pm2")
    out("figure", f"reload-{app}-p99", f"p99 latency during 3 reloads, {what}", "ms", "pm2-noreload", "<= pm2-noreload")
    out("figure", f"reload-{app}-share", f"busiest instance's share over the fair share during reloads, {what}", "x", "", "<= 1.5")
    for _, name, errors, read, p99, share in rs:
        s = subject(name)
        if s != "pm2-noreload":
            out("value", f"reload-{app}-errors", s, errors)
            out("value", f"reload-{app}-resets", s, read)
        out("value", f"reload-{app}-p99", s, p99)
        if s != "pm2-fork":
            out("value", f"reload-{app}-share", s, share)
PY
