#!/usr/bin/env bash
# Builds the images of deploy/docker/ with podman, offline, for
# tests/container_engine.rs and benches/container.sh:
#
#   tests/container/images.sh STATIC_PROCWARD
#
# No registry is needed: the base images are made here from host files with
# `podman import` (busybox; node with the libraries it links), the build
# stage of deploy/docker/Dockerfile is replaced by the static binary given
# (--build-context build=DIR), and every build uses --pull=never.
#   localhost/procward-test-busybox   busybox and its applets
#   localhost/procward-test-node      the busybox tree plus node
#   localhost/procward-test           deploy/docker/Dockerfile
#   localhost/procward-test-web       deploy/docker/Dockerfile.node-app
#   localhost/procward-test-tini      the same app under tini, for comparison
# CONTAINERS_CONF and CONTAINERS_STORAGE_CONF should point at the files next
# to this script (the test sets them).
set -euo pipefail
binary=$1
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { printf 'images: %s\n' "$*" >&2; }

# A root tree with busybox (sh, cp, sleep...) and an /etc/passwd.
tree=$work/root
mkdir -p "$tree"/{bin,etc,tmp,usr/bin,proc,dev,sys}
chmod 1777 "$tree/tmp"
cp /bin/busybox "$tree/bin/busybox"
for applet in $("$tree/bin/busybox" --list); do
    [ -e "$tree/bin/$applet" ] || ln -s busybox "$tree/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$tree/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$tree/etc/group"
env_path='ENV PATH=/usr/local/bin:/usr/bin:/bin'
step "podman import localhost/procward-test-busybox"
tar -C "$tree" -c . | podman import --quiet --change "$env_path" - localhost/procward-test-busybox >/dev/null

# The same tree plus node and the shared libraries it links.
node=$(readlink -f "$(command -v node)")
cp "$node" "$tree/usr/bin/node"
for lib in $(ldd "$node" | grep -o '/[^ ]*'); do
    mkdir -p "$tree$(dirname "$lib")"
    cp -L "$lib" "$tree$lib"
done
step "podman import localhost/procward-test-node ($(du -sh "$tree" | cut -f1))"
tar -C "$tree" -c . | podman import --quiet --change "$env_path" - localhost/procward-test-node >/dev/null

# The build stage of deploy/docker/Dockerfile, replaced by the static binary.
mkdir -p "$work/build"
cp "$binary" "$work/build/procward"
step "podman build deploy/docker/Dockerfile -> localhost/procward-test"
podman build --quiet --pull=never --build-context build="$work/build" \
    --build-arg BASE_IMAGE=localhost/procward-test-busybox \
    -f "$repo/deploy/docker/Dockerfile" -t localhost/procward-test "$repo" >/dev/null
step "podman build deploy/docker/Dockerfile.node-app -> localhost/procward-test-web"
podman build --quiet --pull=never --format docker \
    --build-arg PROCWARD_IMAGE=localhost/procward-test \
    --build-arg NODE_IMAGE=localhost/procward-test-node \
    -f "$repo/deploy/docker/Dockerfile.node-app" -t localhost/procward-test-web "$repo" >/dev/null

# The same app with tini as PID 1 instead (Debian's static tini).
mkdir -p "$work/tini/app"
cp "$(command -v tini-static)" "$work/tini/tini"
cp "$repo/examples/web/server.js" "$work/tini/app/server.js"
cat >"$work/tini/Containerfile" <<'DOCKERFILE'
FROM localhost/procward-test-node
COPY tini /usr/local/bin/tini
WORKDIR /app
COPY app/server.js .
ENV PORT=3000 HOST=0.0.0.0
ENTRYPOINT ["tini", "--"]
CMD ["node", "server.js"]
DOCKERFILE
step "podman build localhost/procward-test-tini"
podman build --quiet --pull=never -t localhost/procward-test-tini "$work/tini" >/dev/null

# The images these replace are left untagged: remove them, so the test
# storage does not grow with every run.
step "podman image prune (the replaced images)"
podman image prune --force >/dev/null
