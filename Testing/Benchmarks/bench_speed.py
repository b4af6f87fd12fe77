"""Speed / memory / quality benchmark of `MedGS` training on one real volume.

    python Testing/Benchmarks/bench_speed.py --case ct_aorta --size 128 256 256 --keep 2 --device cuda
    python Testing/Benchmarks/bench_speed.py --case ct_abdomen3mm --size 64 128 128 --keep 2 --device cpu
    python Testing/Benchmarks/bench_speed.py --suite cpu --json Testing/Benchmarks/results/cpu_suite.json

The case is read with its geometry, brought to the requested (Z, Y, X) size by trilinear
resampling (torch.nn.functional.interpolate, align_corners=True) so that sizes are comparable
across cases, every `--keep`-th slice is kept, MedGS trains on the kept slices and renders the
full grid; held-out slices are scored as in reference/evaluation.md (PSNR pooled on the
reference's [0, 1] min-max mapping; SSIM per held-out slice, Gaussian window sigma 1.5) next to
linear and cubic B-spline interpolation of the same kept slices. Prints one table, writes JSON.
Stages are timed apart: load (read + resample + normalise), fit-flow (the motion fields of the
in-between targets), train, render (the dense stack), write. `--warm` trains once before the
timed run, so that a fresh process's one-time costs (torch's lazily imported optimiser and Triton
modules, compiled from source where no bytecode cache can be written, as on the GPU box; Triton and
cuDNN kernel builds) are timed apart, in `cold_run`.

`--suite cpu` runs issue 13's CPU targets one after the other (2 cores): the README's example
command end to end (`medgs run ... --factor 2`, wall clock of the process), then held-out
quality and stage times at keep 2 on the example (29 x 101 x 122), ct_aorta resampled to
64 x 128 x 128 and ct_abdomen3mm resampled to 9 x 32 x 28; the load average is recorded next
to every timing (the machine is shared). "MedGS" is what a run delivers: with the self-check on
(the fast preset), the model, a model/motion-blend mix or linear interpolation, whichever won on
held-out kept slices; each row also records that choice and the model's own estimated gain.
Needs only torch, numpy, nibabel (or SimpleITK) and, for the GPU path, gsplat.
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

CEILING = 3e11   # fwd+bwd pair evaluations per second on an H100 (reference/gsplat.md s5)


def find_case(name: str, kind: str = "image") -> Path:
    """The case's file: "example" is the README's bundled example as shipped; a dev case is read
    from .dev/data (the GPU box's copies, cropped to the protocol's length) where present."""
    if name == "example":
        return EXAMPLE.with_name(EXAMPLE.name.replace("_image", f"_{kind}"))
    for folder in (ROOT / ".dev" / "data", ROOT.parent / "shared" / "data", ROOT / "Resources" / "Examples"):
        for ext in (".nii.gz", ".nrrd"):
            p = folder / f"{name}_{kind}{ext}"
            if p.exists():
                return p
    raise SystemExit(f"case {name} not found")


def resize(arr: np.ndarray, size) -> np.ndarray:
    """The volume at `size` (z, y, x): cropped along z where the slices are as read (same in-plane
    size, no more slices), else resampled trilinearly. Resampling 30 slices to 29 made every
    slice a blend of two read ones, a truth that linear interpolation reproduces (the example at
    keep 2: linear 0.67 dB above MedGS's in-between image there, 0.34 dB below it on the slices
    as read)."""
    import torch
    if tuple(size[1:]) == arr.shape[1:] and size[0] <= arr.shape[0]:
        return arr[: size[0]].astype(np.float32)
    t = torch.from_numpy(arr.astype(np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(size), mode="trilinear", align_corners=True)[0, 0].numpy()


def resize_labels(arr: np.ndarray, size) -> np.ndarray:
    """A label map resampled to `size` by nearest neighbour (keeps the label values)."""
    import torch
    t = torch.from_numpy(arr.astype(np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(size), mode="nearest")[0, 0].numpy().astype(np.int32)


def bspline(kept: np.ndarray, k: int, n: int) -> np.ndarray:
    from scipy.interpolate import make_interp_spline
    x = np.arange(kept.shape[0]) * k
    return make_interp_spline(x, kept, k=3, axis=0)(np.arange(n)).astype(np.float32)


def linear(kept: np.ndarray, k: int, n: int) -> np.ndarray:
    from MedGSLib.evaluation.baselines_intensity import linear as linear_baseline
    return linear_baseline(kept, k)[:n]


def scores(pred, ref, held, lo, hi):
    """evaluation.md metrics; where scikit-image is missing (the GPU box) SSIM uses the training SSIM
    (same 11-tap sigma 1.5 Gaussian window, zero padding instead of cropping)."""
    from MedGSLib.evaluation import metrics
    mask = np.zeros(ref.shape[0], bool)
    mask[held] = True
    p, r = metrics.to_unit(pred, lo, hi), metrics.to_unit(ref, lo, hi)
    try:
        ssim = float(np.mean(metrics.ssim_per_slice(p, r, mask)))
    except Exception:
        import torch
        from MedGSLib.losses import ssim as torch_ssim
        ssim = float(np.mean([float(torch_ssim(torch.from_numpy(p[i]).float()[None, None],
                                               torch.from_numpy(r[i]).float()[None, None])) for i in held]))
    return {"psnr": metrics.psnr_pooled(p, r, mask), "ssim": ssim}


CPU_SUITE = [("example", [29, 101, 122], 30.0), ("ct_aorta", [64, 128, 128], 60.0),
             ("ct_abdomen3mm", [9, 32, 28], 10.0)]
EXAMPLE = ROOT / "Resources" / "Examples" / "ct_abdomen3mm_image.nii.gz"


def environment() -> dict:
    import os
    import platform

    import torch
    cpu = platform.processor()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def load_average() -> list:
    import os
    return [round(x, 2) for x in os.getloadavg()]


def example_end_to_end(device: str) -> dict:
    """The README's example command in a fresh process: wall clock and run.json's stage times."""
    import os
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "MedGSLib", "run", str(EXAMPLE), "--factor", "2", "-o", tmp,
               "--device", device, "-q"]
        load0 = load_average()
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t0
        rec = json.loads((Path(tmp) / "run.json").read_text())
    res = rec["result"]
    return {"case": "README example (medgs run ... --factor 2)", "wall_s": wall, "load_avg_before": load0,
            "load_avg_after": load_average(), "timings_s": res["timings_s"], "flow_s": res.get("flow_seconds"),
            "iterations": res["iterations_run"], "gaussians": res["gaussians"], "threads": res.get("threads"),
            "self_check": _check_summary(res.get("self_check")), "target_s": 30.0}


def _check_summary(rec) -> dict | None:
    """What the self-check delivered and the model's own estimated gain over linear (dB, held-out kept
    slices), with what it measured: every candidate's PSNR, the best of them, the interior evidence."""
    if not rec:
        return None
    keep = ("choice", "model_gain_db", "gain_db", "heldout_gain_db", "estimate_frames", "measured_best", "psnr",
            "evidence", "frames")
    return {k: rec[k] for k in keep if k in rec}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", choices=["cpu"], help="run issue 13's CPU cases (see the module docstring)")
    ap.add_argument("--case", default="ct_aorta")
    ap.add_argument("--size", type=int, nargs=3, default=[128, 256, 256], help="Z Y X after resampling")
    ap.add_argument("--keep", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--iterations", type=int)
    ap.add_argument("--renderer", default="auto")
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. loss.ibfr=0 schedule.frames_per_step=16")
    ap.add_argument("--save-slice", help="save a held-out slice (truth, linear, B-spline, MedGS) to this .npz")
    ap.add_argument("--no-score", action="store_true", help="skip SSIM (memory case)")
    ap.add_argument("--warm", action="store_true",
                    help="run the same training once first and time the second (a warm process); the first "
                         "run's times, with the process's one-time costs, are recorded as cold_run")
    ap.add_argument("--labels", action="store_true",
                    help="train the joint pipeline with the case's label map (resampled nearest) and score Dice")
    a = ap.parse_args()
    if a.suite == "cpu":
        return cpu_suite(a)
    row = bench(a)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(row, indent=1, default=float))


