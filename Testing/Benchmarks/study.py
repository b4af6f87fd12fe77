"""The whole quality study in one process on one GPU, one run at a time (issue 11 item 6).

    python Testing/Benchmarks/study.py OUTDIR [--cases ct_aorta mr_brainfs] [--sparse ct_aorta] [--set ...]

For each dev case and k = 2, 3, 4: `medgs eval`'s protocol with MedGS only (default preset, joint
image + label heads, one training per k), written as `medgs eval` writes its report
(OUTDIR/medgs/<case>_k<k>.json), so that study_table.py merges it with the classical reports
computed on the CPU (classical/<case>.json: SimpleITK and ITK are not on the GPU box). The
sparse cases (image on every slice, labels on every 3rd / 5th) go to OUTDIR/labels/sparse_<case>.json
through bench_labels.py's protocol. One process keeps the CUDA context and the gsplat build.
Reads the NIfTI copies in .dev/data (Testing/Benchmarks/make_gpu_data.py).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
CASES = ("ct_abdomen3mm", "ct_aorta", "mr_brainfs", "mr_tumor1")


def run_cell(a, out, img, lab, case, k, evaluate, write_report):
    t0 = time.perf_counter()
    report, figures = evaluate(img, lab, [k], ["medgs"], ["medgs"], preset=a.preset, device=a.device,
                               case=case, command=f"study.py --cases {case} --ks {k}", overrides=a.set)
    folder = out / "reports" / f"{case}_k{k}"
    write_report(report, figures, folder, overwrite=True)
    (out / "medgs" / f"{case}_k{k}.json").write_text((folder / "report.json").read_text())
    info = report["medgs_info"][str(k)]
    sc = info.get("self_check") or {}
    rows = {r["task"]: r for r in report["results"]}
    print(f"{case} k={k}: PSNR {rows['image']['psnr']:.2f} Dice {rows.get('labels', {}).get('dice', float('nan')):.3f} "
          f"self-check {sc.get('model_gain_db', float('nan')):+.2f} dB ({sc.get('choice')}) "
          f"iters {info['iterations_run']} train {info['train_seconds']:.1f} s, "
          f"wall {time.perf_counter() - t0:.1f} s", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--sparse", nargs="*", default=["ct_aorta", "ct_abdomen3mm"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--set", nargs="*", default=[])
    a = ap.parse_args()
    from MedGSLib.evaluation.report import write_report
    from MedGSLib.evaluation.run import evaluate
    from MedGSLib.io import read_volume
    out = Path(a.out)
    (out / "medgs").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    data = ROOT / ".dev" / "data"
    for case in a.cases:
        img = read_volume(data / f"{case}_image.nii.gz")
        lab = read_volume(data / f"{case}_labels.nii.gz", "labels")
        for k in a.ks:
            try:
                run_cell(a, out, img, lab, case, k, evaluate, write_report)
            except Exception:       # one failed cell must not cost the rest of the study
                import traceback
                traceback.print_exc()
                print(f"{case} k={k}: FAILED", flush=True)
    for case in a.sparse:
        # bench_labels.py holds the sparse protocol; a subprocess keeps its argv simple
        cmd = [sys.executable, str(ROOT / "Testing" / "Benchmarks" / "bench_labels.py"), "--case", case,
               "--k", "3", "5", "--sparse", "--device", a.device, "--preset", a.preset,
               "--json", str(out / "labels" / f"sparse_{case}.json")] + (["--set", *a.set] if a.set else [])
        subprocess.run(cmd, check=False)


if __name__ == "__main__":
    main()
