#!/usr/bin/env bash
# Build molecule/workspace-server:latest (the control plane itself) with no image registry (DESIGN §8):
#   1. the same local Debian base as the agent image (base-image.sh: debootstrap, ~1 min, cached);
#   2. a wheelhouse of the server's dependencies, downloaded here with this machine's pip (its index and
#      certificate settings apply; a build container would have neither) into .cache/server-wheels, and
#      fetched again only when pyproject.toml's dependency list changes;
#   3. images/server/Dockerfile on top: Debian's python3-venv and git, the wheelhouse installed into a
#      venv with no index (a layer keyed on the wheels alone), then the server package itself.
# Docker's layer cache makes a rebuild with unchanged dependencies take seconds: only the source layers
# are redone. NO_CACHE=1 forces the cold path for the image (the wheelhouse stays).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=images/base-image.sh
. images/base-image.sh

IMAGE=${SERVER_IMAGE:-molecule/workspace-server:latest}
PY=${PYTHON:-.venv/bin/python}
WHEELS=.cache/server-wheels  # inside the build context; .gitignore'd

ensure_base_image

# The wheels must suit the image's python3 (Debian bookworm: CPython 3.11.2, glibc 2.36), so the host's
# interpreter must be a 3.11 too; binary wheels only, so nothing is compiled in the image. pip judges
# environment markers by the host's interpreter, not the image's: what 3.11.2 needs beyond a later 3.11
# is listed by hand (redis wants async-timeout below 3.11.3).
reqs=$("$PY" - <<'PY'
import sys, tomllib
if sys.version_info[:2] != (3, 11):
    sys.exit(f"build-server-image: need CPython 3.11 to fetch wheels for bookworm's python3, not {sys.version}")
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print("\n".join([*deps, "async-timeout>=4.0.3", "setuptools>=68", "wheel"]))
PY
)
sum=$(printf '%s\n' "$reqs" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$WHEELS/.requirements.sha256" 2>/dev/null)" != "$sum" ]; then
  echo "==> downloading the server's dependencies into $WHEELS"
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  printf '%s\n' "$reqs" >"$WHEELS/requirements.txt"
  # (this machine's pip config may name local indexes that are absent: drop pip's notes about those)
  "$PY" -m pip download -q --only-binary=:all: -d "$WHEELS" -r "$WHEELS/requirements.txt" \
    2> >(grep -v "is ignored: it is neither" >&2)
  echo "$sum" >"$WHEELS/.requirements.sha256"
fi

echo "==> building $IMAGE"
args=(-q -f images/server/Dockerfile --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$IMAGE")
[ -n "${NO_CACHE:-}" ] && args+=(--no-cache)
docker build "${args[@]}" . >/dev/null
docker image inspect "$IMAGE" --format '{{.Id}} {{.Size}}'
