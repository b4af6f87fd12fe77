"""The Python API: volumes in, dense volumes, label maps and meshes out.

- `interpolate_array`: the in-memory core on frames already along numpy axis 0 (used by eval).
- `interpolate`: a Volume in, a denser Volume out (geometry kept, new spacing along the axis).
- `run`: the whole pipeline with labels and meshes; `run_to_files`: the same from/to files.
"""
from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import TrainConfig, preset
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


def default_config(preset_name: str = "fast", device: str = "auto", **overrides) -> TrainConfig:
    cfg = preset(preset_name)
    cfg.device = device
    if preset_name in ("fast", "quality") and _resolves_to_cpu(device):
        # on a CPU the Gaussians and the iterations follow the data and a time budget: 0 = sized
        # by sizing.py once the Trainer knows the kept frames' shape
        from .sizing import CPU_FRAMES_PER_STEP
        cfg.schedule.iterations = 0
        cfg.schedule.frames_per_step = CPU_FRAMES_PER_STEP
        cfg.model.num_points = 0
        cfg.model.max_gaussians = 0
    for k, v in overrides.items():
        if v is None:
            continue
        if k == "iterations":
            cfg.schedule.iterations = int(v)
        elif k == "seed":
            cfg.seed = int(v)
        elif k == "max_gaussians":
            cfg.model.max_gaussians = int(v)
        elif k == "poly_degree":
            cfg.model.poly_degree = int(v)
        elif k == "renderer":
            cfg.renderer = v
        else:
            raise InputError(f"unknown option {k!r}")
    return cfg


def _resolves_to_cpu(device) -> bool:
    if device in (None, "", "auto"):
        import torch
        return not torch.cuda.is_available()
    return str(device) == "cpu"


