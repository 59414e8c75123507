#!/usr/bin/env bash
# The prepared GPU check: one script, about 8 minutes on one H100, everything in
# benchmarks/results/gpu_check.json + gpu_check.log (see benchmarks/README.md).
#
#   here, with the package registry:  bash benchmarks/gpu_prepare.sh   -> benchmarks/carry/ (git-ignored)
#   on the GPU machine:               bash benchmarks/gpu_check.sh     (run tool: carry ["benchmarks/carry"])
#   without a GPU (CI):               bash benchmarks/gpu_check.sh --dry-run --out DIR --work DIR
#
# When nnU-Net and nnunet-dsmm are not importable (the GPU machine has Python, torch, numpy, scipy,
# scikit-image, matplotlib and pandas only), the carried packages are unpacked into a temporary
# site folder that every Python process of the check (nnU-Net's workers included) adds at start-up.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CARRY=benchmarks/carry/gpu_site.tar.xz
if ! "$PYTHON" -c "import nnunetv2, nnunet_dsmm.cli.main" >/dev/null 2>&1; then
  if [ ! -f "$CARRY" ]; then
    echo "gpu_check: nnU-Net is not importable and $CARRY is missing; run benchmarks/gpu_prepare.sh first" >&2
    exit 2
  fi
  SITE=$(mktemp -d "${TMPDIR:-/tmp}/dsmm_site.XXXXXX")
  tar -xJf "$CARRY" -C "$SITE"
  mkdir -p "$SITE/boot"
  printf 'import site\nsite.addsitedir(%s)\n' "'$SITE/site'" > "$SITE/boot/sitecustomize.py"
  export PYTHONPATH="$SITE/boot${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
  "$PYTHON" -c "import nnunetv2, nnunet_dsmm.cli.main" || { echo "gpu_check: the carried packages do not import" >&2; exit 2; }
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
