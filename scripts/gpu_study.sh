#!/usr/bin/env bash
# The study on a GPU for a fixed time slot (a lent machine, a spot instance): the graphed `cuda`
# tests (they decide --cuda-graphs), one run alone vs JOBS processes vs JOBS streams side by side
# (benchmarks/sharing.py, which decides how the runs share the GPU), then the study's runs
# until the slot ends, every `cuda` test running beside them. SIGTERM stops the study at the
# deadline: runs in flight keep their last epoch.
# Into OUT go runs.jsonl (as each run finishes), the log and, at the end, the partial
# checkpoints (partial.tgz.*, 15 MB pieces) to carry back and resume elsewhere. SECONDS counts
# from the script's start: leave a minute of the call's limit for the stop and the packing.
#
#   bash scripts/gpu_study.sh OUT [SECONDS=540] [JOBS=3] [STUDY=studies/fmnist-resnet20.yaml] [ARGS...]
#
# ARGS go to `compare` as they are (not --out: the results are read from the study's folder):
# `--only main` spends a short slot on runs that can finish rather than on the 120-epoch
# convergence run (the spec's order is longest first); `--only-seeds 0 1 2 3` leaves the last
# seed to a CPU that trains it meanwhile (each seed's paired runs stay on one device).
# The working tree must hold the study's committed runs.jsonl (else finished runs train again)
# and, to resume them, runs/study-partial/<study>/. Set DATA_DIR where the dataset is elsewhere.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: gpu_study.sh OUT [SECONDS] [JOBS] [STUDY] [ARGS...]}
SLOT=${2:-540}
# Runs at once share one GPU's throughput (about 30,000 training img/s on an H100 or H200):
# 3 finish 60-epoch runs in about 330 s, what a 540 s slot leaves after its tests; 8 finish none.
JOBS=${3:-3}
STUDY=${4:-studies/fmnist-resnet20.yaml}
shift $(($# < 4 ? $# : 4))
source scripts/gpu_env.sh
mkdir -p "$OUT"
require_gpu

CUDA_TESTS=("$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py)
GRAPHS=--cuda-graphs
timeout 120 "${CUDA_TESTS[@]}" -k graphed > "$OUT/graphed_tests.txt" 2>&1 \
    || { GRAPHS=; say "graphed tests failed: the study runs eager"; }
STREAMS=
if [ -n "$GRAPHS" ]; then
    timeout 150 "$PY" benchmarks/sharing.py --jobs "$JOBS" --steps 300 2>&1 | tee "$OUT/sharing.txt"
    case $(sed -n 's/^best: //p' "$OUT/sharing.txt") in
        # Processes only take turns on a GPU: where one alone trains faster, run one at a time.
        alone) JOBS=1 ;;
        threads) timeout 120 "${CUDA_TESTS[@]}" -k streams > "$OUT/streams_tests.txt" 2>&1 \
            && STREAMS=--streams ;;
    esac
fi
NAME=$("$PY" -c "from ecab_tune.study.spec import load_spec; print(load_spec('$STUDY').name)")
RESULTS=benchmarks/results/$NAME/runs.jsonl
say "study: ${GRAPHS:-eager} ${STREAMS:-processes}, $JOBS at once, until +${SLOT}s"
"$PY" -m ecab_tune.compare "$STUDY" --jobs "$JOBS" --device cuda \
    $GRAPHS $STREAMS ${DATA_DIR:+--data-dir "$DATA_DIR"} "$@" > "$OUT/study.log" 2>&1 &
RUN=$!
# Every cuda test, beside the study (they check results, not speed): the GPU is not left idle.
timeout 300 "${CUDA_TESTS[@]}" > "$OUT/cuda_tests.txt" 2>&1 &
# Each finished run reaches OUT as it lands: a call cut off at its limit still returns them.
while kill -0 "$RUN" 2>/dev/null && [ $((SECONDS - T0)) -lt "$SLOT" ]; do
    sleep 2
    [ ! -f "$RESULTS" ] || cmp -s "$RESULTS" "$OUT/runs.jsonl" || cp "$RESULTS" "$OUT/"
done
kill -TERM "$RUN" 2>/dev/null
wait "$RUN"
say "study exit $? ($(grep -c '^\[study\] [0-9]' "$OUT/study.log") runs finished)"
wait
say "cuda tests: $(tail -1 "$OUT/cuda_tests.txt")"
cp "$RESULTS" "$OUT/" 2>/dev/null
tar czf - "runs/study-partial/$NAME" 2>/dev/null | split -b 15m - "$OUT/partial.tgz."
ls -la "$OUT"
