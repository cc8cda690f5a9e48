#!/usr/bin/env bash
# The accelerator check, as one command for a GPU/TPU machine lent for minutes (< 8 min on a GPU):
# versions, then the quick sweep of benchmarks/accelerator.py (ResNet34 + fastai head, 224 px,
# bf16, batch 128 and 256, both phases; TTA and inference; JAX only), its JSON and log in OUTDIR,
# then a short table. Runs without TensorFlow (the pipeline rows are then left out).
#
#   benchmarks/device_check.sh OUTDIR                 # on the device
#   benchmarks/device_check.sh OUTDIR --smoke         # CPU rehearsal (tests/test_benchmarks.py)
#
# The image lacks ml_collections: its pure-Python wheel (77 KB) is imported from
# benchmarks/wheels/*.whl, fetched beforehand where an index is reachable (git ignores the
# folder; carry it along); TensorFlow and dm-pix are not needed:
#   pip download --no-deps -d benchmarks/wheels ml-collections==1.1.0
# Further arguments go to accelerator.py. PYTHON picks the interpreter (default python3).
set -euo pipefail

out=${1:?usage: benchmarks/device_check.sh OUTDIR [accelerator.py flags]}
shift
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
mkdir -p "$out"
for wheel in "$here"/wheels/*.whl; do
  if [ -e "$wheel" ]; then PYTHONPATH="$wheel${PYTHONPATH:+:$PYTHONPATH}"; fi
done
export PYTHONPATH=${PYTHONPATH:-}

"$python" "$here/device_versions.py" | tee "$out/versions.txt"
# Rows are saved as they come: past the time limit, the table shows those measured.
status=0
timeout 450 "$python" "$here/accelerator.py" --quick --frameworks jax \
  --json "$out/accelerator.json" "$@" 2>&1 | tee "$out/accelerator.txt" || status=$?
if [ -s "$out/accelerator.json" ]; then
  "$python" "$here/device_versions.py" --table "$out/accelerator.json"
fi
exit "$status"