def interpolate_array(frames, factor=None, *, spacing_ratio=None, positions=None, masks=None, mask_frames=None,
                      config: TrainConfig | None = None, pipeline: str | None = None, keep_known: bool = True,
                      progress=None, cancel=None) -> InterpResult:
    """Train on kept frames [F, H, W] (float32, ~[0, 1]) and render the dense stack.

    masks [L, F, H, W] (one channel per label, 0/1) add label heads (joint pipeline).
    """
    import torch
    from .interpolate import paste_known, render_positions, target_positions
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
    t_masks = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32)) if masks is not None else None
    trainer = Trainer(t_frames, cfg, masks=t_masks, mask_frames=mask_frames, pipeline=pipeline,
                      progress=progress, cancel=cancel)
    res = trainer.train()
    t1 = time.perf_counter()
    image = probs = None
    if frames is not None:
        image = render_positions(res.model, positions, F, H, W, trainer.renderer, "image",
                                 progress=progress, cancel=cancel)
        if keep_known:
            image = paste_known(image, positions, frames.astype(np.float32))
    if masks is not None:
        p = render_positions(res.model, positions, F, H, W, trainer.renderer, "seg",
                             progress=progress, cancel=cancel)
        probs = np.clip(np.moveaxis(p, -1, 0), 0.0, 1.0)
        if keep_known and mask_frames is None:
            probs = np.stack([paste_known(probs[c], positions, masks[c].astype(np.float32))
                              for c in range(probs.shape[0])])
    info = dict(res.info)
    info.update({"render_seconds": time.perf_counter() - t1, "pipeline": pipeline,
                 "frames": [int(F), int(H), int(W)], "output_slices": int(len(positions))})
    if trainer.device.type == "cuda":
        info["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(trainer.device) / 2 ** 30
    return InterpResult(image, probs, positions, info, res.model)


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
    from .interpolate import target_positions
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
        lab = lb.decode(res.probs, values)
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
    for w in warnings:
        log.warning(w)
    return out


def environment() -> dict:
    import torch
    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "platform": platform.platform()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    try:
        from importlib.metadata import version
        env["medgs"] = version("medgs")
    except Exception:
        env["medgs"] = "source"
    return env


def run_to_files(input_path, out_dir, *, labels_path=None, factor=None, spacing=None, axis="auto", keep_every=1,
                 config: TrainConfig | None = None, preset: str = "fast", device: str = "auto", seed: int = 0,
                 iterations: int | None = None, outputs=("volume", "labels", "meshes"), mesh_format: str = "vtk",
                 mesh_options=None, annotated_slices=None, color_table=None, probabilities: bool = False,
                 overwrite: bool = False, options_record: dict | None = None, progress=None,
                 cancel=None) -> RunResult:
    """Read, run, write OUTDIR/volume.<ext>, labels.<ext>, meshes/<name>.<fmt>, run.json.

    Every output path is checked before training so that a long run never ends on an
    unwritable file; every write is atomic.
    """
    from . import io
    from . import mesh as ms
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    volume = io.read_volume(input_path, "image") if input_path is not None else None
    labels = io.read_volume(labels_path, "labels") if labels_path is not None else None
    ref_path = Path(input_path if input_path is not None else labels_path)
    ext = io.output_extension(ref_path)
    if ext == ".seg.nrrd":
        ext = ".nrrd"
    out_dir.mkdir(parents=True, exist_ok=True)
    vol_path, lab_path, json_path = out_dir / f"volume{ext}", out_dir / f"labels{ext}", out_dir / "run.json"
    if volume is not None and "volume" in outputs:
        io.check_writable(vol_path, overwrite)
    if labels is not None and "labels" in outputs:
        io.check_writable(lab_path, overwrite)
    io.check_writable(json_path, overwrite, volume_format=False)
    cfg = config or default_config(preset, device, seed=seed, iterations=iterations)
    t_load = time.perf_counter() - t0
    mopts = mesh_options or ms.MeshOptions(format=mesh_format)
    res = run(volume, labels=labels, factor=factor, spacing=spacing, axis=axis, keep_every=keep_every, config=cfg,
              annotated_slices=annotated_slices, meshes=labels is not None and "meshes" in outputs,
              mesh_options=mopts, color_table=color_table, probabilities=probabilities, progress=progress,
              cancel=cancel)
    t_write0 = time.perf_counter()
    files: dict = {}
    if res.volume is not None and "volume" in outputs:
        files["volume"] = str(io.write_volume(res.volume, vol_path, overwrite=overwrite))
    if res.labels is not None and "labels" in outputs:
        files["labels"] = str(io.write_volume(res.labels, lab_path, overwrite=overwrite))
    if res.probabilities:
        pdir = out_dir / "probabilities"
        pdir.mkdir(exist_ok=True)
        files["probabilities"] = {int(v): str(io.write_volume(p, pdir / f"label_{v}{ext}", overwrite=overwrite))
                                  for v, p in res.probabilities.items()}
    if res.meshes:
        paths = ms.write_label_meshes(res.meshes, out_dir / "meshes", options=mopts, overwrite=overwrite)
        files["meshes"] = {int(m.label_value): {"name": m.label_name, "color": list(m.color) if m.color else None,
                                                "path": str(p)} for m, p in zip(res.meshes, paths)}
    res.files = files
    info = dict(res.info)
    info["timings_s"] = {"load": t_load, "train": info.get("train_seconds"), "render": info.get("render_seconds"),
                         "write": time.perf_counter() - t_write0, "total": time.perf_counter() - t0}
    record = {"input": str(input_path) if input_path else None, "labels": str(labels_path) if labels_path else None,
              "options": options_record or {"factor": factor, "spacing": spacing, "axis": axis,
                                            "keep_every": keep_every, "preset": preset, "device": device,
                                            "seed": seed, "iterations": iterations},
              "config": cfg.to_dict(), "outputs": files, "result": info, "environment": environment()}
    from .io import atomic_output
    with atomic_output(json_path, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2, default=_json_default))
    files["run_json"] = str(json_path)
    res.info = info
    return res


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)
