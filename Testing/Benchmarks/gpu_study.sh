#!/usr/bin/env bash
# The GPU part of the settings and label studies (issues 5 and 7), in one call on one GPU.
#   Testing/Benchmarks/gpu_study.sh OUTDIR [SECONDS]
# Runs side by side (one run alone leaves most of the GPU idle, so the times in these reports
# are not speeds; bench_speed.py measures speed):
#   - `medgs eval` with MedGS only (default fast preset), each case and k = 2, 3, 4 on its own;
#   - the mask-loss comparison on ct_aorta (L1 is the eval rows; L1 + Dice; binary CE);
#   - sparse annotation (labels on every 3rd / 5th slice, the image on all) on two CTs.
# Classical methods need no GPU; study_table.py merges their `medgs eval` reports with these.
# Cases come from .dev/data (made by make_gpu_data.py): NIfTI copies cropped to (n-1)//12*12+1
# slices, the protocol's common length for k = 2, 3, 4, so that each k alone scores the same slices.
set -uo pipefail
out=$1; limit=${2:-420}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/../.." && pwd)
data=$root/.dev/data
bench="python3 $root/Testing/Benchmarks/bench_labels.py --device cuda"
export OMP_NUM_THREADS=2
run() { local name=$1; shift; timeout -k 5 "$limit" "$@" > "$out/$name.log" 2>&1; echo "$name rc=$?" >> "$out/status.txt"; }
for case in ct_abdomen3mm ct_aorta mr_tumor1 mr_brainfs; do
  for k in 2 3 4; do
    run "eval_${case}_k$k" python3 -m MedGSLib eval "$data/${case}_image.nii.gz" --labels "$data/${case}_labels.nii.gz" \
      --k $k --methods medgs --label-methods medgs --device cuda --no-progress -o "$out/eval_${case}_k$k" --overwrite &
  done
done
run loss_l1dice_ct_aorta $bench --case ct_aorta --k 2 4 --set loss.seg_dice=1.0 --json "$out/loss_l1dice_ct_aorta.json" &
run loss_bce_ct_aorta $bench --case ct_aorta --k 2 4 --set loss.seg_l1=0.0 loss.seg_bce=1.0 --json "$out/loss_bce_ct_aorta.json" &
for case in ct_aorta ct_abdomen3mm; do
  run "sparse_$case" $bench --case $case --k 3 5 --sparse --json "$out/sparse_$case.json" &
done
wait
