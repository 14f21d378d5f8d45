#!/usr/bin/env bash
# The local Debian base every offline image starts from (DESIGN §8: no image registry is reachable):
# a bookworm minbase root filesystem with python3 + python3-yaml, made with debootstrap (~1 min) and
# imported as $BASE_IMAGE. Cached in the engine: a no-op when the image is already there.
# Sourced by build-runtime-image.sh and build-server-image.sh, which share the one base.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-molecule/debian-python:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

ensure_base_image() {
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
  command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  local rootfs
  rootfs=$(mktemp -d /tmp/ws-rootfs.XXXXXX)
  # shellcheck disable=SC2064  # expand now: the local is gone when the trap runs
  trap "rm -rf '$rootfs'" EXIT
  echo "==> debootstrap bookworm (minbase + python3) into $rootfs"
  debootstrap --variant=minbase --include=python3,python3-yaml,ca-certificates bookworm "$rootfs" "$MIRROR" \
    >/tmp/ws-debootstrap.log 2>&1 || { tail -20 /tmp/ws-debootstrap.log; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  echo "==> importing $BASE_IMAGE"
  tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null
}
