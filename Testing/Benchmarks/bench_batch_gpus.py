"""Multi-GPU scaling of `medgs batch` (issue 17): one cohort on 1 GPU, then on all GPUs, same seed.

    . Testing/Benchmarks/device_env.sh             # on the GPU box: wheels, gsplat build
    python3 Testing/Benchmarks/bench_batch_gpus.py OUTDIR [--gpus 1 2 4 8] [--renderer R] [--set ...]
    python Testing/Benchmarks/bench_batch_gpus.py OUTDIR --tiny   # CPU check: 2 fake GPU ids

The cohort is 8 real volumes: the four dev cases of .dev/data (NIfTI copies made by
make_gpu_data.py; image + label map) and a half-size crop of each (the central half of every
slice, all slices; spacing and direction kept, origin moved to the crop's corner). --tiny uses
bench_batch.py's four crops of the example CT and a half-size crop of each, a few iterations.

Each GPU count N (default: 1 and all visible GPUs) runs the same `medgs batch MANIFEST` command,
with the same options and seed, under CUDA_VISIBLE_DEVICES = the first N visible GPUs and
`--executor gpus`: N long-lived spawn workers, each pinned to one GPU, fed from one queue. The
1-GPU run takes the same path with one worker, so the runs differ only in the worker count.
Reported per case: status and seconds in each run, the worker that ran it, and the max and mean
|difference| of every NIfTI output from the 1-GPU run's; per run: cases per minute (cases / wall
time of the `medgs batch` process, start-up included), the speed-up over 1 GPU, the scaling
efficiency (speed-up / N; 1.0 is linear), the bound the queue allows (the longest case caps the
speed-up), and the GPUs the workers reported (batch.json's `worker`, the worker's own
CUDA_VISIBLE_DEVICES, and the name and UUID its torch saw). Writes OUTDIR/bench_batch_gpus.json.

Same seed, same volumes? On the CPU yes, bit for bit (asserted by the test). On a GPU it is
reported, never asserted: no renderer is deterministic there. gsplat's backward and the Triton
renderer's add gradients with float atomics; the torch renderer's index_add_ is atomic on CUDA
too (torch makes it deterministic only under torch.use_deterministic_algorithms, which
train.py turns on for the CPU only). --renderer picks one to compare; none is exact.

No NCCL and no inter-GPU communication: the workers are independent processes, one per GPU.
Nothing here enables NCCL or NVLink multicast.

--tiny on a machine without CUDA uses fake GPU ids (CUDA_VISIBLE_DEVICES=0,1; the CPU build of
torch ignores it): the CLI's GPU discovery (runner.cuda_gpus, which returns no GPU without CUDA)
is replaced in the `medgs batch` process by visible_gpus, which trusts CUDA_VISIBLE_DEVICES, as
Testing/engine/test_batch.py does by passing gpus=. Everything else is the real command.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import (CASES, ROOT, RUN_OPTIONS, TINY_OPTIONS, TINY_SETS, _environment, tiny_data,  # noqa: E402
                         timed, write_manifest)

sys.path.insert(0, str(ROOT))
SEED = "0"
# `medgs batch` with GPU discovery trusting CUDA_VISIBLE_DEVICES: fake GPU ids on a CPU box (--tiny)
FAKE_GPU_CLI = ("import sys; from MedGSLib.batch import local, runner; runner.cuda_gpus = local.visible_gpus; "
                "from MedGSLib.cli import main; sys.exit(main(sys.argv[1:]))")
KEYS = ("device", "tiny", "fake_gpus", "gpus_visible", "gpu_counts", "options", "cases", "cohort", "runs", "per_case",
        "identical", "max_abs_difference", "environment")


def half_crop(src_image: Path, src_labels: Path, folder: Path, name: str) -> tuple[str, Path, Path]:
    """The central half of every slice (Y and X halved, all Z slices), image and label map, geometry kept."""
    import numpy as np

    from MedGSLib.io import read_volume, write_volume
    out = []
    for path, kind in ((src_image, "image"), (src_labels, "labels")):
        v = read_volume(path, kind)
        nz, ny, nx = v.array.shape
        y, x = ny // 4, nx // 4
        a = np.ascontiguousarray(v.array[:, y:y + ny // 2, x:x + nx // 2])
        origin = tuple(float(c) for c in v.geometry.index_to_physical(np.array([x, y, 0], float)))
        out.append(write_volume(v.with_array(a, dataclasses.replace(v.geometry, origin=origin)),
                                folder / f"{name}_{kind}.nii.gz", overwrite=True))
    return name, out[0], out[1]


def cohort(out: Path, tiny: bool, names) -> list[tuple[str, Path, Path]]:
    """The full volumes first, then their half crops: the queue hands the long cases out first."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    if tiny:
        full = tiny_data(data)
    else:
        src = ROOT / ".dev" / "data"
        full = [(c, src / f"{c}_image.nii.gz", src / f"{c}_labels.nii.gz") for c in names]
        missing = [str(p) for _, i, lab in full for p in (i, lab) if not p.is_file()]
        if missing:
            sys.exit(f"missing {missing[0]}: run Testing/Benchmarks/make_gpu_data.py first")
    return full + [half_crop(i, lab, data, f"{n}_half") for n, i, lab in full]


