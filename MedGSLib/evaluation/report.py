"""Writing an evaluation report: report.json, report.md and PNG figures in one folder.

Every file is written atomically (temporary name in the same folder, then os.replace).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputExistsError
from .run import COMPARED, CLASSICAL_INTENSITY, CLASSICAL_LABELS, EvalFigures

REPORT_FILES = ("report.json", "report.md")

# MedGS v1, Table 1 (brain MRI, mean over volumes): the published numbers to beat.
PAPER_TABLE = [
    (2, 32.70, 33.52, 0.91, 0.91),
    (3, 30.44, 31.50, 0.88, 0.88),
    (5, 28.10, None, 0.84, None),
]


def check_output_dir(out_dir, overwrite: bool = False) -> Path:
    """Fail before any work if the report would overwrite an earlier one without --overwrite."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; the report needs a folder")
    if not overwrite:
        for name in REPORT_FILES:
            if (out / name).exists():
                raise OutputExistsError(f"{out / name} already exists; pass --overwrite to replace the report")
    return out


def _write_bytes(path: Path, data: bytes, overwrite: bool) -> Path:
    from ..io import atomic_output

    with atomic_output(path, overwrite=overwrite) as tmp:
        Path(tmp).write_bytes(data)
    return path


def write_report(report: dict, figures: EvalFigures | None, out_dir, *, overwrite: bool = False) -> dict[str, Path]:
    """Write report.json, report.md and the figures; returns {name: path}."""
    out = check_output_dir(out_dir, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    report = dict(report)
    try:
        import cv2  # noqa: F401 - the figures are drawn with OpenCV
    except ImportError:
        pngs = {}
        report["figures_note"] = "no figures: OpenCV is not installed (pip install opencv-python-headless)"
    else:
        pngs = _figures(report, figures)
    # Slice figures first, then the charts.
    report["figures"] = sorted(pngs, key=lambda n: (not n.startswith("slice_"), n))
    for name, image in pngs.items():
        from .figures import encode_png

        written[name] = _write_bytes(out / name, encode_png(image), True)
    from ..io import dumps_json

    text = dumps_json(report, indent=2)   # strict JSON: NaN -> null (io.json_safe)
    written["report.json"] = _write_bytes(out / "report.json", (text + "\n").encode(), True)
    written["report.md"] = _write_bytes(out / "report.md", markdown(report).encode(), True)
    return written


# ----------------------------------------------------------------------------- figures

def _figures(report: dict, figures: EvalFigures | None) -> dict[str, np.ndarray]:
    from .figures import line_chart, slice_figure

    images: dict[str, np.ndarray] = {}
    rows = report["results"]
    if figures is not None:
        for k, entry in sorted(figures.slices.items()):
            psnr = {r["method"]: r.get("psnr") for r in rows if r["task"] == "image" and r["k"] == k}
            title = (f"{report['case']}: held-out slice {entry['index']} of {report['n_use']}, k={k} "
                     f"(slice axis {report['slice_axis']})")
            images[f"slice_k{k}.png"] = slice_figure(entry, tuple(report["intensity_range"]),
                                                     figures.pixel_aspect, title, psnr=psnr)
    for task, metric, label, name in (("image", "psnr", "PSNR (dB), held-out slices", "psnr_vs_k.png"),
                                      ("image", "ssim", "SSIM, held-out slices", "ssim_vs_k.png"),
                                      ("labels", "dice", "mean Dice, held-out slices", "dice_vs_k.png"),
                                      ("labels", "hd95", "mean HD95 (mm)", "hd95_vs_k.png")):
        series: dict[str, list] = {}
        for r in rows:
            if r["task"] == task:
                series.setdefault(r["method"], []).append((r["k"], r.get(metric)))
        if series:
            images[name] = line_chart(series, f"{report['case']}: {label} vs k", "k (keep every k-th slice)", label)
    return images


# ----------------------------------------------------------------------------- markdown

def _fmt(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}"


_DIGITS = {"psnr": 2, "psnr_slice_mean": 2, "psnr_slice_std": 2, "ssim": 4, "ssim_std": 4,
           "dice": 4, "hd95": 2, "assd": 2, "time_s": 2}


def _cell(row: dict, metric: str, best: dict, vs: dict) -> str:
    text = _fmt(row.get(metric), _DIGITS[metric])
    ref = best.get(metric)
    if row["method"] == "medgs":
        cmp = vs.get(metric)
        if cmp is not None:
            text += " ✓" if cmp["beats"] else " ✗"
        return text
    if ref is not None and ref["method"] == row["method"]:
        text = f"**{text}**"
    return text


def markdown(report: dict) -> str:
    """The human-readable report: case, protocol, one table per task, MedGS vs best classical."""
    rows = report["results"]
    best_all = report.get("best_classical", {})
    vs_all = report.get("medgs_vs_classical", {})
    sp = report["spacing_xyz_mm"]
    lines = [
        f"# MedGS evaluation: {report['case']}",
        "",
        "Held-out-slice protocol (`reference/evaluation.md`): keep every k-th slice, let each method "
        "fill in the rest, score only the held-out slices.",
        "",
        f"- image shape (z, y, x): {tuple(report['shape_zyx'])}, spacing (x, y, z): "
        f"{', '.join(f'{s:.4g}' for s in sp)} mm",
        f"- slice axis: image axis {report['slice_axis']} (gap {report['slice_spacing_mm']:.4g} mm); "
        f"{report['n_slices']} slices, cropped to n_use = {report['n_use']} (lcm of k = {report['lcm']})",
        f"- k: {', '.join(str(k) for k in report['ks'])}; intensity range of the reference "
        f"[{report['intensity_range'][0]:.6g}, {report['intensity_range'][1]:.6g}] maps to [0, 1]",
        f"- device: {report['device']}" + (f"; preset: {report['preset']}" if report.get("preset") else ""),
        f"- command: `{report['command']}`" if report.get("command") else "- command: (Python API)",
        f"- created: {report['created']}",
        "",
        "Bold: the best classical value for that k and metric. On MedGS rows, ✓ = better than the best "
        "classical method, ✗ = not better.",
    ]
    image_rows = [r for r in rows if r["task"] == "image"]
    if image_rows:
        lines += ["", "## Intensity", "",
                  "| k | method | PSNR (dB) | per-slice PSNR mean ± std | SSIM mean ± std | time (s) |",
                  "|---|---|---|---|---|---|"]
        for r in sorted(image_rows, key=lambda r: (r["k"], _order(r["method"], CLASSICAL_INTENSITY))):
            best = best_all.get("image", {}).get(str(r["k"]), {})
            vs = vs_all.get("image", {}).get(str(r["k"]), {})
            lines.append(
                f"| {r['k']} | {r['method']} | {_cell(r, 'psnr', best, vs)} | "
                f"{_fmt(r.get('psnr_slice_mean'), 2)} ± {_fmt(r.get('psnr_slice_std'), 2)} | "
                f"{_cell(r, 'ssim', best, vs)} ± {_fmt(r.get('ssim_std'), 4)} | {_fmt(r['time_s'], 2)} |"
            )
        lines += ["", "Per-slice PSNR leaves out slices predicted exactly (infinite PSNR, e.g. empty "
                  "background slices); the pooled PSNR counts every held-out voxel."]
    label_rows = [r for r in rows if r["task"] == "labels"]
    if label_rows:
        lines += ["", "## Labels", "",
                  f"Mean over {len(report['label_values'])} label values "
                  "(a label absent from truth and prediction on the held-out slices is not scored).",
                  "",
                  "| k | method | Dice | HD95 (mm) | ASSD (mm) | labels scored | time (s) |",
                  "|---|---|---|---|---|---|---|"]
        for r in sorted(label_rows, key=lambda r: (r["k"], _order(r["method"], CLASSICAL_LABELS))):
            best = best_all.get("labels", {}).get(str(r["k"]), {})
            vs = vs_all.get("labels", {}).get(str(r["k"]), {})
            lines.append(
                f"| {r['k']} | {r['method']} | {_cell(r, 'dice', best, vs)} | {_cell(r, 'hd95', best, vs)} | "
                f"{_cell(r, 'assd', best, vs)} | {r.get('labels_scored', '-')} | {_fmt(r['time_s'], 2)} |"
            )
    lines += ["", "## MedGS against the best classical method", ""]
    if vs_all:
        lines += ["| task | k | metric | best classical | MedGS | difference | MedGS better? |",
                  "|---|---|---|---|---|---|---|"]
        for task in ("image", "labels"):
            for k, per_metric in sorted(vs_all.get(task, {}).items(), key=lambda kv: int(kv[0])):
                for metric in COMPARED[task]:
                    c = per_metric.get(metric)
                    if c is None:
                        continue
                    d = _DIGITS[metric]
                    lines.append(
                        f"| {task} | {k} | {metric} | {_fmt(c['best'], d)} ({c['best_method']}) | "
                        f"{_fmt(c['medgs'], d)} | {c['delta']:+.{d}f} | {'yes' if c['beats'] else 'no'} |"
                    )
    else:
        lines.append("MedGS was not run (add `medgs` to --methods / --label-methods).")
    lines += ["", "### Best classical method per k", "",
              "| task | k | metric | method | value |", "|---|---|---|---|---|"]
    for task in ("image", "labels"):
        for k, per_metric in sorted(best_all.get(task, {}).items(), key=lambda kv: int(kv[0])):
            for metric in COMPARED[task]:
                if metric in per_metric:
                    b = per_metric[metric]
                    lines.append(f"| {task} | {k} | {metric} | {b['method']} | {_fmt(b['value'], _DIGITS[metric])} |")
    figures = report.get("figures") or []
    if report.get("figures_note"):
        lines += ["", f"_{report['figures_note']}_"]
    if figures:
        lines += ["", "## Figures", ""]
        for name in figures:
            lines += [f"![{name}]({name})", ""]
    lines += ["", "## Published reference (MedGS v1, Table 1: brain MRI, mean over volumes; not this case)", "",
              "| k | linear PSNR | MedGS PSNR | linear SSIM | MedGS SSIM |", "|---|---|---|---|---|"]
    for k, lp, mp, ls, ms in PAPER_TABLE:
        lines.append(f"| {k} | {_fmt(lp, 2)} | {_fmt(mp, 2)} | {_fmt(ls, 2)} | {_fmt(ms, 2)} |")
    return "\n".join(lines) + "\n"


def _order(method: str, classical: tuple[str, ...]) -> int:
    return classical.index(method) if method in classical else len(classical)
