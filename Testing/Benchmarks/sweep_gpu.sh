#!/bin/bash
# Settings study on one GPU (256 x 256 x 128 resampled cases, every 2nd slice kept).
# Usage: OUT=folder bash Testing/Benchmarks/sweep_gpu.sh   (each line writes OUT/<name>.json)
# The committed results/sweep_*.json came from the fast preset of that time, whose in-between
# targets were the linear blend; the fast preset now uses motion-compensated targets (flow.py).
B="python3 Testing/Benchmarks/bench_speed.py --size 128 256 256 --keep 2 --device cuda"
run() { name=$1; shift; timeout 90 $B "$@" --json "$OUT/$name.json" 2>&1 | tail -1; }
run aorta_fast --case ct_aorta
run aorta_noearly3k --case ct_aorta --iterations 3000 --set schedule.early_stop_db=0.0
run aorta_noibfr --case ct_aorta --set loss.ibfr=0.0
run aorta_noibfr3k --case ct_aorta --iterations 3000 --set loss.ibfr=0.0 schedule.early_stop_db=0.0
run aorta_fps16 --case ct_aorta --set schedule.frames_per_step=16
run aorta_deg2 --case ct_aorta --set model.poly_degree=2
run aorta_paper6k --case ct_aorta --preset paper --iterations 6000
run brain_fast --case mr_brainfs
run brain_noibfr --case mr_brainfs --set loss.ibfr=0.0
run tumor_fast --case mr_tumor1 --size 25 256 256
