#!/usr/bin/env bash
# Build molecule/workspace-agent:latest with no image registry (DESIGN §8):
#   1. a Debian bookworm minbase root filesystem with python3 + python3-yaml (debootstrap, ~1 min, cached
#      as the local image molecule/debian-python:bookworm);
#   2. the agent layered on top with `docker build` from that local base (Dockerfile.offline).
# Where a registry is reachable, `docker build -f images/Dockerfile .` builds the same image from python:slim.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-molecule/debian-python:bookworm}
IMAGE=${IMAGE:-molecule/workspace-agent:latest}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  rootfs=$(mktemp -d /tmp/ws-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "==> debootstrap bookworm (minbase + python3) into $rootfs"
  debootstrap --variant=minbase --include=python3,python3-yaml,ca-certificates bookworm "$rootfs" "$MIRROR" \
    >/tmp/ws-debootstrap.log 2>&1 || { tail -20 /tmp/ws-debootstrap.log; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  echo "==> importing $BASE_IMAGE"
  tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null
fi

echo "==> building $IMAGE"
docker build -q -f images/Dockerfile.offline --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$IMAGE" . >/dev/null
docker image inspect "$IMAGE" --format '{{.Id}} {{.Size}}'
