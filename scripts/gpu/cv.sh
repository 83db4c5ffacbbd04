#!/usr/bin/env bash
# One GPU session: the training-throughput benchmark, then one backbone (BACKBONE, default mobilenetv2; PRESET,
# default best) on the fixed 3-fold patient-grouped cross-validation, and the shipped model on both folds, all
# four runs side by side on one GPU. Every run keeps its latest epoch (KEEP_EPOCH), as the final model must, so
# the folds' pooled out-of-fold predictions (training.crossval) are an honest evaluation of it; the final model
# is then calibrated on them, and training.compare tabulates the folds.
#
# Needs `prepared/` (python -m training.data prepare --data-dir PATH/C-NMC_Leukemia --output prepared) and,
# on a machine without them, wheels in .whl/ (datasets, evaluate, timm, dill, multiprocess).
# EPOCHS, MAX_CELLS, WORKERS and BENCH_STEPS shrink it for a CPU smoke test; SKIP_BENCH=1 skips the
# benchmark and TRAIN_LIMIT caps each run's seconds (a run's best epoch so far is kept). Results land in $OUT (default out/).
set -uo pipefail
OUT=${OUT:-out}
EPOCHS=${EPOCHS:-40}
WORKERS=${WORKERS:-3}
BENCH_STEPS=${BENCH_STEPS:-25}
LIMIT=${MAX_CELLS:+--max-train-cells $MAX_CELLS --max-val-cells $MAX_CELLS}
mkdir -p "$OUT/runs"
if ! python3 -c "import datasets, evaluate" 2>/dev/null; then
  rm -rf /tmp/site && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import torch, timm, datasets, evaluate, accelerate, transformers; print('torch', torch.__version__, \
'timm', timm.__version__, 'datasets', datasets.__version__, 'accelerate', accelerate.__version__, \
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())" || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null

[ "${SKIP_BENCH:-0}" = 1 ] || timeout 200 python3 -m benchmarks.train_throughput --data-dir prepared --steps "$BENCH_STEPS" \
  --output "$OUT/train_throughput.json" 2>&1 | grep -v Warning | tee "$OUT/bench.log"

BACKBONE=${BACKBONE:-mobilenetv2}
PRESET=${PRESET:-best}
COMMON=(--backbone "$BACKBONE" --data-dir prepared --no-pretrained --preset "$PRESET" --epochs "$EPOCHS"
        --num-workers "$WORKERS" --mixed-precision bf16 --no-verify --keep-epoch "${KEEP_EPOCH:-latest}" $LIMIT)
start=$(date +%s)
for k in 0 1 2; do
  timeout "${TRAIN_LIMIT:-900}" python3 -m training.train "${COMMON[@]}" --cv-split splits/cnmc_cv3_seed0.json --cv-fold $k \
    --output-dir "$OUT/runs/$BACKBONE-$PRESET-cv$k" > "$OUT/cv$k.log" 2>&1 &
done
timeout "${TRAIN_LIMIT:-900}" python3 -m training.train "${COMMON[@]}" --train-folds fold_0 fold_1 --val-folds \
  --output-dir "$OUT/runs/$BACKBONE-$PRESET-all" > "$OUT/all.log" 2>&1 &
wait
echo "training wall time: $(( $(date +%s) - start )) s"
for log in "$OUT"/cv*.log "$OUT"/all.log; do echo "== $log"; tr '\r' '\n' < "$log" | grep -E "^epoch|rror" | tail -3; done
RUNS="$OUT/runs/$BACKBONE-$PRESET"
python3 -m training.crossval "$RUNS"-cv0 "$RUNS"-cv1 "$RUNS"-cv2 --model-dir "$RUNS-all/model" 2>&1 | grep -v Warning \
  && python3 -m training.calibrate --predictions "$RUNS-all/eval_predictions.csv" --model-dir "$RUNS-all/model"
python3 -m training.compare "$RUNS"-cv0 "$RUNS"-cv1 "$RUNS"-cv2 --output "$RUNS-compare" 2>&1 | grep -v Warning
# Keep results and the shipped weights, packed in one archive (the device returns few files, shallow);
# drop checkpoints and the cross-validation weights.
rm -rf "$OUT"/runs/*/checkpoints "$OUT"/runs/*-cv*/model
tar -czf "$OUT/runs.tar.gz" -C "$OUT" runs && rm -rf "$OUT/runs"
