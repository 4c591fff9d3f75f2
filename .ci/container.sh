#!/usr/bin/env bash
# CI: builds the `front` image (Containerfile) on a Debian base made here with debootstrap (no registry is
# reachable), then runs tests/test_container.py against it: /health, one page over /api/ocr through the stand-in
# vLLM server, the HEALTHCHECK, the /data volume, and a drain and exit 0 on `podman stop`. Run as root.
#
# Kept between runs: the base image (localhost/deepseek-ocr-base:bookworm) and podman's layer cache, so a second
# run rebuilds only what changed. Environment: DEBIAN_MIRROR (debootstrap's mirror), PIP_CA_BUNDLE (the CA bundle
# given to the build as its `ca` secret; default: what pip and requests here are told to trust, else Debian's bundle).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BASE_IMAGE=localhost/deepseek-ocr-base:bookworm
IMAGE=localhost/deepseek-ocr-front:ci
CI_LABEL=io.github.deepseek-ocr-service.ci=container-test  # tests/test_container.py labels its containers so
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Podman's runtime and ulimits for these machines (see the file).
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/containers.conf}

step() { echo "container.sh: $*"; }
elapsed() { echo "$(($(date +%s) - $1)) s"; }
started=$(date +%s)

rootfs=
cleanup() {
  # Whatever happened: no container of the tests left running, no half-made base left on disk.
  # (podman logs that it cannot reach systemd to remove a healthcheck timer: these machines have no systemd.)
  podman ps --all --quiet --filter "label=$CI_LABEL" | xargs --no-run-if-empty podman rm --force --volumes --time 0 \
    >/dev/null 2>&1 || true
  [[ -n $rootfs ]] && rm -rf "$rootfs"
  return 0
}
trap cleanup EXIT

missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if podman image exists "$BASE_IMAGE"; then
  step "base image $BASE_IMAGE: kept from an earlier run"
else
  step "base image $BASE_IMAGE: debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR"
  phase=$(date +%s)
  rootfs=$(mktemp -d /var/tmp/deepseek-ocr-base.XXXXXX)
  timeout 900 debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >/dev/null
  # Security updates too; no package cache or lists in the image (the Containerfile's apt-get update fetches them).
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar --numeric-owner -C "$rootfs" -c . | timeout 300 podman import --quiet - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  rootfs=
  step "base image made in $(elapsed "$phase")"
fi

# pip inside the build must trust what this machine's pip trusts (a TLS-intercepting proxy's CA, if any); Debian's
# bundle holds the CAs installed here (update-ca-certificates) besides the public ones, so it is the last resort.
ca=${PIP_CA_BUNDLE:-${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}}}
[[ -z $ca ]] && ca=$(pip3 config get global.cert 2>/dev/null || true)
[[ -z $ca ]] && ca=/etc/ssl/certs/ca-certificates.crt
secret=()
if [[ -n $ca && -f $ca ]]; then
  step "CA bundle for pip in the build: $ca (a build secret, not stored in the image)"
  secret=(--secret "id=ca,src=$ca")
fi

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' dsocr/__init__.py)
source_url=$(git config --get remote.origin.url 2>/dev/null || true)
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
step "building $IMAGE (target front, version $version) on $BASE_IMAGE"
phase=$(date +%s)
# --format docker: the OCI format has no HEALTHCHECK, and podman would drop it.
timeout 1200 podman build --format docker --target front \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$version" --build-arg "SOURCE=$source_url" \
  "${secret[@]}" --tag "$IMAGE" .
step "image built in $(elapsed "$phase")"
current=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [[ -n $previous && $previous != "$current" ]]; then
  podman rmi "$previous" >/dev/null 2>&1 || true  # the last run's image, now untagged; its layers stay cached
fi

step "running tests/test_container.py against $IMAGE"
phase=$(date +%s)
DSOCR_TEST_IMAGE=$IMAGE timeout 600 ./start.sh test -v -p no:cacheprovider tests/test_container.py
step "image checked in $(elapsed "$phase"); $(elapsed "$started") in all"
