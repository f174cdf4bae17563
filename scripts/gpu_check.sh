#!/usr/bin/env bash
# What someone with a GPU runs first: versions and compute capability, the `cuda` tests, a short
# CIFAR-10-format run with resume, training throughput per precision, and, where Ray and the
# service are installed, 4 trials per GPU and serving on CUDA. Everything lands in one report.
#
#   bash scripts/gpu_check.sh [REPORT] [--no-throughput]   (default: benchmarks/results/gpu_check.md)
#
# --no-throughput: leave out the timings (when something else shares the GPU, they mislead).
#
# Without a GPU it runs what it can (versions, the skipped tests with their reason) and says so.
set -uo pipefail
cd "$(dirname "$0")/.."
REPORT=benchmarks/results/gpu_check.md
THROUGHPUT=1
for arg in "$@"; do  # in either order
    case $arg in
        --no-throughput) THROUGHPUT=0 ;;
        -*) echo "gpu_check.sh: unknown option $arg (usage: [REPORT] [--no-throughput])" >&2; exit 2 ;;
        *) [ -n "${report_set:-}" ] && { echo "gpu_check.sh: one REPORT, got $REPORT and $arg" >&2; exit 2; }
           REPORT=$arg; report_set=1 ;;
    esac
done
source scripts/gpu_env.sh
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname -- "$REPORT")"
echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)" > "$REPORT"

step() {  # step TITLE COMMAND...: run it, append its output and exit status to the report
    local title=$1 start=$SECONDS rc
    shift
    echo "[gpu_check] $title"
    printf '\n## %s\n\n```\n' "$title" >> "$REPORT"
    "$@" >> "$REPORT" 2>&1
    rc=$?
    printf '(exit %s, %s s)\n```\n' "$rc" "$((SECONDS - start))" >> "$REPORT"
}

has() { "$PY" -c "import $1" 2>/dev/null; }

step "versions" "$PY" - <<'PY'
import platform, torch
from ecab_tune.device import choose_precision, cuda_problem
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA build", torch.version.cuda)
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        d = torch.device("cuda", i)
        p = torch.cuda.get_device_properties(d)
        print(f"cuda:{i} {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB,"
              f" {p.multi_processor_count} SMs; cuDNN {torch.backends.cudnn.version()};"
              f" auto precision: {choose_precision(d)}")
else:
    print("no usable CUDA:", cuda_problem())
PY
command -v nvidia-smi >/dev/null && step "nvidia-smi" nvidia-smi

step "cuda tests" "$PY" -m pytest -q -rs -m cuda -p no:cacheprovider tests/test_cuda.py

if has_gpu; then
    # --resume continues a run as it was saved (more epochs would be another schedule): the
    # first run is killed once its first epoch's checkpoint is written, as a crash would.
    step "CIFAR-10-format run with resume (resnet20+ecab, 3 epochs, killed after the 1st)" bash -c "
        '$PY' tests/synthetic.py --cifar10 '$WORK/cifar' --per-batch 400 || exit 1
        '$PY' -m ecab_tune.train --dataset cifar10 --data-dir '$WORK/cifar' --attention ecab \
            --epochs 3 --device cuda --out '$WORK/run' & pid=\$!
        while [ ! -f '$WORK/run/meta.json' ] && kill -0 \$pid 2>/dev/null; do sleep 0.1; done
        kill -9 \$pid 2>/dev/null; wait \$pid
        [ -f '$WORK/run/meta.json' ] || exit 1
        '$PY' -m ecab_tune.train --data-dir '$WORK/cifar' --device cuda --out '$WORK/run' --resume"
    [ "$THROUGHPUT" = 1 ] && for attention in none se ecab; do
        for precision in fp32 bf16; do
            step "throughput resnet20+$attention, $precision" "$PY" benchmarks/throughput.py \
                --attention "$attention" --precision "$precision" --device cuda --steps 200 \
                --skip-reference
        done
    done
    if has ray && has optuna; then
        step "search: 4 trials per GPU (--gpus-per-trial 0.25), processes per GPU" bash -c "
            '$PY' -m ecab_tune.search --space quick --name gpu-check --storage '$WORK/runs' \
                --gpus-per-trial 0.25 --cpus-per-trial 1 --num-samples 8 --no-dashboard &
            pid=\$!; peak=0
            while kill -0 \$pid 2>/dev/null; do
                n=\$(nvidia-smi --query-compute-apps=pid --format=csv,noheader | wc -l)
                [ \"\$n\" -gt \"\$peak\" ] && peak=\$n; sleep 2
            done
            wait \$pid; echo \"peak processes on the GPU: \$peak\""
    else
        echo "[gpu_check] search skipped: ray/optuna not installed" | tee -a "$REPORT"
    fi
    if has fastapi; then
        step "serving on CUDA (real server, one image)" "$PY" -m pytest -q -rs -m cuda \
            -p no:cacheprovider tests/test_cuda.py -k serve
    else
        echo "[gpu_check] serving skipped: the service's packages are not installed" | tee -a "$REPORT"
    fi
else
    echo "[gpu_check] no usable GPU: CUDA runs skipped" | tee -a "$REPORT"
fi
echo "[gpu_check] report: $REPORT"
