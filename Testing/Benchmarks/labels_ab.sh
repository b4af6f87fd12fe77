#!/usr/bin/env bash
# Label-head targets compared on one GPU, one run at a time:
#   Testing/Benchmarks/labels_ab.sh OUTDIR "VARIANT=--set ..." ...
# Each variant runs bench_labels.py on the dev cases (dense k = 2, 4; sparse every 3rd / 5th).
set -uo pipefail
out=$1; shift
mkdir -p "$out"
root=$(cd "$(dirname "$0")/../.." && pwd)
for spec in "$@"; do
  name=${spec%%=*}; sets=${spec#*=}
  for job in "ct_aorta --k 2 4" "ct_abdomen3mm --k 2 4" "mr_tumor1 --k 2 4" "ct_abdomen3mm --k 3 5 --sparse" "ct_aorta --k 3 5 --sparse" "mr_brainfs --k 2"; do
    tag=$(echo "$job" | tr -d ' -' )
    timeout -k 5 240 python3 "$root/Testing/Benchmarks/bench_labels.py" --case $job --device cuda $sets \
      --json "$out/${name}_${tag}.json" > "$out/${name}_${tag}.log" 2>&1
    echo "$name $job rc=$?"; grep '^|' "$out/${name}_${tag}.log"
  done
done
