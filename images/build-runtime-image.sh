#!/usr/bin/env bash
# Build molecule/workspace-agent:latest with no image registry (DESIGN §8):
#   1. the local Debian base molecule/debian-python:bookworm (base-image.sh: debootstrap, ~1 min, cached);
#   2. the agent layered on top with `docker build` from that local base (Dockerfile.offline).
# Where a registry is reachable, `docker build -f images/Dockerfile .` builds the same image from python:slim.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=images/base-image.sh
. images/base-image.sh

IMAGE=${IMAGE:-molecule/workspace-agent:latest}

ensure_base_image

echo "==> building $IMAGE"
docker build -q -f images/Dockerfile.offline --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$IMAGE" . >/dev/null
docker image inspect "$IMAGE" --format '{{.Id}} {{.Size}}'
