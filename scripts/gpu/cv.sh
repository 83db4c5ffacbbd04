#!/usr/bin/env bash
# One GPU session: the training-throughput benchmark, then for each backbone in BACKBONES (default mobilenetv2;
# PRESET, default best) the fixed 3-fold patient-grouped cross-validation and the final model on both folds:
# four runs a backbone, all runs of all the backbones side by side on one GPU. Every run keeps its latest epoch
# (KEEP_EPOCH), as the final model must, so the folds' pooled out-of-fold predictions (training.crossval) are an
# honest evaluation of it; the final model is then calibrated on them and tested for how far it follows cell size
# (training.size_baseline), and training.compare tabulates the folds beside the cell-area baseline and the
# hand-made-statistics one (results/handcrafted-baseline/).
#
# Needs `prepared/` (python -m training.data prepare --data-dir PATH/C-NMC_Leukemia --output prepared) and,
# on a machine without them, wheels in .whl/ (scripts/gpu/env.sh lists them).
# IMG_SIZE overrides the backbone's input size (e.g. 128 for a CPU-sized run); TRAIN_ARGS adds training.train flags
# to every run (e.g. "--color-jitter 0.4 --hue 0.05", or "--no-zero-head" to repeat the runs before the zero head
# became the default on 2026-11-26).
# On a GPU each run decodes its training cells once into device memory (training.device_cache); TRAIN_ARGS=--device-cache
# does so on a CPU too. BENCH_WORKERS lists the benchmark's loader worker counts (default 8).
# EPOCHS, MAX_CELLS, WORKERS, BENCH_STEPS and BENCH_BACKBONES shrink it for a CPU smoke test; SKIP_BENCH=1 skips the
# benchmark and TRAIN_LIMIT caps each run's seconds (each run keeps its latest finished epoch). The device runs
# one command for at most 600 s, so the defaults keep the benchmark (at most 200 s), training and the ~40 s of
# evaluation and packing, plus ~15 s a backbone for the size test, under that; a longer schedule is cut short,
# before its cosine annealing ends.
# Results land in $OUT (default out/), packed in runs.tar.gz.
set -uo pipefail
OUT=${OUT:-out}
EPOCHS=${EPOCHS:-30}
TRAIN_LIMIT=${TRAIN_LIMIT:-$([ "${SKIP_BENCH:-0}" = 1 ] && echo 470 || echo 310)}
WORKERS=${WORKERS:-3}
BENCH_STEPS=${BENCH_STEPS:-25}
LIMIT=${MAX_CELLS:+--max-train-cells $MAX_CELLS --max-val-cells $MAX_CELLS}
SIZE=${IMG_SIZE:+--img-size $IMG_SIZE}
mkdir -p "$OUT/runs"
source scripts/gpu/env.sh

# MobileNetV2 is measured first and again last: its first row has read low on an H100 after the warm-up.
BENCH_BACKBONES=${BENCH_BACKBONES:-mobilenetv2 vgg19 inceptionv3 resnet101v2 mobilenetv2}
[ "${SKIP_BENCH:-0}" = 1 ] || timeout 200 python3 -m benchmarks.train_throughput --data-dir prepared --steps "$BENCH_STEPS" \
  --num-workers ${BENCH_WORKERS:-8} --backbones $BENCH_BACKBONES --output "$OUT/train_throughput.json" 2>&1 | grep -v Warning | tee "$OUT/bench.log"

BACKBONES=${BACKBONES:-mobilenetv2}
PRESET=${PRESET:-best}
start=$(date +%s)
for backbone in $BACKBONES; do
  common=(--backbone "$backbone" --data-dir prepared --no-pretrained --preset "$PRESET" --epochs "$EPOCHS"
          --num-workers "$WORKERS" --mixed-precision bf16 --no-verify --keep-epoch "${KEEP_EPOCH:-latest}" $LIMIT $SIZE ${TRAIN_ARGS:-})
  for k in 0 1 2; do
    timeout "$TRAIN_LIMIT" python3 -m training.train "${common[@]}" --cv-split splits/cnmc_cv3_seed0.json \
      --cv-fold $k --output-dir "$OUT/runs/$backbone-$PRESET-cv$k" > "$OUT/$backbone-cv$k.log" 2>&1 &
  done
  timeout "$TRAIN_LIMIT" python3 -m training.train "${common[@]}" --train-folds fold_0 fold_1 --val-folds \
    --output-dir "$OUT/runs/$backbone-$PRESET-all" > "$OUT/$backbone-all.log" 2>&1 &
done
wait
echo "training wall time: $(( $(date +%s) - start )) s"
for backbone in $BACKBONES; do
  for log in "$OUT/$backbone"-cv*.log "$OUT/$backbone-all.log"; do
    echo "== $log"; tr '\r' '\n' < "$log" | grep -E "^epoch|rror" | tail -3
  done
  runs="$OUT/runs/$backbone-$PRESET"
  python3 -m training.crossval "$runs"-cv0 "$runs"-cv1 "$runs"-cv2 --model-dir "$runs-all/model" 2>&1 | grep -v Warning \
    && python3 -m training.calibrate --predictions "$runs-all/eval_predictions.csv" --model-dir "$runs-all/model" \
    && python3 -m training.size_baseline --data-dir prepared --cv-split splits/cnmc_cv3_seed0.json --num-proc 4 \
      --output "$OUT/runs/size-baseline" --predictions "$runs-all/eval_predictions.csv" 2>&1 | grep -v "Warning\|Measuring"
done
python3 -m training.compare "$OUT"/runs/*-cv[012] --output "$OUT/runs/compare" \
  --baseline "$OUT/runs/size-baseline/eval.json" results/handcrafted-baseline/eval.json 2>&1 | grep -v Warning
# Keep results and the shipped weights (SHIP, default mobilenetv2), packed in one archive (the device returns
# few files, shallow); drop checkpoints, the cross-validation weights and the other final models' weights, which
# are too large to bring back or commit.
rm -rf "$OUT"/runs/*/checkpoints "$OUT"/runs/*-cv*/model
for final in "$OUT"/runs/*-all; do
  [ "$(basename "$final")" = "${SHIP:-mobilenetv2}-$PRESET-all" ] || rm -f "$final/model/model.safetensors"
done
tar -czf "$OUT/runs.tar.gz" -C "$OUT" runs && rm -rf "$OUT/runs"