def cpu_suite(a):
    import copy
    rows = {"environment": environment(), "example": example_end_to_end("cpu"), "cases": []}
    print(json.dumps(rows["example"], indent=1, default=float))
    for case, size, target in CPU_SUITE:
        b = copy.copy(a)
        b.case, b.size, b.keep, b.device = case, size, 2, "cpu"
        row = bench(b)
        row["target_s"] = target
        rows["cases"].append(row)
    print("| case | load avg | iters | Gaussians | load / fit-flow / train / render / write s | total s (target) "
          "| delivered PSNR (self-check choice) | model's own gain over linear | linear PSNR |")
    for r in rows["cases"]:
        tot = r["load_s"] + r["flow_s"] + r["train_s"] + r["render_s"] + r["write_s"]
        sc = r.get("self_check") or {}
        print(f"| {r['case']} {'x'.join(map(str, r['size_zyx']))} | {r['load_avg_before'][0]:.1f} | {r['iterations']} | "
              f"{r['gaussians']} | {r['load_s']:.1f} / {r['flow_s']:.1f} / {r['train_s']:.1f} / {r['render_s']:.1f} / "
              f"{r['write_s']:.1f} | {tot:.1f} ({r['target_s']:.0f}) | {r['medgs']['psnr']:.2f} ({sc.get('choice', '-')}) | "
              f"{sc.get('model_gain_db', float('nan')):+.2f} dB | {r['linear']['psnr']:.2f} |")
    ex = rows["example"]
    print(f"README example end to end: {ex['wall_s']:.1f} s (target 30), load {ex['load_avg_before']}, "
          f"self-check {ex['self_check'] and {k: ex['self_check'][k] for k in ('choice', 'gain_db')}}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=1, default=float))


def bench(a) -> dict:
    import torch
    from MedGSLib.api import default_config, interpolate_array
    from MedGSLib.config import apply_overrides
    from MedGSLib.frames import Normalizer, keep_every
    from MedGSLib.io import read_volume
    load0 = load_average()
    t0 = time.perf_counter()
    vol = read_volume(find_case(a.case))
    ref = resize(vol.array, a.size)
    n = (ref.shape[0] - 1) // a.keep * a.keep + 1          # nothing extrapolated
    ref = ref[:n]
    kept_idx = keep_every(n, a.keep)
    norm = Normalizer(lower_percentile=0, upper_percentile=100).fit(ref[kept_idx])
    frames = norm.forward(ref[kept_idx]).astype(np.float32)
    t_load = time.perf_counter() - t0
    masks = lab = values = None
    if a.labels:     # nearest resampling keeps label values; one channel per value present on kept slices
        from MedGSLib.labels import label_values, one_hot
        lab = resize_labels(read_volume(find_case(a.case, "labels")).array, a.size)[:n]
        values = label_values(lab[kept_idx])
        masks = one_hot(lab[kept_idx], values)
        t_load = time.perf_counter() - t0
    cfg = default_config(a.preset, a.device, iterations=a.iterations, renderer=a.renderer)
    apply_overrides(cfg, a.set)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cold = None
    if a.warm:      # the same run once before: a process's one-time costs (imports, kernel builds) apart
        t_cold = time.perf_counter()
        first = interpolate_array(frames, a.keep, masks=masks, config=cfg)
        cold = {"wall_s": time.perf_counter() - t_cold, "train_s": first.info["train_seconds"],
                "flow_s": first.info.get("flow_seconds", 0.0)}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    res = interpolate_array(frames, a.keep, masks=masks, config=cfg)
    t1 = time.perf_counter()
    dense = norm.inverse(res.image, np.float32)
    if a.labels:
        from MedGSLib.labels import decode
        pred_lab = decode(res.probs, values)[:n]
        np.save(ROOT / ".dev" / "bench_labels.npy", pred_lab)
    out_path = ROOT / ".dev" / "bench_volume.npy"
    out_path.parent.mkdir(exist_ok=True)
    np.save(out_path, dense)           # the write stage: a dense float32 volume to disk
    t_write = time.perf_counter() - t1
    held = np.array([i for i in range(n) if i % a.keep])
    lo, hi = float(ref.min()), float(ref.max())
    info = res.info
    row = {"case": a.case, "size_zyx": [int(n)] + list(a.size[1:]), "keep_every": a.keep,
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and cfg.device != "cpu"
           else f"CPU ({torch.get_num_threads()} threads)",
           "renderer": info["renderer"], "renderer_reason": info["renderer_reason"], "preset": a.preset,
           "iterations": info["iterations_run"], "overrides": a.set, "gaussians": info["gaussians"],
           "load_avg_before": load0, "load_avg_after": load_average(),
           "load_s": t_load, "flow_s": info.get("flow_seconds", 0.0), "train_s": info["train_seconds"], "render_s": info["render_seconds"], "write_s": t_write,
           "peak_gpu_gb": info.get("peak_gpu_memory_gb"), "n_isects_per_step": info["n_isects_per_step"],
           "pair_throughput": info["pair_throughput"], "self_check": _check_summary(info.get("self_check")),
           "ceiling_share": info["pair_throughput"] / CEILING, "warm_process": bool(a.warm), "cold_run": cold}
    row["end_to_end_s"] = t_load + row["flow_s"] + row["train_s"] + row["render_s"] + t_write
    if a.labels:
        from MedGSLib.evaluation import baselines_labels as bl
        from MedGSLib.evaluation.metrics import dice_pooled
        mask = np.zeros(n, bool)
        mask[held] = True

        def mean_dice(pred):      # evaluation.md: Dice pooled over held-out slices, mean over labels
            d = [dice_pooled(pred == v, lab == v, mask) for v in values]
            return float(np.nanmean(d))
        row["labels"] = {"n_labels": len(values), "medgs_dice": mean_dice(pred_lab),
                         "shape_cubic_dice": mean_dice(bl.shape_cubic(lab[kept_idx], a.keep, values=values)[:n])}
    flow_dense = None
    if not a.no_score:
        kept = ref[kept_idx]
        row["medgs"] = scores(dense, ref, held, lo, hi)
        row["linear"] = scores(linear(kept, a.keep, n), ref, held, lo, hi)
        row["bspline"] = scores(bspline(kept, a.keep, n), ref, held, lo, hi)
        try:
            from MedGSLib.evaluation.baselines_intensity import optical_flow
            flow_dense = optical_flow(kept, a.keep)[:n]
            row["optflow"] = scores(flow_dense, ref, held, lo, hi)
        except Exception as err:        # OpenCV missing: the column stays empty
            print(f"optical-flow baseline skipped: {err}")
    if a.save_slice:
        i = int(held[len(held) // 2])
        kept = ref[kept_idx]
        extra = {} if flow_dense is None else {"optflow": flow_dense[i]}
        np.savez_compressed(a.save_slice, index=i, truth=ref[i], linear=linear(kept, a.keep, n)[i],
                            bspline=bspline(kept, a.keep, n)[i], medgs=dense[i], lo=lo, hi=hi, **extra)
    print(json.dumps(row, indent=1, default=float))
    row["environment"] = environment()
    q = (f"| {row['case']} {'x'.join(map(str, row['size_zyx']))} k={a.keep} | {row['device']} | {row['renderer']} | "
         f"{row['iterations']} | {row['gaussians']} | {t_load:.1f} / {row['flow_s']:.1f} / {row['train_s']:.1f} / "
         f"{row['render_s']:.1f} / "
         f"{t_write:.1f} (end to end {row['end_to_end_s']:.1f}) | {row['peak_gpu_gb'] or 0:.2f} | {row['pair_throughput']:.2e} ({100 * row['ceiling_share']:.1f}%) |")
    if "medgs" in row:
        q += (f" {row['medgs']['psnr']:.2f} / {row['medgs']['ssim']:.3f} | {row['linear']['psnr']:.2f} / "
              f"{row['linear']['ssim']:.3f} | {row['bspline']['psnr']:.2f} / {row['bspline']['ssim']:.3f} |")
        if "optflow" in row:
            q += f" {row['optflow']['psnr']:.2f} / {row['optflow']['ssim']:.3f} |"
    if "labels" in row:
        q += f" Dice {row['labels']['medgs_dice']:.3f} (shape-cubic {row['labels']['shape_cubic_dice']:.3f}, {len(values)} labels) |"
    print("| case | device | renderer | iters | Gaussians | load/fit-flow/train/render/write s | peak GB | pairs/s (of 3e11) "
          "| MedGS PSNR/SSIM | linear | B-spline | optical flow |")
    print(q)
    return row


if __name__ == "__main__":
    main()