def outputs_difference(a: Path, b: Path) -> dict:
    """Max and mean |a - b| over the NIfTI outputs of two case folders (None where one is missing)."""
    import numpy as np

    from MedGSLib.io import read_volume
    files = sorted(p.name for p in a.glob("*.nii.gz")) if a.is_dir() else []
    if not files:
        return {"files": [], "max_abs": None, "mean_abs": None}
    worst, means = 0.0, {}
    for f in files:
        try:
            x = read_volume(a / f).array.astype(np.float64)
            y = read_volume(b / f).array.astype(np.float64)
        except Exception:  # noqa: BLE001 - a missing output shows in the status; the difference is unknown
            return {"files": files, "max_abs": None, "mean_abs": None}
        if x.shape != y.shape:
            return {"files": files, "max_abs": None, "mean_abs": None, "shape_mismatch": f}
        d = np.abs(x - y)
        worst, means[f] = max(worst, float(d.max())), float(d.mean())
    return {"files": files, "max_abs": worst, "mean_abs": means}


def worker_gpus(doc: dict) -> dict:
    """What each worker reported: batch.json's worker label and the device its torch saw."""
    seen = {}
    for c in doc["cases"]:
        if c.get("worker"):
            dev = c.get("extra") or {}
            seen.setdefault(c["worker"], {"cuda_device": dev.get("cuda_device"), "cuda_uuid": dev.get("cuda_uuid"),
                                          "cases": []})["cases"].append(c["name"])
    return dict(sorted(seen.items()))


def write_result(out: Path, cases, runs: list[dict], docs: dict, header: dict, verbose: bool) -> dict:
    """OUTDIR/bench_batch_gpus.json from the runs so far (written after every run: a run cut off
    by the machine's time limit leaves the earlier runs' numbers)."""
    counts = [r["gpus"] for r in runs]
    ref = runs[0]
    for run in runs:
        run["speedup"] = round(ref["wall_s"] / run["wall_s"], 3)
        run["efficiency"] = round(run["speedup"] / run["gpus"], 3)
        # the queue's best: the 1-GPU work spread evenly, but never less than the longest case
        if ref["case_seconds_max"]:
            floor = max(ref["case_seconds_sum"] / run["gpus"], ref["case_seconds_max"])
            run["speedup_bound_by_queue"] = round(ref["case_seconds_sum"] / floor, 3)

    rows, worst, identical = [], 0.0, True
    for name, img, _ in cases:
        row = {"case": name, "image": str(img)}
        for count in counts:
            c = next((c for c in docs[count]["cases"] if c["name"] == name), {})
            row[f"gpus{count}"] = {"status": c.get("status"), "seconds": c.get("seconds"), "worker": c.get("worker"),
                                   "reason": c.get("reason")}
            if count != 1:
                diff = outputs_difference(out / "gpus1" / name, out / f"gpus{count}" / name)
                row[f"gpus{count}"]["difference_from_1_gpu"] = diff
                if diff["max_abs"] is None:
                    identical = False
                else:
                    worst = max(worst, diff["max_abs"])
                    identical = identical and diff["max_abs"] == 0.0
        rows.append(row)
        line = " | ".join(f"{k}: {row[f'gpus{k}']['status']} {row[f'gpus{k}']['seconds']} s on "
                          f"{row[f'gpus{k}']['worker']}" for k in counts)
        diffs = [row[f"gpus{k}"]["difference_from_1_gpu"]["max_abs"] for k in counts[1:]]
        if verbose:
            print(f"  {name}: {line} | max |diff| from 1 GPU {diffs}", flush=True)
    if len(counts) == 1:
        identical = None
    result = {**header, "cases": len(cases), "cohort": [c[0] for c in cases], "runs": runs, "per_case": rows,
              "identical": identical,
              "max_abs_difference": worst if len(counts) > 1 else None, "environment": _environment()}
    (out / "bench_batch_gpus.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--gpus", nargs="+", type=int, default=None, metavar="N",
                    help="GPU counts to run (1 is always run first, as the reference); default: 1 and all visible")
    ap.add_argument("--cases", nargs="*", default=list(CASES), help="dev cases (each also gives its half crop)")
    ap.add_argument("--renderer", choices=["auto", "torch", "gsplat", "triton"], default="auto",
                    help="the renderer of every run (none is deterministic on a GPU; see the docstring)")
    ap.add_argument("--set", nargs="*", default=[], help="training options for every run (SECTION.NAME=VALUE)")
    ap.add_argument("--tiny", action="store_true", help="CPU check: 8 small crops of the example CT, a few "
                    "iterations; without CUDA the GPU ids are fake (2 by default)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per case (a hung process "
                    "must not eat the GPU budget; default %(default)s)")
    return ap.parse_args(argv)


