"""`medgs eval BATCHDIR -o REPORTDIR`: one cohort report from a `medgs batch` folder.

No case is trained again: a batch has no held-out ground truth beyond what each run measured
itself, so the cohort numbers are each run's self-check (the estimated gain over linear
interpolation on held-out kept slices, selfcheck.py, in run.json) and its times, per case and
aggregated (mean, median, range; how many cases delivered linear interpolation instead of MedGS).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from .report import check_output_dir

BATCH_REPORT_VERSION = 1


def _case_row(case: dict) -> dict:
    row = {k: case.get(k) for k in ("name", "status", "reason", "seconds", "gain_db", "dice_gain", "choice")}
    if case.get("status") in ("done", "skipped"):
        try:
            rec = json.loads((Path(case["output"]) / "run.json").read_text(encoding="utf-8"))
        except (OSError, KeyError, TypeError, json.JSONDecodeError):
            row["status"], row["reason"] = "missing", "run.json of this case cannot be read"
            return row
        result = rec.get("result") or {}
        check = result.get("self_check") or {}
        row.update(gain_db=check.get("gain_db"), dice_gain=check.get("dice_gain"), choice=check.get("choice"),
                   model_gain_db=check.get("model_gain_db"), iterations=result.get("iterations_run"),
                   gaussians=result.get("gaussians"), device=result.get("device"),
                   train_s=(result.get("timings_s") or {}).get("train"),
                   total_s=(result.get("timings_s") or {}).get("total"))
    return row


def _stats(values: list) -> dict | None:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    return {"n": len(values), "mean": statistics.fmean(values), "median": statistics.median(values),
            "min": min(values), "max": max(values)}


def read_batch(batch_dir) -> dict:
    """batch.json of a batch folder (written by batch/status.py)."""
    from ..errors import InputError
    path = Path(batch_dir) / "batch.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{batch_dir} is a folder without batch.json: give an image file, or a "
                         "`medgs batch` output folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} cannot be read as JSON: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise InputError(f"{path} is not a batch record (no 'cases' list)")
    return doc


def batch_report(batch_dir) -> dict:
    """The cohort report of a batch folder (its batch.json and each case's run.json)."""
    doc = read_batch(batch_dir)
    rows = [_case_row(c) for c in doc["cases"]]
    ok = [r for r in rows if r["status"] in ("done", "skipped")]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {"version": BATCH_REPORT_VERSION, "batch": str(Path(batch_dir).absolute()), "command": doc.get("command"),
            "cases": len(rows), "counts": counts,
            "gain_db": _stats([r.get("gain_db") for r in ok]), "dice_gain": _stats([r.get("dice_gain") for r in ok]),
            "model_gain_db": _stats([r.get("model_gain_db") for r in ok]),
            "delivered_linear": sum(r.get("choice") == "linear" for r in ok),
            "train_s": _stats([r.get("train_s") for r in ok]), "total_s": _stats([r.get("total_s") for r in ok]),
            "batch_summary": doc.get("summary"), "rows": rows}


def _f(v, digits=2, sign=False) -> str:
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def markdown(report: dict) -> str:
    lines = [f"# MedGS cohort: {report['batch']}", "",
             "Per case: each run's own self-check (estimated gain over linear interpolation on held-out "
             "kept slices) and times; no case was trained again.", "",
             "- cases: " + ", ".join(f"{n} {s}" for s, n in sorted(report["counts"].items()))]
    for key, label, unit in (("gain_db", "estimated gain over linear", " dB"), ("dice_gain", "Dice gain", ""),
                             ("total_s", "time per case", " s")):
        s = report[key]
        if s:
            lines.append(f"- {label}: mean {_f(s['mean'], 3)}{unit}, median {_f(s['median'], 3)}{unit}, "
                         f"range {_f(s['min'], 3)} .. {_f(s['max'], 3)}{unit} over {s['n']} cases")
    lines += [f"- cases that delivered linear interpolation (the self-check found MedGS worse): "
              f"{report['delivered_linear']}", "",
              "| case | status | gain (dB) | Dice gain | delivered | iterations | time (s) | reason |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['name']} | {r['status']} | {_f(r.get('gain_db'), 2, True)} | "
                     f"{_f(r.get('dice_gain'), 3, True)} | {r.get('choice') or '-'} | {r.get('iterations') or '-'} | "
                     f"{_f(r.get('total_s') or r.get('seconds'), 1)} | {r.get('reason') or ''} |")
    return "\n".join(lines) + "\n"


def write_batch_report(batch_dir, out_dir, *, overwrite: bool = False) -> dict:
    """report.json and report.md of the cohort in REPORTDIR; returns the report (with "written")."""
    from ..io import atomic_output, write_json
    out = check_output_dir(out_dir, overwrite)
    report = batch_report(batch_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / "report.json", overwrite=True)
    with atomic_output(out / "report.md", overwrite=True) as tmp:
        tmp.write_text(markdown(report), encoding="utf-8")
    report["written"] = {"report.json": str(out / "report.json"), "report.md": str(out / "report.md")}
    return report
