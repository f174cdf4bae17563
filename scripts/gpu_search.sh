#!/usr/bin/env bash
# A search on a GPU for a fixed time slot (a lent machine, a spot instance): where runs/<name> is
# absent it is restored from the committed snapshot, the search resumes with GPUS_PER_TRIAL of
# the GPU per trial (AMP and channels_last, as on any CUDA trial), and SIGTERM stops it at the
# deadline, which makes it write its snapshot again. Into OUT go the log and the snapshot
# (snapshot.tgz.*, 15 MB pieces) to carry back and commit or resume elsewhere.
#
#   bash scripts/gpu_search.sh OUT SECONDS GPUS_PER_TRIAL NAME    (e.g. OUT 480 0.25 my-search)
#
# The snapshot is benchmarks/state/<name>. Set DATA_DIR where the dataset is not under data/
# (a resumed search takes --data-dir: the data may move, the rest of the search may not).
set -uo pipefail
cd "$(dirname "$0")/.."
USAGE="usage: gpu_search.sh OUT SECONDS GPUS_PER_TRIAL NAME"
OUT=${1:?$USAGE}
SLOT=${2:?$USAGE}
GPUS=${3:?$USAGE}
NAME=${4:?$USAGE}
SNAPSHOT=benchmarks/state/$NAME
source scripts/gpu_env.sh
mkdir -p "$OUT"
[ "$GPUS" = 0 ] || require_gpu

say "search $NAME: $GPUS GPU per trial, until +${SLOT}s"
"$PY" -m ecab_tune.search --name "$NAME" --snapshot "$SNAPSHOT" --resume \
    --gpus-per-trial "$GPUS" --no-dashboard ${DATA_DIR:+--data-dir "$DATA_DIR"} \
    > "$OUT/search.log" 2>&1 &
RUN=$!
while kill -0 "$RUN" 2>/dev/null && [ $((SECONDS - T0)) -lt "$SLOT" ]; do sleep 2; done
kill -TERM "$RUN" 2>/dev/null
wait "$RUN"
say "search exit $? (0: it ended; 143: stopped at the deadline, resumable)"
tail -n 3 "$OUT/search.log"
tar czf - "$SNAPSHOT" | split -b 15m - "$OUT/snapshot.tgz."
ls -la "$OUT"