def visible(tiny: bool) -> tuple[list[str], bool]:
    """The GPU ids to use and whether they are fake (--tiny without CUDA: CUDA_VISIBLE_DEVICES, or 0,1)."""
    import torch

    from MedGSLib.batch.local import visible_gpus
    if torch.cuda.is_available():
        return visible_gpus(), False
    if not tiny:
        sys.exit("no CUDA GPU is visible: run this on a GPU machine (or use --tiny for the CPU check)")
    return visible_gpus(device_count=0) or ["0", "1"], True


def main(argv=None) -> int:
    a = parse(argv)
    out = Path(a.out).absolute()
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty: give a new folder (the batch would skip complete cases)")
    out.mkdir(parents=True, exist_ok=True)
    gpus, fake = visible(a.tiny)
    counts = sorted({1, *(a.gpus or [len(gpus)])})
    if counts[0] < 1 or counts[-1] > len(gpus):
        sys.exit(f"--gpus: give counts from 1 to {len(gpus)} (the GPUs visible: {','.join(gpus) or 'none'})")
    if len(counts) == 1:
        print("only one GPU: this gives the 1-GPU reference, not a scaling", flush=True)
    cases = cohort(out, a.tiny, a.cases)
    manifest = out / "cohort.csv"
    write_manifest(manifest, cases)
    # --device auto on a CPU box (the worker then runs on the CPU); --executor gpus refuses --device cpu
    device = "auto" if fake else "cuda"
    options = RUN_OPTIONS + ["--device", device, "--seed", SEED, "--renderer", a.renderer,
                             "--executor", "gpus"] + (TINY_OPTIONS if a.tiny else [])
    sets = (TINY_SETS if a.tiny else []) + list(a.set)
    options += ["--set", *sets] if sets else []
    cli = [sys.executable, "-c", FAKE_GPU_CLI] if fake else [sys.executable, "-m", "MedGSLib"]
    base_env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                    PYTHONUNBUFFERED="1")
    n = len(cases)

    header = {"device": "cpu (fake GPU ids)" if fake else "cuda", "tiny": a.tiny, "fake_gpus": fake,
              "gpus_visible": gpus, "gpu_counts": counts, "options": options}
    runs, docs = [], {}
    for count in counts:
        cvd = ",".join(gpus[:count])
        run_dir = out / f"gpus{count}"
        wall, rc, tail = timed(cli + ["batch", str(manifest), "-o", str(run_dir), *options],
                               dict(base_env, CUDA_VISIBLE_DEVICES=cvd), a.timeout * n)
        wall = round(wall, 3)             # the rates below follow from the recorded wall time exactly
        try:
            doc = json.loads((run_dir / "batch.json").read_text())
        except (OSError, json.JSONDecodeError):
            doc = {"cases": [], "summary": {}, "gpus": None}
        docs[count] = doc
        secs = [c["seconds"] for c in doc["cases"] if c.get("seconds")]
        run = {"gpus": count, "cuda_visible_devices": cvd, "wall_s": wall, "exit": rc,
               "done": sum(c["status"] == "done" for c in doc["cases"]),
               "cases_per_minute": round(60 * n / wall, 3), "case_seconds_sum": round(sum(secs), 3),
               "case_seconds_max": round(max(secs), 3) if secs else None,
               "batch_gpus": doc.get("gpus"), "workers": worker_gpus(doc)}
        if rc != 0:
            run["stderr"] = tail
        runs.append(run)
        print(f"{count} GPU(s) [CUDA_VISIBLE_DEVICES={cvd}]: {run['done']}/{n} done in {wall:.1f} s, "
              f"{run['cases_per_minute']:.2f} cases/min (exit {rc}); workers {sorted(run['workers'])}", flush=True)
        if rc != 0:
            print(f"  stderr: {tail}", flush=True)
        result = write_result(out, cases, runs, docs, header, verbose=count == counts[-1])
    for run in runs:
        print(f"{run['gpus']} GPU(s): {run['cases_per_minute']:.2f} cases/min, speed-up x{run['speedup']:.2f}, "
              f"efficiency {run['efficiency']:.2f} (queue bound x{run.get('speedup_bound_by_queue')})")
    print(f"outputs identical to the 1-GPU run: {result['identical']} (max |diff| {result['max_abs_difference']}); "
          f"{out / 'bench_batch_gpus.json'}")
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
