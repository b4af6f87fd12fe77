"""The Python API: volumes in, dense volumes, label maps and meshes out.

- `interpolate_array`: the in-memory core on frames already along numpy axis 0 (used by eval).
- `interpolate`: a Volume in, a denser Volume out (geometry kept, new spacing along the axis).
- `run`: the whole pipeline with labels and meshes; `run_to_files`: the same from/to files.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import TrainConfig, resolve_config
from .errors import InputError
from .geometry import Volume, numpy_axis

log = logging.getLogger(__name__)


@dataclass
class InterpResult:
    image: np.ndarray | None           # float32 [n, H, W] in the frames' units
    probs: np.ndarray | None           # float32 [L, n, H, W] label probabilities
    positions: np.ndarray              # output positions in kept-frame units
    info: dict = field(default_factory=dict)
    model: object = None


@dataclass
class RunResult:
    volume: Volume | None
    labels: Volume | None
    probabilities: dict = field(default_factory=dict)   # label value -> Volume (float32)
    meshes: list = field(default_factory=list)          # mesh.Mesh
    info: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)


def default_config(preset_name: str = "fast", device: str = "auto", **options) -> TrainConfig:
    """config.resolve_config without overrides (kept for API users)."""
    return resolve_config(preset_name, device, **options)


def interpolate_array(frames, factor=None, *, spacing_ratio=None, positions=None, masks=None, mask_frames=None,
                      config: TrainConfig | None = None, pipeline: str | None = None, keep_known: bool = True,
                      progress=None, cancel=None) -> InterpResult:
    """Train on kept frames [F, H, W] (float32, ~[0, 1]) and render the dense stack.

    masks [L, F, H, W] (one channel per label, 0/1) add label heads (joint pipeline); with
    `mask_frames` only those frames are annotated. `info["label_support"]` lists the output slices where the labels are the user's (for
    labels.decode(support=...)).
    """
    import torch
    from .slice_grid import paste_known, render_positions, target_positions
    from .train import Trainer
    cfg = config or default_config()
    if frames is None and masks is None:
        raise InputError("nothing to interpolate: give frames, masks or both")
    ref = frames if frames is not None else masks[0]
    if ref.ndim != 3 or ref.shape[0] < 2:
        raise InputError(f"need at least 2 frames of shape [F, H, W], got {tuple(ref.shape)}")
    if frames is not None and not np.all(np.isfinite(frames)):
        raise InputError("the frames contain NaN or Inf values")
    F, H, W = ref.shape
    if positions is None:
        positions = target_positions(F, factor=factor, spacing_ratio=spacing_ratio)
    if pipeline is None:
        pipeline = "img" if masks is None else ("seg" if frames is None else "joint")
    t_frames = torch.from_numpy(np.clip(frames, 0, None).astype(np.float32)) if frames is not None else None
    targets = None
    if masks is not None:
        targets = np.ascontiguousarray(masks, dtype=np.float32)
    t_masks = torch.from_numpy(targets) if targets is not None else None
    holdout = []
    if cfg.schedule.self_check and frames is not None and pipeline in ("img", "joint"):
        from .selfcheck import pick_validation
        holdout = pick_validation(F, mask_frames)
    trainer = Trainer(t_frames, cfg, masks=t_masks, mask_frames=mask_frames, pipeline=pipeline,
                      progress=progress, cancel=cancel, holdout=holdout)
    res = trainer.train()
    t1 = time.perf_counter()
    image = probs = None
    if frames is not None:
        from .selfcheck import uses_model
        if trainer.selfcheck is not None and not uses_model(trainer.selfcheck) and keep_known:
            # the validated choice (the in-between image, linear, Lanczos) has no model voxel between
            # the kept slices and the kept ones are pasted back: a render would be thrown away (2 s
            # of the README example's 25 on 2 CPU cores)
            image = np.zeros((len(positions), H, W), np.float32)
        else:
            image = render_positions(res.model, positions, F, H, W, trainer.renderer, "image",
                                     progress=progress, cancel=cancel)
        if trainer.selfcheck is not None:     # what the validation chose: model, a mix, or linear
            from .selfcheck import deliver
            fields = trainer.flow.consecutive() if trainer.flow is not None else None
            image = deliver(image, positions, np.clip(frames, 0, None).astype(np.float32), trainer.selfcheck, fields)
        if keep_known:
            image = paste_known(image, positions, frames.astype(np.float32))
    if masks is not None:
        if trainer.label_heads:
            p = render_positions(res.model, positions, F, H, W, trainer.renderer, "seg",
                                 progress=progress, cancel=cancel)
            probs = np.clip(np.moveaxis(p, -1, 0), 0.0, 1.0)
        else:       # deliver_labels="blend": the in-between labels fill the gaps, nothing beyond the ends
            probs = np.zeros((masks.shape[0], len(positions), H, W), np.float32)
        trainer.deliver_labels(probs, positions)      # the self-check's label choice (heads by default)
        support = _support_slices(positions, range(F) if mask_frames is None else mask_frames)
        if keep_known:      # the annotated slices are the user's: put their targets back exactly
            on_grid = [(i, f) for i, f in support.items() if abs(positions[i] - f) < 1e-6]
            for i, f in on_grid:
                probs[:, i] = targets[:, f]
    info = dict(res.info)
    if masks is not None:
        info["label_support"] = sorted(support)
        info["label_heads"] = trainer.label_heads
        if trainer.label_heads_reason:
            info["label_heads_reason"] = trainer.label_heads_reason
    info.update({"render_seconds": time.perf_counter() - t1, "pipeline": pipeline,
                 "frames": [int(F), int(H), int(W)], "output_slices": int(len(positions))})
    if trainer.device.type == "cuda":
        info["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(trainer.device) / 2 ** 30
    return InterpResult(image, probs, positions, info, res.model)


def _support_slices(positions, annotated) -> dict:
    """Output slice index -> annotated frame, for the output slice nearest each annotated frame."""
    positions = np.asarray(positions, dtype=float)
    out = {}
    for f in annotated:
        i = int(np.argmin(np.abs(positions - float(f))))
        out.setdefault(i, int(f))
    return out


def interpolate(volume: Volume, *, factor: float | None = None, spacing: float | None = None, axis="auto",
                config: TrainConfig | None = None, progress=None, cancel=None) -> Volume:
    """A denser copy of `volume` along the slice axis (same origin and direction)."""
    return run(volume, factor=factor, spacing=spacing, axis=axis, config=config, progress=progress,
               cancel=cancel, meshes=False).volume


def run(volume: Volume | None, *, labels: Volume | None = None, factor: float | None = None,
        spacing: float | None = None, axis="auto", keep_every: int = 1, config: TrainConfig | None = None,
        annotated_slices=None, meshes: bool = True, mesh_options=None, color_table=None,
        probabilities: bool = False, progress=None, cancel=None) -> RunResult:
    """The whole job: frames -> train -> dense volume (+ label map, probabilities, meshes).

    - `keep_every` K first drops slices (keep 0, K, 2K, ...): for experiments; with no factor or
      spacing given, the output is then back on the original slice spacing.
    - `annotated_slices`: for a label map annotated on some slices only: "auto" (slices with any
      label), a list of slice indices, or None (every kept slice is annotated).
    """
    from . import frames as fr
    from . import labels as lb
    cfg = config or default_config()
    base = volume if volume is not None else labels
    if base is None:
        raise InputError("give an intensity volume, a label map or both")
    warnings: list[str] = []
    image_axis = fr.choose_axis(base.geometry, axis)
    ax = numpy_axis(image_axis)
    n_all = base.array.shape[ax]
    step = max(1, int(keep_every or 1))
    kept = fr.keep_every(n_all, step) if step > 1 else np.arange(n_all)
    if len(kept) < 2:
        raise InputError(f"need at least 2 slices along axis {image_axis}, got {len(kept)}")
    carried: list[int] = []
    if labels is not None:
        # grid, geometry and value checks; labels in fewer than 2 kept slices are warned about
        warnings += lb.validate_labels(labels, volume, kept_indices=kept, axis=image_axis)
        carried = lb.sparse_label_values(labels.array, kept, ax)
    kept_gap = base.geometry.spacing[image_axis] * step
    if factor is None and spacing is None:
        if step > 1:
            factor = step
        else:
            raise InputError("give an up-sampling factor (e.g. 2) or a target spacing in mm")
    if spacing is not None:
        if spacing <= 0:
            raise InputError(f"target spacing must be positive, got {spacing}")
        ratio, factor_used = spacing / kept_gap, kept_gap / spacing
    else:
        ratio, factor_used = None, float(factor)

    frames = norm = None
    if volume is not None:
        arr = fr.to_frames(volume.array, image_axis)[kept]
        norm = fr.Normalizer().fit(arr)
        frames = norm.forward(arr).astype(np.float32)
    masks = values = mask_frames = None
    table = {}
    if labels is not None:
        larr = fr.to_frames(labels.array, image_axis)[kept]
        values = lb.label_values(larr)
        if not values:
            raise InputError("the label map is empty (no non-zero voxel on the kept slices)")
        table = lb.label_table(labels, color_table)
        masks = lb.one_hot(larr, values)
        if annotated_slices is not None:
            if isinstance(annotated_slices, str) and annotated_slices == "auto":
                ann = lb.detect_annotated_slices(larr, 0)
            else:
                pos = {int(k): j for j, k in enumerate(kept)}
                ann = [pos[int(i)] for i in annotated_slices if int(i) in pos]
            if len(ann) < 2:
                raise InputError("need at least 2 annotated slices to interpolate labels between them")
            mask_frames = [int(i) for i in ann]
    F = len(kept)
    from .slice_grid import target_positions
    positions = target_positions(F, factor=None if ratio is not None else factor_used, spacing_ratio=ratio)
    res = interpolate_array(frames, None, positions=positions, masks=masks, mask_frames=mask_frames, config=cfg,
                            progress=progress, cancel=cancel)
    gap_mm = kept_gap * (positions[1] - positions[0]) if len(positions) > 1 else kept_gap
    geom = base.geometry.with_axis_spacing(image_axis, gap_mm)   # kept[0] == 0: the origin stays
    out = RunResult(None, None, info=dict(res.info))
    if res.image is not None:
        dense = norm.inverse(res.image, volume.array.dtype)
        out.volume = Volume(fr.from_frames(dense, image_axis), geom, "image")
    if res.probs is not None:
        lab = lb.decode(res.probs, values, support=res.info["label_support"])
        # pieces removed by the support rule leave the probabilities too (meshes come from them);
        # only those voxels are touched: a copy of every background voxel's channels would be GBs
        removed = (lab == 0) & (res.probs.max(0) >= lb.DEFAULT_THRESHOLD)
        if removed.any():
            res.probs[:, removed] = np.minimum(res.probs[:, removed], lb.DEFAULT_THRESHOLD - 1e-3)
        if carried:     # one kept slice: nothing to interpolate between, copy it to the nearest slices
            lab = lb.nearest_fill(larr, np.arange(F), positions, values=carried, base=lab)
        out.labels = Volume(fr.from_frames(lab, image_axis), geom, "labels", table)
        if probabilities:
            out.probabilities = {v: Volume(fr.from_frames(res.probs[i], image_axis), geom, "image")
                                 for i, v in enumerate(values)}
        if meshes:
            from . import mesh as ms
            vol_probs = np.stack([fr.from_frames(res.probs[i], image_axis) for i in range(len(values))])
            out.meshes = ms.surfaces_from_probabilities(vol_probs, values, geom, table=table,
                                                        options=mesh_options or ms.MeshOptions())
    out.info.update({"axis": image_axis, "kept_slices": [int(k) for k in kept], "kept_spacing_mm": kept_gap,
                     "output_spacing_mm": gap_mm, "factor": factor_used, "warnings": warnings,
                     "normalizer": norm.to_dict() if norm is not None else None,
                     "labels": [int(v) for v in values] if values else [],
                     "annotated_slices": mask_frames, "labels_carried_by_nearest": carried})
    check = out.info.get("self_check")
    from .selfcheck import self_check_warning
    if check and self_check_warning(check):
        warnings.append(self_check_warning(check))
    for w in warnings:
        log.warning(w)
    return out


def environment() -> dict:
    from .run_environment import environment as _environment
    return _environment()


DEFAULT_MAX_OUTPUT_GB = 4.0


def run_to_files(input_path, out_dir, *, labels_path=None, factor=None, spacing=None, axis="auto", keep_every=1,
                 config: TrainConfig | None = None, preset: str = "fast", device: str = "auto", seed: int = 0,
                 iterations: int | None = None, outputs=("volume", "labels", "meshes"), mesh_format: str = "vtk",
                 mesh_options=None, annotated_slices=None, color_table=None, probabilities: bool = False,
                 overwrite: bool = False, max_output_gb: float = DEFAULT_MAX_OUTPUT_GB, resume: bool = False,
                 checkpoint_every: int = 0, checkpoint_minutes: float = 5.0, options_record: dict | None = None,
                 progress=None, cancel=None) -> RunResult:
    """Read, run, write OUTDIR/volume.<ext>, labels.<ext>, probabilities/, meshes/<name>.<fmt>, run.json.

    Before training: OUTDIR is checked (a folder that can be written, no earlier outputs unless
    `overwrite`), the output size is bounded by `max_output_gb` and checked against the free
    space. The outputs are written as one set (outputs.OutputSet): they appear whole or not at
    all, and `overwrite` replaces the whole previous set. Training state is saved atomically
    every `checkpoint_every` iterations (0: time only) or `checkpoint_minutes` beside OUTDIR
    (`.<OUTDIR name>.medgs-checkpoint.pth`); `resume=True` continues a killed run from it, with
    the same result as an uninterrupted run. The checkpoint is removed once the outputs are in place.
    """
    from . import io
    from . import mesh as ms
    from .checkpoints import Checkpointing, active, file_fingerprint
    from .outputs import OutputSet
    t0 = time.perf_counter()
    if outputs is None or isinstance(outputs, str) or not all(o in _OUTPUT_KINDS for o in outputs):
        raise InputError(f"outputs must be a list of {', '.join(_OUTPUT_KINDS)}, got {outputs!r}")
    step = _positive_int(keep_every, "keep_every")
    out_set = OutputSet(out_dir, overwrite=overwrite)
    volume = io.read_volume(input_path, "image") if input_path is not None else None
    labels = io.read_volume(labels_path, "labels") if labels_path is not None else None
    base = volume if volume is not None else labels
    if base is None:
        raise InputError("give an intensity volume, a label map or both")
    ref_path = Path(input_path if input_path is not None else labels_path)
    ext = io.output_extension(ref_path)
    if ext == ".seg.nrrd":
        ext = ".nrrd"
    want = {"volume": volume is not None and "volume" in outputs, "labels": labels is not None and "labels" in outputs,
            "meshes": labels is not None and "meshes" in outputs, "probabilities": labels is not None and probabilities}
    names = [n for n, on in (("volume" + ext, want["volume"]), ("labels" + ext, want["labels"]),
                             ("meshes", want["meshes"]), ("probabilities", want["probabilities"])) if on]
    out_set.prepare(names + ["run.json"])
    for n in names:
        if n.endswith(ext):
            io.check_writable(out_set.dest / n, overwrite=True)     # a writer for the format exists
    cfg = config or default_config(preset, device, seed=seed, iterations=iterations)
    _check_training_config(cfg)
    n_out, plane = _planned_output(base, factor, spacing, axis, step)
    estimate = _estimate_output_bytes(volume if want["volume"] else None, labels, n_out, plane,
                                      want["labels"], want["probabilities"])
    limit = float(max_output_gb)
    if not (limit > 0):
        raise InputError(f"max_output_gb must be positive, got {max_output_gb}")
    if estimate > limit * 1e9:
        what = f"factor {factor:g}" if factor is not None else (f"spacing {spacing:g} mm" if spacing is not None
                                                                 else f"keep-every {step}")
        raise InputError(f"{what} would make {n_out:,} slices of {plane[0]} x {plane[1]}: {estimate / 1e9:.2f} GB "
                         f"of output, above the {limit:g} GB limit (raise it with --max-output-gb)")
    out_set.check_space(estimate)
    t_load = time.perf_counter() - t0
    mopts = mesh_options or ms.MeshOptions(format=mesh_format)
    ckpt_path = out_set.dest.parent / f".{out_set.dest.name}.medgs-checkpoint.pth"
    fingerprint = {"input": file_fingerprint(input_path), "labels": file_fingerprint(labels_path),
                   "factor": factor, "spacing": spacing, "axis": str(axis), "keep_every": step,
                   "annotated_slices": annotated_slices if isinstance(annotated_slices, (str, type(None)))
                   else [int(i) for i in annotated_slices], "config": cfg.to_dict()}
    ckpt = Checkpointing(ckpt_path, fingerprint, resume=resume, every_iterations=_nonneg_int(checkpoint_every,
                         "checkpoint_every"), every_seconds=60.0 * float(checkpoint_minutes or 0))
    try:
        with active(ckpt):
            res = run(volume, labels=labels, factor=factor, spacing=spacing, axis=axis, keep_every=step, config=cfg,
                      annotated_slices=annotated_slices, meshes=want["meshes"], mesh_options=mopts,
                      color_table=color_table, probabilities=want["probabilities"], progress=progress, cancel=cancel)
    except BaseException:
        if ckpt.saved_step is not None:
            log.warning("training state of step %d kept in %s: run the same command with --resume to continue",
                        ckpt.saved_step, ckpt_path)
        raise
    t_write0 = time.perf_counter()
    mesh_bytes = sum(64 * len(m.vertices) + 48 * m.n_faces for m in res.meshes)
    out_set.check_space(estimate + mesh_bytes)
    files: dict = {}
    dest = out_set.dest
    with out_set.writing() as stage:
        def final(p) -> str:        # paths as they will be once the set is in place
            return str(dest / Path(p).relative_to(stage))
        if res.volume is not None and want["volume"]:
            files["volume"] = final(io.write_volume(res.volume, stage / f"volume{ext}"))
        if res.labels is not None and want["labels"]:
            files["labels"] = final(io.write_volume(res.labels, stage / f"labels{ext}"))
        if res.probabilities:
            (stage / "probabilities").mkdir()
            files["probabilities"] = {int(v): final(io.write_volume(p, stage / "probabilities" / f"label_{v}{ext}"))
                                      for v, p in res.probabilities.items()}
        if res.meshes:
            paths = ms.write_label_meshes(res.meshes, stage / "meshes", options=mopts)
            files["meshes"] = {int(m.label_value): {"name": m.label_name, "color": list(m.color) if m.color else None,
                                                    "path": final(p)} for m, p in zip(res.meshes, paths)}
        info = dict(res.info)
        info["resumed_from_step"] = ckpt.resumed_step
        info["timings_s"] = {"load": t_load, "train": info.get("train_seconds"),
                             "render": info.get("render_seconds"), "write": time.perf_counter() - t_write0,
                             "total": time.perf_counter() - t0}
        record = {"input": str(input_path) if input_path else None,
                  "labels": str(labels_path) if labels_path else None,
                  "options": options_record or {"factor": factor, "spacing": spacing, "axis": axis,
                                                "keep_every": step, "preset": preset, "device": device,
                                                "seed": seed, "iterations": iterations},
                  "config": cfg.to_dict(), "outputs": files, "result": info, "environment": environment()}
        io.write_json(record, stage / "run.json")
    ckpt.discard()
    files["run_json"] = str(dest / "run.json")
    res.files = files
    res.info = info
    return res


_OUTPUT_KINDS = ("volume", "labels", "meshes")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def _nonneg_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{name} must be 0 or a positive whole number, got {value!r}")
    return int(value)


def _check_training_config(cfg: TrainConfig) -> None:
    """Numbers that make a run silently do nothing (an untrained model written as a result).

    0 is "sized from the data" (the CPU variant, sizing.py); the command line and job.json refuse
    a 0 the user typed before it gets here."""
    if isinstance(cfg.schedule.iterations, bool) or int(cfg.schedule.iterations) < 0:
        raise InputError(f"iterations must be a positive whole number, got {cfg.schedule.iterations!r}")
    if isinstance(cfg.model.max_gaussians, bool) or int(cfg.model.max_gaussians) < 0:
        raise InputError(f"max_gaussians must be a positive whole number, got {cfg.model.max_gaussians!r}")


def _planned_output(base: Volume, factor, spacing, axis, step: int) -> tuple[int, tuple[int, int]]:
    """(output slices, (rows, columns) of a slice) of the run `run` will do, before training.

    Factor and spacing are checked here (finite and positive) so that the bound on the output
    size can be computed; the exact grid comes from interpolate.target_positions, as in `run`.
    """
    import math

    from . import frames as fr
    from .slice_grid import target_positions
    image_axis = fr.choose_axis(base.geometry, axis)
    ax = numpy_axis(image_axis)
    shape = base.array.shape
    plane = tuple(int(shape[i]) for i in range(3) if i != ax)
    n_kept = len(fr.keep_every(shape[ax], step)) if step > 1 else int(shape[ax])
    for name, v in (("factor", factor), ("spacing", spacing)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))
                              or not math.isfinite(float(v)) or float(v) <= 0):
            raise InputError(f"{name} must be a positive number, got {v!r}")
    if factor is None and spacing is None:
        factor = step if step > 1 else None
    if n_kept < 2 or (factor is None and spacing is None):
        return max(n_kept, 1), plane           # `run` refuses these with its own message
    kept_gap = base.geometry.spacing[image_axis] * step
    gap = 1.0 / float(factor) if spacing is None else float(spacing) / kept_gap
    rough = (n_kept - 1) / gap + 1
    if rough > 1e8:                            # never build a position array of that size
        return int(rough), plane
    return len(target_positions(n_kept, factor=None if spacing is not None else float(factor),
                                spacing_ratio=gap if spacing is not None else None)), plane


def _estimate_output_bytes(volume: Volume | None, labels: Volume | None, n_out: int, plane, with_labels: bool,
                           with_probabilities: bool) -> int:
    """Uncompressed size of the output volumes: an upper bound of what is written."""
    from .io import smallest_label_dtype
    voxels = int(n_out) * int(plane[0]) * int(plane[1])
    total = 0
    if volume is not None:
        dt = np.dtype(volume.array.dtype)
        total += voxels * (4 if dt == np.float16 else dt.itemsize)
    if labels is not None and with_labels:
        total += voxels * smallest_label_dtype(labels.array).itemsize
    if labels is not None and with_probabilities:
        n_labels = int(np.count_nonzero(np.unique(labels.array)))
        total += voxels * 4 * n_labels
    return total


