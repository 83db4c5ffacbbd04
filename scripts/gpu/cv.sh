#!/usr/bin/env bash
# A training campaign on a lent GPU machine: the throughput benchmark (unless SKIP_BENCH=1), then
# `python -m training.pipeline` with this script's arguments (backbones, preset, epochs, --time-limit, ...), then
# the results packed for the trip back: the device returns at most 8 files of 16 MiB (64 MiB in all), so everything
# goes into one archive, without checkpoints or the folds' weights. Only the final weights of the backbones in SHIP
# (default: mobilenetv2, 4.5 MB in fp16) travel in it; the others wait in weights/BACKBONE.safetensors on the
# machine, for later calls to bring back in pieces (split -b 15M into $OUT) while it stays warm.
#   bash scripts/gpu/cv.sh --backbones mobilenetv2 inceptionv3 --preset cellnorm --epochs 30 --time-limit 420
# Needs prepared/ and, where the machine's image lacks the Hugging Face libraries, their wheels in .whl/ (env.sh).
set -uo pipefail
OUT=${OUT:-out}
source scripts/gpu/env.sh
# MobileNetV2 is measured first and again last: its first row has read low on an H100 after the warm-up.
[ "${SKIP_BENCH:-0}" = 1 ] || timeout 200 python3 -m benchmarks.train_throughput --data-dir prepared --steps 25 \
  --num-workers 8 --backbones mobilenetv2 vgg19 inceptionv3 resnet101v2 mobilenetv2 \
  --output "$OUT/train_throughput.json" 2>&1 | grep -v Warning | tee "$OUT/bench.log"
python3 -m training.pipeline --data-dir prepared --output "$OUT/runs" "$@" 2>&1 | grep -v Warning
status=${PIPESTATUS[0]}
rm -rf "$OUT"/runs/*/checkpoints "$OUT"/runs/*-cv[0-9]/model
mkdir -p weights
for final in "$OUT"/runs/*-all; do
  backbone=$(basename "$final" | cut -d- -f1)
  [[ " ${SHIP:-mobilenetv2} " == *" $backbone "* ]] || mv "$final/model/model.safetensors" "weights/$backbone.safetensors"
done
tar -czf "$OUT/runs.tar.gz" -C "$OUT" runs && rm -rf "$OUT/runs"
exit "$status"
