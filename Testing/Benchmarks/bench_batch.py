"""Cohort throughput: one `medgs batch` process against separate `medgs run` processes (issue 16).

    . Testing/Benchmarks/device_env.sh             # on the GPU box: wheels, gsplat build
    python Testing/Benchmarks/bench_batch.py OUTDIR [--cases ...] [--set ...]
    python Testing/Benchmarks/bench_batch.py OUTDIR --tiny   # CPU check: 4 crops, a few iterations

The four dev cases of .dev/data (NIfTI copies, make_gpu_data.py; image + label map), the same
`medgs run` options for both ways (fast preset, --keep-every 2: every 2nd slice kept, the full
grid restored; no meshes, which are CPU work), run
  1. once as `medgs batch MANIFEST -o OUTDIR/batch` (one process: CUDA context, kernels and the
     gsplat build loaded once), then
  2. as one `medgs run` process per case, one after the other (each pays them again).
Cases per minute = cases / wall time of all processes (start-up included). Writes
OUTDIR/bench_batch.json and prints one line per case and the two rates. The two ways run the
same command lines, so their volumes are compared too (equal on the CPU; gsplat's backward
pass uses atomics on the GPU, so there the difference is reported, not asserted).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
CASES = ("ct_abdomen3mm", "ct_aorta", "mr_brainfs", "mr_tumor1")
RUN_OPTIONS = ["--preset", "fast", "--keep-every", "2", "--no-meshes", "-q"]
TINY_OPTIONS = ["--iterations", "6", "--max-gaussians", "400"]
TINY_SETS = ["model.num_points=200"]
TINY_CORNERS = {"ct_crop_a": (0, 20, 30), "ct_crop_b": (8, 40, 40), "ct_crop_c": (14, 50, 60), "ct_crop_d": (20, 30, 80)}


def tiny_data(folder: Path) -> list[tuple[str, Path, Path]]:
    """Four 10 x 40 x 36 crops of the example CT and its labels (geometry kept)."""
    import numpy as np

    from MedGSLib.io import read_volume, write_volume
    ex = ROOT / "Resources" / "Examples"
    img = read_volume(ex / "ct_abdomen3mm_image.nii.gz")
    lab = read_volume(ex / "ct_abdomen3mm_labels.nii.gz", "labels")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, (z, y, x) in TINY_CORNERS.items():
        def crop(v):
            a = np.ascontiguousarray(v.array[z:z + 10, y:y + 40, x:x + 36])
            origin = tuple(float(c) for c in v.geometry.index_to_physical(np.array([x, y, z], float)))
            return v.with_array(a, dataclasses.replace(v.geometry, origin=origin))
        ip = write_volume(crop(img), folder / f"{name}_image.nii.gz", overwrite=True)
        lp = write_volume(crop(lab), folder / f"{name}_labels.nii.gz", overwrite=True)
        out.append((name, ip, lp))
    return out


def write_manifest(path: Path, cases) -> None:
    """A `medgs batch` CSV manifest of (name, image, labels) cases."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "labels", "name"])
        for name, img, lab in cases:
            w.writerow([img, lab, name])


