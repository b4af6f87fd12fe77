"""`run_eval`: the held-out-slice protocol for one case, every method, every factor k.

Crop to the common length, keep every k-th slice, run each method on the kept slices only,
score the held-out slices only (reference/evaluation.md). Returns a JSON-serialisable report
dict; `report.write_report` turns it into report.json / report.md / PNG figures.
"""
from __future__ import annotations

import datetime as _dt
import math
import platform
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import CancelledError, InputError
from ..geometry import Volume
from . import metrics, protocol
from .errors import UnknownMethodError

from .methods import CLASSICAL_INTENSITY, CLASSICAL_LABELS, INTENSITY_METHODS, LABEL_METHODS  # noqa: F401

# Which direction is better, per reported metric.
HIGHER_IS_BETTER = {"psnr": True, "psnr_slice_mean": True, "ssim": True, "dice": True,
                    "hd95": False, "assd": False}
COMPARED = {"image": ("psnr", "ssim"), "labels": ("dice", "hd95", "assd")}

# The methods the PNG slice figure shows, in order (only those that were run).
FIGURE_METHODS = ("linear", "bspline", "medgs")


@dataclass
class EvalFigures:
    """Small 2D slices kept for the report's figures (the full predictions are not kept)."""

    slices: dict[int, dict] = field(default_factory=dict)   # k -> {"index", "truth", method: 2D}
    pixel_aspect: float = 1.0                                  # d_row / d_col of the slices


