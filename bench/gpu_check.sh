#!/usr/bin/env bash
# The engine's GPU checks in one go, for the device machine (or any CUDA machine
# with the project installed): every Kernels combination against the fp32 eager
# reference (pytest -m gpu), the default path's step profile, and the benchmark
# of the default and eager paths. Logs go to $OUT (the device tool's folder) or
# to bench/results/gpu-check-<date>/.
#   bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results/gpu-check-$(date +%F)}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pytest -q -p no:cacheprovider -m gpu tests/engine 2>&1 | tee "$out/gpu-suite.log"
suite=$?
python3 -m bench.step_profile 2>&1 | grep '^{' | tee "$out/step-profile.log"
python3 -m bench.engine --paths ours_compiled_graphs ours_eager --runs 5 --out "$out" 2>&1 \
    | grep -E '"event": "(setup|engine|result|step|equivalence)' | tee "$out/engine.log"
exit "$suite"
