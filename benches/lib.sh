# Sourced by every benchmark script in benches/ (see benches/README.md).
#
# After `. "$(dirname "$0")/lib.sh"` a script has:
#   ROOT      the repository
#   PW        the procward binary measured: the static release build that
#             deploy/docker/Dockerfile ships
#   PROBE     benches/support/probe.rs, built
#   PM2       PM2 7's CLI (installed with npm under target/bench-tools), or
#             empty when it could not be installed
#   PEERS     the other inits found: tini dumb-init catatonit (a subset)
#   QUICK     1 for a short smoke run (`benches/run --quick`), else 0
#   TMP       a scratch directory, removed when the script exits
# and the result lines benches/run collects (everything else a script
# prints goes to the run's log):
#   figure ID UNIT REF TARGET TITLE   declares a figure
#   value ID SUBJECT NUMBER            one measured median
#   note TEXT                          a line printed under the table
# benches/run sets all of this up once; a script started on its own does
# it here (building procward, installing missing peers).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=${QUICK:-0}

figure() { echo "bench: figure $1 | $5 | $2 | $3 | $4"; }
value() { echo "bench: value $1 | $2 | $3"; }
note() { echo "bench: note $*"; }
say() { echo "$*" >&2; }

# --- set-up: peers, PM2 7, procward and the probe ---

bench_apt() {
    [[ $(id -u) == 0 ]] || return 1
    if [[ -z ${BENCH_APT_UPDATED:-} ]]; then
        apt-get update -qq >/dev/null 2>&1 || true
        BENCH_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}

bench_setup() {
    local tools=$ROOT/target/bench-tools
    mkdir -p "$tools"
    local t
    for t in tini dumb-init catatonit hyperfine wrk curl; do
        command -v "$t" >/dev/null || bench_apt "$t" || say "skip: $t is not installed and apt-get could not install it"
    done
    command -v node >/dev/null || bench_apt nodejs npm || true
    PEERS=""
    for t in tini dumb-init catatonit; do command -v "$t" >/dev/null && PEERS+="$t "; done
    PEERS=${PEERS% }

    PM2=$tools/pm2-7/node_modules/.bin/pm2
    if ! [[ -x $PM2 && $("$PM2" --version 2>/dev/null | tail -n 1) == 7.* ]]; then
        say "installing pm2@7 into $tools/pm2-7..."
        command -v npm >/dev/null &&
            npm install --prefix "$tools/pm2-7" --no-audit --no-fund --silent pm2@7 >/dev/null 2>&1 || true
    fi
    if [[ -x $PM2 ]]; then
        PM2_VERSION=$("$PM2" --version 2>/dev/null | tail -n 1)
    else
        say "skip: pm2@7 could not be installed with npm"
        PM2="" PM2_VERSION=""
    fi

    say "building procward (release, static, as deploy/docker/Dockerfile does) and the probe..."
    local host
    host=$(rustc -vV | sed -n 's/^host: //p')
    (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
        cargo build --release --quiet --target "$host") || return 1
    PW=${CARGO_TARGET_DIR:-$ROOT/target}/$host/release/procward
    PROBE=$tools/probe
    rustc -O --edition 2021 -o "$PROBE" "$ROOT/benches/support/probe.rs" || return 1
    export ROOT PW PROBE PM2 PM2_VERSION PEERS QUICK BENCH_SET_UP=1
}

if [[ -z ${BENCH_SET_UP:-} ]]; then
    bench_setup || { say "set-up failed"; exit 1; }
fi

TMP=$(mktemp -d /tmp/procward-bench.XXXXXX)
BENCH_PIDS=()
bench_cleanup() {
    local p
    for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -d $TMP/pm2 && -n $PM2 ]]; then PM2_HOME=$TMP/pm2 "$PM2" kill >/dev/null 2>&1 || true; fi
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap bench_cleanup EXIT
# benches/run's time limit sends SIGTERM to the whole group: clean up then too.
trap 'exit 143' TERM INT

# PM2 with its own daemon home inside TMP, killed on exit.
pm2() { PM2_HOME=$TMP/pm2 "$PM2" "$@"; }

# --- helpers ---

# How each init wraps a command outside PID 1 (tini and catatonit need to be
# a subreaper to reap there), and as PID 1 of a PID namespace.
wrap() {
    case $1 in
        procward) echo "$PW --no-autorestart --" ;;
        tini) echo "tini -s --" ;;
        dumb-init) echo "dumb-init" ;;
        catatonit) echo "catatonit --" ;;
    esac
}
wrap_pid1() { if [[ $1 == tini ]]; then echo "tini --"; else wrap "$1"; fi; }

median() { sort -g | awk '{v[NR] = $1} END {if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The first child of a pid, once it has one (10 s at most).
first_child() {
    local c i
    for ((i = 0; i < 1000; i++)); do
        c=$(awk '{print $1}' "/proc/$1/task/$1/children" 2>/dev/null)
        [[ -n $c ]] && { echo "$c"; return 0; }
        sleep 0.01
    done
    return 1
}

# Waits until FILE has at least N lines matching PATTERN (default: any),
# for at most SECONDS.
wait_lines() {  # FILE N SECONDS [PATTERN]
    local deadline=$((SECONDS + $3)) n
    while :; do
        n=$(grep -c -- "${4:-}" "$1" 2>/dev/null || true)
        ((${n:-0} >= $2)) && return 0
        ((SECONDS < deadline)) || { say "timed out waiting for $2 lines in $1"; return 1; }
        sleep 0.02
    done
}

wait_http() {
    local i
    for ((i = 0; i < 200; i++)); do
        curl -fs "http://$1/healthz" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    say "procward at $1 did not answer"
    return 1
}
