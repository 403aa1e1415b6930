#!/usr/bin/env bash
# procward's image against the same app under tini, both run by podman:
# image sizes, start to ready (`podman run` until the app prints its
# "listening" line) and stop to exit (`podman stop` until `podman run`
# returns). As root; needs podman and runc (scripts/test installs them).
#
#   benches/container.sh [RUNS]      (default 10 runs of each)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
export CONTAINERS_CONF=$PWD/tests/container/containers.conf
export CONTAINERS_STORAGE_CONF=$PWD/tests/container/storage.conf
target=${CARGO_TARGET_DIR:-target}
host=$(rustc -vV | sed -n 's/^host: //p')

echo "container: building the static procward (release), as deploy/docker/Dockerfile does" >&2
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
    cargo build --release --quiet --target "$host"
binary=$target/$host/release/procward
echo "container: building the images" >&2
tests/container/images.sh "$binary"

size() { podman image inspect --format '{{.Size}}' "$1"; }
echo
echo "binary: procward $(stat -c %s "$binary") bytes, tini-static $(stat -c %s "$(command -v tini-static)") bytes"
echo "image localhost/procward-test-node (the base: busybox, node):   $(size localhost/procward-test-node) bytes"
echo "image localhost/procward-test-web (procward, Dockerfile.node-app): $(size localhost/procward-test-web) bytes"
echo "image localhost/procward-test-tini (the same app under tini):      $(size localhost/procward-test-tini) bytes"

python3 - "$runs" <<'PY'
import statistics, subprocess, sys, time
runs = int(sys.argv[1])

def once(image, n):
    name = f"bench-{image}-{n}"
    t0 = time.monotonic()
    p = subprocess.Popen(["podman", "run", "--rm", "--name", name, "--network", "none",
                          f"localhost/procward-test-{image}"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if line.startswith("listening on"):
            break
    ready = time.monotonic() - t0
    t1 = time.monotonic()
    subprocess.run(["podman", "stop", "--time", "10", name], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    code = p.wait()
    stop = time.monotonic() - t1
    return ready, stop, code

print(f"\n{runs} runs each, medians (min-max):")
print("| image | start to ready | stop to exit | exit code |\n|---|---|---|---|")
for image in ("web", "tini"):
    r = [once(image, n) for n in range(runs)]
    fmt = lambda xs: f"{statistics.median(xs) * 1000:.0f} ms ({min(xs) * 1000:.0f}-{max(xs) * 1000:.0f})"
    codes = sorted({c for _, _, c in r})
    print(f"| {'procward' if image == 'web' else 'tini'} | {fmt([x for x, _, _ in r])} | {fmt([y for _, y, _ in r])} | {codes} |")
PY
