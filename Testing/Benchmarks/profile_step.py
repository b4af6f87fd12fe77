"""Per-step profile of MedGS training (issue 13 item 1: where a step's time goes).

    python Testing/Benchmarks/profile_step.py OUTDIR [--case ct_aorta --size 128 256 256 --keep 2]
        [--device cuda] [--warmup 150] [--steps 40] [--labels] [--set schedule.frames_per_step=16 ...]

The case is prepared as bench_speed.py prepares it (same resampling, kept slices, [0, 1]
mapping). The fast preset (self-check off: the profile is of plain steps) trains `--warmup`
steps, then `--steps` more under torch.profiler. Written to OUTDIR:
- profile.txt: the ops by self device time and by self host time, and a summary line;
- profile.json: step time without the profiler (CUDA-synchronised wall clock over the steps),
  device busy time per step, host syncs per step (cudaStreamSynchronize / cudaMemcpy* calls,
  the `.item()` / `nonzero` kind of wait) and kernel launches per step.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SYNC_NAMES = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync", "cudaMemcpy")
LAUNCH_NAMES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")


def frames_of(a) -> tuple[np.ndarray, np.ndarray | None]:
    """Kept frames in [0, 1] and, with --labels, their one-hot masks (nearest resampling)."""
    from bench_speed import find_case, resize, resize_labels

    from MedGSLib.frames import Normalizer, keep_every
    from MedGSLib.io import read_volume
    ref = resize(read_volume(find_case(a.case)).array, a.size)
    n = (ref.shape[0] - 1) // a.keep * a.keep + 1
    idx = keep_every(n, a.keep)
    kept = ref[:n][idx]
    frames = Normalizer(lower_percentile=0, upper_percentile=100).fit(kept).forward(kept).astype(np.float32)
    if not a.labels:
        return frames, None
    from MedGSLib.labels import label_values, one_hot
    lab = resize_labels(read_volume(find_case(a.case, "labels")).array, a.size)[:n][idx]
    return frames, one_hot(lab, label_values(lab))


def timed_steps(trainer, n: int) -> float:
    """Wall clock per step over `n` more steps, synchronised at both ends."""
    import torch
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    trainer.cfg.schedule.iterations = trainer.step + n
    trainer.train()
    sync()
    return (time.perf_counter() - t0) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--case", default="ct_aorta")
    ap.add_argument("--size", type=int, nargs=3, default=[128, 256, 256])
    ap.add_argument("--keep", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--labels", action="store_true", help="the joint pipeline with the case's label map")
    a = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from MedGSLib.api import default_config
    from MedGSLib.config import apply_overrides
    from MedGSLib.train import Trainer
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, masks = frames_of(a)
    frames = torch.from_numpy(frames)
    cfg = default_config(a.preset, a.device)
    apply_overrides(cfg, ["schedule.self_check=False", "schedule.early_stop_db=0", *a.set])
    cfg.schedule.iterations = a.warmup
    if masks is None:
        tr = Trainer(frames, cfg)
    else:
        tr = Trainer(frames, cfg, masks=torch.from_numpy(masks).float(), pipeline="joint")
    tr.train()                                         # warm-up: kernels built, Gaussians grown
    step_s = timed_steps(tr, a.steps)                  # without the profiler
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if tr.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        timed_steps(tr, a.steps)
    ev = prof.key_averages()
    n = a.steps

    def calls(names):
        return sum(e.count for e in ev if e.key in names) / n
    dev_attr = "self_device_time_total" if hasattr(ev[0], "self_device_time_total") else "self_cuda_time_total"
    busy_us = sum(getattr(e, dev_attr, 0) for e in ev if getattr(e, "device_type", None) is not None
                  and str(e.device_type).endswith("CUDA")) / n
    rec = {"case": a.case, "size": a.size, "keep": a.keep, "device": torch.cuda.get_device_name(0)
           if tr.device.type == "cuda" else "cpu", "torch": torch.__version__, "renderer": tr.renderer.name,
           "set": a.set, "warmup_steps": a.warmup, "profiled_steps": n, "gaussians": tr.model.n,
           "step_ms": step_s * 1e3, "device_busy_ms_per_step": busy_us / 1e3,
           "host_syncs_per_step": calls(SYNC_NAMES), "kernel_launches_per_step": calls(LAUNCH_NAMES),
           "frames_per_step": tr.cfg.schedule.frames_per_step,
           "labels": 0 if masks is None else int(masks.shape[0])}
    sort_dev = "self_cuda_time_total" if tr.device.type == "cuda" else "self_cpu_time_total"
    text = [json.dumps(rec, indent=1), "", f"## by {sort_dev} ({n} steps)",
            ev.table(sort_by=sort_dev, row_limit=45),
            f"## by self_cpu_time_total ({n} steps)", ev.table(sort_by="self_cpu_time_total", row_limit=30)]
    (out / "profile.txt").write_text("\n".join(text))
    (out / "profile.json").write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