def timed(cmd: list[str], env: dict, timeout_s: float) -> tuple[float, int, str]:
    """Wall time, exit code (124 past `timeout_s`) and the last lines of stderr of one process."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        tail = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
        return time.perf_counter() - t0, 124, " | ".join(tail.strip().splitlines()[-3:])
    return time.perf_counter() - t0, p.returncode, " | ".join((p.stderr or "").strip().splitlines()[-3:])


def volume_difference(a: Path, b: Path) -> float | None:
    import numpy as np

    from MedGSLib.io import read_volume
    try:
        x, y = read_volume(a).array, read_volume(b).array
    except Exception:  # noqa: BLE001 - a missing output is reported by the status, not here
        return None
    return float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--set", nargs="*", default=[], help="training options for every run (SECTION.NAME=VALUE)")
    ap.add_argument("--tiny", action="store_true", help="CPU check: crops of the example CT, a few iterations")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per case (a hung process "
                    "must not eat the GPU budget; default %(default)s)")
    a = ap.parse_args()
    out = Path(a.out).absolute()
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty: give a new folder (the batch would skip complete cases)")
    out.mkdir(parents=True, exist_ok=True)
    device = a.device or ("cpu" if a.tiny else "cuda")
    if a.tiny:
        cases = tiny_data(out / "data")
    else:
        data = ROOT / ".dev" / "data"
        cases = [(c, data / f"{c}_image.nii.gz", data / f"{c}_labels.nii.gz") for c in a.cases]
        missing = [str(p) for _, i, l in cases for p in (i, l) if not p.is_file()]
        if missing:
            sys.exit(f"missing {missing[0]}: run Testing/Benchmarks/make_gpu_data.py first")
    options = RUN_OPTIONS + ["--device", device] + (TINY_OPTIONS if a.tiny else [])
    sets = (TINY_SETS if a.tiny else []) + list(a.set)
    options += ["--set", *sets] if sets else []
    manifest = out / "cohort.csv"
    write_manifest(manifest, cases)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    medgs = [sys.executable, "-m", "MedGSLib"]

    wall_batch, rc, tail = timed(medgs + ["batch", str(manifest), "-o", str(out / "batch"), *options], env,
                                 a.timeout * len(cases))
    doc = json.loads((out / "batch" / "batch.json").read_text())
    by = {c["name"]: c for c in doc["cases"]}
    print(f"medgs batch: {len(cases)} cases in {wall_batch:.1f} s (exit {rc})", flush=True)
    if rc != 0:
        print(f"  stderr: {tail}")

    separate = {}
    for name, img, lab in cases:
        t, rc_run, tail_run = timed(medgs + ["run", str(img), "--labels", str(lab), "-o", str(out / "runs" / name),
                                             *options], env, a.timeout)
        separate[name] = {"wall_s": round(t, 3), "exit": rc_run}
        if rc_run != 0:
            separate[name]["stderr"] = tail_run
        print(f"medgs run {name}: {t:.1f} s (exit {rc_run})", flush=True)
    wall_sep = sum(s["wall_s"] for s in separate.values())

    rows = []
    for name, _, _ in cases:
        run_json = out / "runs" / name / "run.json"
        inner = json.loads(run_json.read_text())["result"]["timings_s"]["total"] if run_json.is_file() else None
        rows.append({"case": name, "batch_status": by[name]["status"], "batch_case_s": by[name]["seconds"],
                     "batch_reason": by[name]["reason"], "separate_wall_s": separate[name]["wall_s"],
                     "separate_run_s": inner, "separate_exit": separate[name]["exit"],
                     "gain_db": by[name]["gain_db"],
                     "max_abs_volume_difference": volume_difference(out / "batch" / name / "volume.nii.gz",
                                                                    out / "runs" / name / "volume.nii.gz")})
        r = rows[-1]
        print(f"  {name}: batch {r['batch_status']} {r['batch_case_s']} s | separate process {r['separate_wall_s']} s "
              f"(run itself {inner if inner is None else round(inner, 1)} s) | max |batch - run| "
              f"{r['max_abs_volume_difference']}")
    n = len(cases)
    result = {"device": device, "tiny": a.tiny, "options": options, "cases": n,
              "batch": {"wall_s": round(wall_batch, 3), "exit": rc, "cases_per_minute": round(60 * n / wall_batch, 3),
                        "summary": doc["summary"]},
              "separate": {"wall_s": round(wall_sep, 3), "cases_per_minute": round(60 * n / wall_sep, 3)},
              "speedup": round(wall_sep / wall_batch, 3), "per_case": rows,
              "environment": _environment()}
    (out / "bench_batch.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"cases/minute: batch {result['batch']['cases_per_minute']:.2f}, separate processes "
          f"{result['separate']['cases_per_minute']:.2f} (x{result['speedup']:.2f}); {out / 'bench_batch.json'}")
    ok = rc == 0 and all(s["exit"] == 0 for s in separate.values())
    return 0 if ok else 1


def _environment() -> dict:
    try:
        from MedGSLib.run_environment import environment
        return environment()
    except Exception as err:  # noqa: BLE001 - the numbers matter more than the record
        return {"error": str(err)}


if __name__ == "__main__":
    sys.exit(main())