def _methods(names, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    out: list[str] = []
    for name in names or ():
        key = str(name).strip().lower()
        if key not in allowed:
            raise UnknownMethodError(f"unknown {what} method {name!r}; choose from {', '.join(allowed)}")
        if key not in out:
            out.append(key)
    return tuple(out)


def _check_inputs(image: Volume, labels: Volume | None) -> None:
    if not isinstance(image, Volume):
        raise InputError(f"run_eval needs a Volume for the image, got {type(image).__name__}")
    if image.kind != "image":
        raise InputError("the evaluated volume must be an intensity image, not a label map")
    if labels is None:
        return
    if not isinstance(labels, Volume):
        raise InputError(f"labels must be a Volume or None, got {type(labels).__name__}")
    if labels.shape != image.shape:
        raise InputError(f"the label map has shape {labels.shape} but the image has {image.shape}")
    if not labels.geometry.allclose(image.geometry):
        raise InputError(
            "the label map and the image are not on the same grid: "
            + labels.geometry.describe_difference(image.geometry)
        )


def run_eval(image: Volume, labels: Volume | None = None, ks=(2, 3, 4),
             methods=INTENSITY_METHODS, label_methods=LABEL_METHODS, *, axis="auto", preset: str = "fast", device: str = "auto", label_values=None,
             case: str | None = None, command: str | None = None, progress_bar: bool = False,
             progress: Callable[[dict], None] | None = None,
             cancel: Callable[[], bool] | None = None, overrides=()) -> dict:
    """Evaluate methods on one case by the held-out-slice protocol; returns the report dict.

    `methods` / `label_methods` default to everything, MedGS included (which trains once per
    k); pass the classical names only for a quick baseline table. `label_methods` is ignored
    without `labels`. The report's "results" rows hold one (task, method, k) each.
    """
    report, _ = evaluate(image, labels, ks, methods, label_methods, axis=axis, preset=preset,
                         device=device, label_values=label_values, case=case, command=command,
                         progress_bar=progress_bar, progress=progress, cancel=cancel, overrides=overrides)
    return report


def evaluate(image: Volume, labels: Volume | None, ks, methods, label_methods, *, axis="auto",
             preset: str = "fast", device: str = "auto", label_values=None, case: str | None = None,
             command: str | None = None, progress_bar: bool = False,
             progress: Callable[[dict], None] | None = None,
             cancel: Callable[[], bool] | None = None, overrides=()) -> tuple[dict, EvalFigures]:
    """`run_eval` that also returns the slices the report's figures show."""
    _check_inputs(image, labels)
    methods = _methods(methods, INTENSITY_METHODS, "intensity")
    label_methods = _methods(label_methods, LABEL_METHODS, "label") if labels is not None else ()
    if not methods and not label_methods:
        raise InputError("nothing to evaluate: give at least one method (or labels and a label method)")

    image_axis = protocol.choose_slice_axis(image.geometry, axis)
    spacing = protocol.slice_first_spacing(image.geometry, image_axis)
    volume = protocol.slice_first(image.array, image_axis)
    plan = protocol.SlicePlan.build(volume.shape[0], ks)
    truth = np.ascontiguousarray(volume[: plan.n_use], dtype=np.float32)
    if not np.all(np.isfinite(truth)):
        raise InputError("the image contains NaN or infinite values")
    value_range = metrics.unit_range(truth)

    truth_labels = None
    values: list[int] = []
    if labels is not None:
        lab = protocol.slice_first(labels.array, image_axis)[: plan.n_use]
        if not np.issubdtype(lab.dtype, np.integer):
            from ..label_arrays import check_whole_numbers
            check_whole_numbers(lab, "the label map")
            lab = lab.astype(np.int64)
        truth_labels = np.ascontiguousarray(lab)
        present = [int(v) for v in np.unique(truth_labels) if v != 0]
        if label_values is None:
            values = present
        else:
            wanted = [int(v) for v in label_values]
            missing = [v for v in wanted if v not in set(present)]
            if missing:
                raise InputError(f"label values {missing} are not in the label map's evaluated slices")
            values = wanted
        if not values and label_methods:
            raise InputError("the label map is empty on the evaluated slices: no label to score")

    tasks: list[tuple[str, int]] = []
    for k in plan.ks:
        for m in methods:
            tasks.append((m, k))
        for m in label_methods:
            if m == "medgs" and "medgs" in methods:
                continue    # one MedGS run per k gives both the image and the labels
            tasks.append((f"labels:{m}", k))
    # Contour runs last: its ITK process loads (about 10 s, once) while the others run.
    tasks.sort(key=lambda t: t[0] == "labels:contour")

    rows: list[dict] = []
    medgs_info: dict[str, dict] = {}
    figures = EvalFigures(pixel_aspect=spacing[1] / spacing[2])
    worker = None
    bar = None
    try:
        if "contour" in label_methods:
            from .contour_worker import ContourWorker

            worker = ContourWorker().start()   # ITK loads in its process while other methods run
        if progress_bar:
            try:
                from tqdm.auto import tqdm
            except ImportError:     # the bar is a convenience: run without it
                tqdm = None
            if tqdm is not None:
                bar = tqdm(total=len(tasks), desc="medgs eval", unit="run")
        for i, (name, k) in enumerate(tasks):
            if cancel is not None and cancel():
                raise CancelledError("evaluation cancelled")
            label_task = name.startswith("labels:")
            method = name.split(":", 1)[1] if label_task else name
            if bar is not None:
                bar.set_description(f"{'labels ' if label_task else ''}{method} k={k}")
            if progress is not None:
                progress({"event": "progress", "stage": "eval", "iteration": i, "total": len(tasks),
                          "method": method, "task": "labels" if label_task else "image", "k": k})
            kept_idx = plan.kept(k)
            heldout = protocol.heldout_mask(plan.n_use, k)
            if method == "medgs":
                want_labels = truth_labels is not None and "medgs" in label_methods
                out, seconds = _run_medgs(truth, truth_labels if want_labels else None, values, k,
                                          kept_idx, preset, device, _inner_progress(bar, progress), cancel,
                                          overrides)
                medgs_info[str(k)] = out.info
                if not label_task:
                    rows.append(_image_row(out.image, truth, heldout, value_range, "medgs", k, seconds))
                    _keep_figure(figures, "medgs", k, plan.n_use, truth, out.image)
                if want_labels:
                    row = _label_row(out.labels, truth_labels, heldout, spacing, values, "medgs", k, seconds)
                    if not label_task:
                        row["time_note"] = "one joint image + label run"
                    rows.append(row)
            elif label_task:
                from .baselines_labels import LABEL_BASELINES

                kept = truth_labels[kept_idx]
                extra = {}
                if method == "contour":
                    worker.wait_ready()    # ITK's one-time import is not the method's time
                    extra["worker"] = worker
                t0 = time.perf_counter()
                pred = LABEL_BASELINES[method](kept, k, spacing, values, **extra)
                seconds = time.perf_counter() - t0
                rows.append(_label_row(pred, truth_labels, heldout, spacing, values, method, k, seconds))
            else:
                from .baselines_intensity import INTENSITY_BASELINES

                t0 = time.perf_counter()
                pred = INTENSITY_BASELINES[method](truth[kept_idx], k, spacing)
                seconds = time.perf_counter() - t0
                rows.append(_image_row(pred, truth, heldout, value_range, method, k, seconds))
                _keep_figure(figures, method, k, plan.n_use, truth, pred)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if worker is not None:
            worker.close()

    report = {
        "schema": "medgs-eval/1",
        "case": case or "case",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "shape_zyx": list(image.shape),
        "spacing_xyz_mm": list(image.geometry.spacing),
        "slice_axis": image_axis,
        "slice_spacing_mm": spacing[0],
        "inplane_spacing_mm": [spacing[1], spacing[2]],
        "n_slices": plan.n,
        "n_use": plan.n_use,
        "ks": list(plan.ks),
        "lcm": plan.period,
        "intensity_range": list(value_range),
        "label_values": values,
        "methods": list(methods),
        "label_methods": list(label_methods),
        "preset": preset if ("medgs" in methods or "medgs" in label_methods) else None,
        "overrides": list(overrides or ()),
        "device": _device_text(device, medgs_info),
        "environment": _environment(),
        "results": rows,
        "medgs_info": medgs_info,
    }
    report["best_classical"] = best_classical(rows)
    report["medgs_vs_classical"] = medgs_vs_classical(rows, report["best_classical"])
    if progress is not None:
        progress({"event": "progress", "stage": "eval", "iteration": len(tasks), "total": len(tasks)})
    return report, figures


def _inner_progress(bar, progress):
    """MedGS's own progress events: shown on the bar (stage, iteration) and passed on."""
    if bar is None:
        return progress
    last = [0.0]

    def callback(event: dict) -> None:
        if progress is not None:
            progress(event)
        if event.get("event") != "progress":
            return
        now = time.monotonic()
        if now - last[0] < 0.5:     # a few bar refreshes a second are enough
            return
        last[0] = now
        text = str(event.get("stage", ""))
        if event.get("total"):
            text += f" {event.get('iteration', 0)}/{event['total']}"
        if isinstance(event.get("psnr"), (int, float)):
            text += f" psnr {event['psnr']:.2f}"
        bar.set_postfix_str(text.strip())

    return callback


def _run_medgs(truth, truth_labels, values, k, kept_idx, preset, device, progress, cancel, overrides=()):
    from .medgs_method import run_medgs

    kept_labels = truth_labels[kept_idx] if truth_labels is not None else None
    t0 = time.perf_counter()
    out = run_medgs(truth[kept_idx], k, kept_labels=kept_labels, label_values=values or None,
                    preset=preset, device=device, progress=progress, cancel=cancel, overrides=overrides)
    return out, time.perf_counter() - t0


def _image_row(pred, truth, heldout, value_range, method, k, seconds) -> dict:
    if pred.shape != truth.shape:
        raise InputError(f"{method} returned shape {pred.shape}, expected {truth.shape}")
    scores = metrics.intensity_scores(pred, truth, heldout, value_range)
    return {"task": "image", "method": method, "k": int(k), **scores, "time_s": float(seconds)}


def _label_row(pred, truth, heldout, spacing, values, method, k, seconds) -> dict:
    if pred.shape != truth.shape:
        raise InputError(f"{method} returned a label map of shape {pred.shape}, expected {truth.shape}")
    scores = metrics.label_scores(pred, truth, heldout, spacing, values)
    per_label = {str(v): s for v, s in scores.pop("per_label").items()}
    return {"task": "labels", "method": method, "k": int(k), **scores, "time_s": float(seconds),
            "per_label": per_label}


def figure_slice_index(n_use: int, k: int) -> int:
    """The held-out slice the figure shows: offset k // 2 from a kept slice (the farthest
    from both kept neighbours), nearest the middle of the volume."""
    candidates = np.arange(k // 2, n_use, k)
    candidates = candidates[candidates % k != 0]
    return int(candidates[np.argmin(np.abs(candidates - (n_use - 1) / 2))])


def _keep_figure(figures: EvalFigures, method: str, k: int, n_use: int, truth, pred) -> None:
    if method not in FIGURE_METHODS:
        return
    entry = figures.slices.setdefault(k, {})
    if "index" not in entry:
        entry["index"] = figure_slice_index(n_use, k)
        entry["truth"] = np.array(truth[entry["index"]], dtype=np.float32)
    entry[method] = np.array(pred[entry["index"]], dtype=np.float32)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def best_classical(rows: list[dict]) -> dict:
    """{task: {k: {metric: {"method", "value"}}}}: the best classical value per metric."""
    out: dict = {}
    for task, names in (("image", CLASSICAL_INTENSITY), ("labels", CLASSICAL_LABELS)):
        for row in rows:
            if row["task"] != task or row["method"] not in names:
                continue
            per_k = out.setdefault(task, {}).setdefault(str(row["k"]), {})
            for metric in COMPARED[task]:
                v = row.get(metric)
                if not _finite(v) and not (metric == "psnr" and v == math.inf):
                    continue
                cur = per_k.get(metric)
                better = (cur is None or (v > cur["value"] if HIGHER_IS_BETTER[metric] else v < cur["value"]))
                if better:
                    per_k[metric] = {"method": row["method"], "value": v}
    return out


def medgs_vs_classical(rows: list[dict], best: dict) -> dict:
    """{task: {k: {metric: {"medgs", "best", "best_method", "delta", "beats"}}}} where MedGS ran."""
    out: dict = {}
    for row in rows:
        if row["method"] != "medgs":
            continue
        ref = best.get(row["task"], {}).get(str(row["k"]), {})
        for metric in COMPARED[row["task"]]:
            if metric not in ref or not _finite(row.get(metric)) or not _finite(ref[metric]["value"]):
                continue
            mine, theirs = row[metric], ref[metric]["value"]
            higher = HIGHER_IS_BETTER[metric]
            out.setdefault(row["task"], {}).setdefault(str(row["k"]), {})[metric] = {
                "medgs": mine, "best": theirs, "best_method": ref[metric]["method"],
                "delta": mine - theirs, "beats": bool(mine > theirs if higher else mine < theirs),
            }
    return out


def _device_text(device: str, medgs_info: dict) -> str:
    used = {str(info.get("device")) for info in medgs_info.values() if info.get("device")}
    cpu = platform.processor() or platform.machine()
    if used:
        return f"MedGS on {', '.join(sorted(used))}; baselines on CPU ({cpu})"
    return f"CPU ({cpu}); MedGS not run" if not medgs_info else f"MedGS device {device}; CPU ({cpu})"


def _environment() -> dict:
    from ..run_environment import environment
    return environment()
