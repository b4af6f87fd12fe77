"""`medgs eval`: score MedGS and the classical baselines on one case by the held-out-slice protocol.

  medgs eval IMAGE [--labels LABELMAP] --k 2 3 4 [--methods ...] [--label-methods ...]
             [--axis auto|0|1|2] [--preset fast|quality|paper] [--set SECTION.NAME=VALUE ...] [--device auto|cpu|cuda] -o REPORTDIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError, MedGSError

from ..evaluation.methods import INTENSITY_METHODS as _INTENSITY, LABEL_METHODS as _LABELS


def parse_values(text: str | None) -> list[int] | None:
    """'2,41,4-5' -> [2, 41, 4, 5]; None stays None."""
    if text is None:
        return None
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else part[1:].split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError as err:
            raise InputError(f"cannot read label values {text!r}: use e.g. 2,41,4-5") from err
    if not out:
        raise InputError(f"no label values in {text!r}")
    return out


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `eval` sub-command to an argparse sub-parser set; sets func=main_eval."""
    p = subparsers.add_parser(
        "eval",
        help="score MedGS and classical baselines on held-out slices of a case",
        description=(
            "Keep every k-th slice of IMAGE (and LABELMAP), let each method fill in the rest, and score "
            "only the held-out slices (PSNR, SSIM; Dice, HD95, ASSD). Writes REPORTDIR/report.json, "
            "report.md and PNG figures. Protocol: reference/evaluation.md."
        ),
    )
    p.add_argument("input", metavar="IMAGE", help="[REQUIRED] intensity volume (.nii/.nii.gz/.nrrd/.mha), or a "
                   "`medgs batch` folder: one cohort report from its cases' run.json (no training)")
    p.add_argument("--labels", default=None, metavar="LABELMAP", help="label map on the same grid (optional)")
    p.add_argument("--k", type=int, nargs="+", default=[2, 3, 4], metavar="K",
                   help="factors: keep every k-th slice (default: 2 3 4)")
    p.add_argument("--methods", nargs="*", default=list(_INTENSITY), metavar="M",
                   help=f"intensity methods among {', '.join(_INTENSITY)} (default: all)")
    p.add_argument("--label-methods", nargs="*", default=list(_LABELS), metavar="M",
                   help=f"label methods among {', '.join(_LABELS)} (default: all; needs --labels)")
    p.add_argument("--label-values", default=None, metavar="V,V,...",
                   help="score only these label values, e.g. 2,41,4-5 (default: every label)")
    p.add_argument("--axis", default="auto", choices=("auto", "0", "1", "2"),
                   help="image axis to thin out (0=i, 1=j, 2=k; default auto = largest spacing, ties -> k)")
    p.add_argument("--preset", default="fast", choices=("fast", "quality", "paper"),
                   help="MedGS training preset (default: fast)")
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.NAME=VALUE", dest="overrides",
                   help="MedGS training options over the preset, e.g. loss.ibfr=1.0 schedule.iterations=3000")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="MedGS device (default: auto)")
    p.add_argument("-o", "--output", required=True, metavar="REPORTDIR", help="[REQUIRED] report folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report in REPORTDIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=main_eval)
    return p


def main_eval(args: argparse.Namespace) -> int:
    """Run `medgs eval`; returns the exit code (0 done, 2 a MedGSError, printed as one line)."""
    from ..evaluation.command import eval_command_line, run_eval_files

    if Path(args.input).is_dir():
        return _eval_batch(args)
    try:
        axis = args.axis if args.axis == "auto" else int(args.axis)
        values = parse_values(args.label_values)
        command = eval_command_line(args.input, args.output, labels_path=args.labels, ks=args.k,
                                    methods=args.methods, label_methods=args.label_methods, axis=axis,
                                    preset=args.preset, device=args.device, label_values=values,
                                    overwrite=args.overwrite, overrides=args.overrides)
        report = run_eval_files(
            args.input, args.output, labels_path=args.labels, ks=args.k, methods=args.methods,
            label_methods=args.label_methods, axis=axis, preset=args.preset, device=args.device,
            label_values=values, overwrite=args.overwrite, command=command, overrides=args.overrides,
            progress_bar=not args.no_progress,
        )
    except MedGSError as err:
        print(f"medgs eval: error: {err}", file=sys.stderr)
        return 2
    _print_summary(report)
    return 0


def _eval_batch(args: argparse.Namespace) -> int:
    """`medgs eval BATCHDIR -o REPORTDIR`: aggregate a cohort (evaluation/batch_report.py)."""
    from ..evaluation.batch_report import write_batch_report
    try:
        report = write_batch_report(args.input, args.output, overwrite=args.overwrite)
    except MedGSError as err:
        print(f"medgs eval: error: {err}", file=sys.stderr)
        return 2
    g = report["gain_db"]
    gain = f"; estimated gain over linear: mean {g['mean']:+.2f} dB, median {g['median']:+.2f} dB" if g else ""
    print(f"{report['cases']} cases ({', '.join(f'{n} {s}' for s, n in sorted(report['counts'].items()))}){gain}")
    print(f"report: {report['written']['report.md']}")
    return 0


def _print_summary(report: dict) -> None:
    best = report.get("best_classical", {})
    vs = report.get("medgs_vs_classical", {})
    for task, metric, unit in (("image", "psnr", " dB"), ("labels", "dice", "")):
        for k, per in sorted(best.get(task, {}).items(), key=lambda kv: int(kv[0])):
            if metric not in per:
                continue
            b = per[metric]
            line = f"k={k} {metric}: best classical {b['method']} {b['value']:.4g}{unit}"
            c = vs.get(task, {}).get(k, {}).get(metric)
            if c is not None:
                line += f"; medgs {c['medgs']:.4g}{unit} ({c['delta']:+.3g}, {'better' if c['beats'] else 'not better'})"
            print(line)
    print(f"report: {report['written']['report.md']}")
