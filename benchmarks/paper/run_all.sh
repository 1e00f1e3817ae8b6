#!/usr/bin/env bash
# Regenerate every figure and per-experiment page of the paper reproductions.
# Run from anywhere; each script takes 10 s to 3 min on 2 cores (4 to 6 min
# in all) and writes figures/<name>.png and results/<name>.md here.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OPENBLAS_NUM_THREADS=1
python=${PYTHON:-python}
for script in gop_full gop_kronecker spd_optimisation gradient_free cayley_training; do
    echo "== $script"
    "$python" "benchmarks/paper/$script.py" >/dev/null
done
