"""Merge the quality study's reports into the README table: MedGS against every classical method.

    python Testing/Benchmarks/study_table.py [--results Testing/Benchmarks/results/study_h200]

Inputs (protocol of reference/evaluation.md, the same held-out slices on both sides):
  <results>/medgs/<case>_k<k>.json      MedGS, `medgs eval` reports from study.py (GPU)
  <results>/labels/sparse_<case>.json   MedGS and nearest/linear/shape-cubic, sparse annotation (GPU)
  results/study/classical/<case>.json   linear, B-spline, nearest, optical flow; label methods (CPU)
  <results>/classical_lanczos/<case>.json   Lanczos windowed sinc (CPU, `medgs eval --methods lanczos`)
  results/study/classical/sparse_<case>.json   contour interpolation on the sparse cases (CPU)
Writes <results>/table.md and prints it, with the self-check's estimate against the true gain.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

HERE = Path(__file__).parent
CASES = ("ct_abdomen3mm", "ct_aorta", "mr_brainfs", "mr_tumor1")
KS = (2, 3, 4)
CLASSICAL_IMAGE = ("linear", "bspline", "lanczos", "nearest", "optflow")
CLASSICAL_LABELS = ("nearest", "linear", "shape-linear", "shape-cubic", "contour")


def rows_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())["results"] if path.exists() else []


def pick(rows, task, method, k):
    return next((r for r in rows if r["task"] == task and r["method"] == method and r["k"] == k), None)


def best(rows, task, methods, k, key, higher=True):
    cands = [r for r in rows if r["task"] == task and r["method"] in methods and r["k"] == k
             and r.get(key) == r.get(key)]
    return (max if higher else min)(cands, key=lambda r: r[key]) if cands else None


def pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def dense_table(folder: Path) -> list[str]:
    lines = ["| case | k | MedGS PSNR / SSIM | best classical PSNR (method) | best classical SSIM | ΔPSNR | "
             "MedGS Dice / HD95 mm | shape-cubic Dice / HD95 | contour Dice | best classical Dice (method) | "
             "self-check est. / true gain over linear dB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    def label_choice(sc):      # what the self-check delivered as labels (selfcheck.choose_labels)
        return f" ({sc['label_choice']})" if "label_choice" in sc else ""
    deltas, ssim_ok, over_cubic, over_contour, est, true, held, cells = [], 0, 0, [], [], [], [], 0
    for case in CASES:
        classical = rows_of(HERE / "results" / "study" / "classical" / f"{case}.json")
        classical += rows_of(folder / "classical_lanczos" / f"{case}.json")
        for k in KS:
            path = folder / "medgs" / f"{case}_k{k}.json"
            if not path.exists():
                lines.append(f"| {case} | {k} | not run | | | | | | | | |")
                continue
            report = json.loads(path.read_text())
            medgs = report["results"]
            mi, ml = pick(medgs, "image", "medgs", k), pick(medgs, "labels", "medgs", k)
            bp = best(classical, "image", CLASSICAL_IMAGE, k, "psnr")
            bs = best(classical, "image", CLASSICAL_IMAGE, k, "ssim")
            bd = best(classical, "labels", CLASSICAL_LABELS, k, "dice")
            cub, con = pick(classical, "labels", "shape-cubic", k), pick(classical, "labels", "contour", k)
            lin = pick(classical, "image", "linear", k)
            sc = (report.get("medgs_info", {}).get(str(k)) or {}).get("self_check") or {}
            cells += 1
            d = mi["psnr"] - bp["psnr"]
            deltas.append(d)
            ssim_ok += mi["ssim"] >= bs["ssim"]
            over_cubic += ml["dice"] > cub["dice"]
            over_contour.append(ml["dice"] - con["dice"])
            g_true = mi["psnr"] - lin["psnr"]
            g_est = sc.get("gain_db", float("nan"))
            if g_est == g_est:
                est.append(g_est)
                true.append(g_true)
                held.append(sc.get("heldout_gain_db", g_est))
            lines.append(
                f"| {case} | {k} | {mi['psnr']:.2f} / {mi['ssim']:.3f} | {bp['psnr']:.2f} ({bp['method']}) | "
                f"{bs['ssim']:.3f} | {d:+.2f} | {ml['dice']:.3f} / {ml['hd95']:.2f}{label_choice(sc)} | "
                f"{cub['dice']:.3f} / {cub['hd95']:.2f} | {con['dice']:.3f} | {bd['dice']:.3f} ({bd['method']}) | "
                f"{g_est:+.2f} / {g_true:+.2f} ({sc.get('choice', '-')}) |")
    if cells:
        lines += ["", f"PSNR above the best classical method in {sum(x > 0 for x in deltas)} of {cells} cells, "
                      f"mean ΔPSNR {sum(deltas) / cells:+.2f} dB; SSIM not lower in {ssim_ok} of {cells}. "
                      f"Label Dice above shape-based cubic in {over_cubic} of {cells} cells; mean Dice "
                      f"{sum(over_contour) / cells:+.3f} over contour interpolation (\"Fill between slices\")."]
    if len(est) > 2:
        miss = max(abs(a - b) for a, b in zip(est, true))
        miss_held = max(abs(a - b) for a, b in zip(held, true))
        lines.append(f"Self-check: estimated gain over linear (delivered choice, at twice the kept gap) against "
                     f"the true held-out gain over linear: Pearson r = {pearson(est, true):+.2f} over {len(est)} "
                     f"cells, worst miss {miss:.2f} dB (the held-out frames alone: r = {pearson(held, true):+.2f}, "
                     f"worst miss {miss_held:.2f} dB).")
    return lines


def sparse_table(folder: Path) -> list[str]:
    lines = ["| case | labels on every | MedGS Dice / HD95 mm | nearest | shape-cubic | contour | "
             "best classical HD95 |", "|---|---|---|---|---|---|---|"]
    for case in ("ct_aorta", "ct_abdomen3mm"):
        path = folder / "labels" / f"sparse_{case}.json"
        if not path.exists():
            continue
        rows = json.loads(path.read_text())
        contour = rows_of(HERE / "results" / "study" / "classical" / f"sparse_{case}.json")
        for k in sorted({r["k"] for r in rows}):
            by = {r["method"]: r for r in rows if r["k"] == k}
            con = pick(contour, "labels", "contour", k)
            hd = [by[m]["hd95_mm"] for m in ("nearest", "linear", "shape-cubic")] + ([con["hd95"]] if con else [])
            m = by["medgs"]
            lines.append(f"| {case} | {k}{'rd' if k == 3 else 'th'} | {m['dice']:.3f} / {m['hd95_mm']:.2f} | "
                         f"{by['nearest']['dice']:.3f} / {by['nearest']['hd95_mm']:.2f} | "
                         f"{by['shape-cubic']['dice']:.3f} / {by['shape-cubic']['hd95_mm']:.2f} | "
                         + (f"{con['dice']:.3f} / {con['hd95']:.2f}" if con else "-") + f" | {min(hd):.2f} |")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=str(HERE / "results" / "study_h200"))
    folder = Path(ap.parse_args().results)
    text = "\n".join(dense_table(folder) + ["", "Sparse annotation (image on every slice):", ""]
                     + sparse_table(folder)) + "\n"
    (folder / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
