"""Merge the settings study's reports into one table: MedGS against the best classical method.

    python Testing/Benchmarks/study_table.py [--results Testing/Benchmarks/results/study]

Inputs (all written by `medgs eval`, protocol of reference/evaluation.md):
  classical/<case>.json    every classical method, k = 2 3 4 (CPU, here: needs SimpleITK, ITK)
  medgs/<case>_k<k>.json   MedGS alone (H100, Testing/Benchmarks/gpu_study.sh)
Both score the same held-out slices: the GPU copies were cropped to the protocol's common length.
Writes <results>/table.md and prints it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

CASES = ("ct_abdomen3mm", "ct_aorta", "mr_brainfs", "mr_tumor1")
KS = (2, 3, 4)
CLASSICAL_IMAGE = ("linear", "bspline", "lanczos", "nearest", "optflow")
CLASSICAL_LABELS = ("nearest", "linear", "shape-linear", "shape-cubic", "contour")


def rows_of(path: Path) -> list[dict]:
    return json.loads(path.read_text())["results"]


def pick(rows, task, method, k):
    for r in rows:
        if r["task"] == task and r["method"] == method and r["k"] == k:
            return r
    return None


def best(rows, task, methods, k, key, higher=True):
    cands = [r for r in rows if r["task"] == task and r["method"] in methods and r["k"] == k]
    cands = [r for r in cands if r.get(key) == r.get(key)]            # drop NaN
    if not cands:
        return None
    return (max if higher else min)(cands, key=lambda r: r[key])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / "study"))
    folder = Path(ap.parse_args().results)
    lines = ["| case | k | MedGS PSNR / SSIM | best classical PSNR (method) | SSIM best classical | "
             "ΔPSNR | MedGS Dice / HD95 mm | best classical Dice (method) | HD95 of best-Dice method |",
             "|---|---|---|---|---|---|---|---|---|"]
    deltas, dice_wins, cells = [], 0, 0
    for case in CASES:
        classical = rows_of(folder / "classical" / f"{case}.json")
        for k in KS:
            mpath = folder / "medgs" / f"{case}_k{k}.json"
            if not mpath.exists():
                lines.append(f"| {case} | {k} | not run | | | | | | |")
                continue
            medgs = rows_of(mpath)
            mi, ml = pick(medgs, "image", "medgs", k), pick(medgs, "labels", "medgs", k)
            bp = best(classical, "image", CLASSICAL_IMAGE, k, "psnr")
            bs = best(classical, "image", CLASSICAL_IMAGE, k, "ssim")
            bd = best(classical, "labels", CLASSICAL_LABELS, k, "dice")
            d = mi["psnr"] - bp["psnr"]
            deltas.append(d)
            cells += 1
            dice_wins += ml["dice"] > bd["dice"]
            lines.append(
                f"| {case} | {k} | {mi['psnr']:.2f} / {mi['ssim']:.3f} | {bp['psnr']:.2f} ({bp['method']}) | "
                f"{bs['ssim']:.3f} | {d:+.2f} | {ml['dice']:.3f} / {ml['hd95']:.2f} | "
                f"{bd['dice']:.3f} ({bd['method']}) | {bd['hd95']:.2f} |")
    if deltas:
        wins = sum(x > 0 for x in deltas)
        lines.append("")
        lines.append(f"MedGS PSNR above the best classical method in {wins} of {len(deltas)} cells, "
                     f"mean ΔPSNR {sum(deltas) / len(deltas):+.2f} dB; label Dice above the best classical "
                     f"label method in {dice_wins} of {cells} cells.")
    text = "\n".join(lines) + "\n"
    (folder / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
