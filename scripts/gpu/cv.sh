#!/usr/bin/env bash
# A training campaign on a lent GPU machine: the throughput benchmark (unless SKIP_BENCH=1), then
# `python -m training.pipeline` with this script's arguments (backbones, preset, epochs, --time-limit, ...), then
# the results packed for the trip back: the device returns few, shallow files, so everything goes into one archive,
# without checkpoints, the folds' weights, or the final weights of any backbone but those in SHIP (default: all).
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
for final in "$OUT"/runs/*-all; do
  [ -z "${SHIP:-}" ] || [[ " $SHIP " == *" $(basename "$final" | cut -d- -f1) "* ]] || rm -f "$final/model/model.safetensors"
done
tar -czf "$OUT/runs.tar.gz" -C "$OUT" runs && rm -rf "$OUT/runs"
exit "$status"
