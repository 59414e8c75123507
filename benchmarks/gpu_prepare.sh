#!/usr/bin/env bash
# Build benchmarks/carry/gpu_site.tar.xz for the GPU check: the wheels of benchmarks/gpu_carry.txt for
# the GPU machine's Python (default 3.12, x86_64 Linux) and nnunet-dsmm's own wheel of this working
# tree, unpacked into one site folder with their console scripts, packed with xz (SimpleITK's 53 MB
# wheel packs to about 28 MB). Needs the package registry; the GPU machine does not.
#   bash benchmarks/gpu_prepare.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION=${1:-3.12}
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
for requirement in $(grep -v '^#' benchmarks/gpu_carry.txt); do
  # a wheel for the GPU machine's Python and platform, or (pure-Python packages published as source
  # only) a wheel built here
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
      -d "$STAGE/wheels" "$requirement" 2>/dev/null \
    || python3 -m pip wheel -q --no-deps -w "$STAGE/wheels" "$requirement"
done
# nnunet-dsmm from a copy of the working tree, so that the build leaves no egg-info here (an egg-info in
# the repository root would shadow the installed entry points for every Python started there)
mkdir "$STAGE/src"
tar --exclude=./.venv --exclude=./.git --exclude=./benchmarks/carry -cf - . | tar -xf - -C "$STAGE/src"
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$STAGE/wheels" "$STAGE/src"
python3 benchmarks/gpu_carry.py "$STAGE/wheels" "$STAGE/out"
mkdir -p benchmarks/carry
tar -cf - -C "$STAGE/out" site bin | xz -9 -T0 > benchmarks/carry/gpu_site.tar.xz.partial
mv benchmarks/carry/gpu_site.tar.xz.partial benchmarks/carry/gpu_site.tar.xz
ls -l benchmarks/carry/gpu_site.tar.xz
