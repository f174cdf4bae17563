# Sourced by the scripts/gpu_*.sh scripts from the repository root: the Python to use (PYTHON,
# else .venv's, else python3) with the checkout on its path and unbuffered output; `say`, a line
# stamped with the script's name and seconds since the start; `has_gpu`, whether torch sees
# CUDA; `require_gpu`, which names the card or ends the script (exit 1) where there is none.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1  # installed or not
T0=$SECONDS
say() { echo "[$(basename "$0" .sh) +$((SECONDS - T0))s] $*"; }
has_gpu() { "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; }
require_gpu() {
    has_gpu || { say "no usable GPU: nothing to do"; exit 1; }
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
}
