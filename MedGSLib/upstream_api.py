"""Train once, render later: frames -> checkpoints -> renders (what `medgs train / render` sit on).

`api.interpolate_array` trains and renders in one call. Upstream MedGS's workflow keeps the
model between the two: train writes checkpoints at chosen iterations, a later run resumes one
or trains only the label head on it, and render draws any checkpoint at K sub-steps per frame.

- `make_trainer(frames, config, masks=, pipeline=, start=)`: a Trainer, fresh or from a checkpoint
- `run(trainer, stops=, on_stop=)`: train to the end, calling on_stop(trainer, step) after each stop
- `checkpoint(trainer, **extra)`, `save_checkpoint(ck, path)`, `load_checkpoint(path)`
- `evaluate(trainer)`: L1 and mean per-frame PSNR of the current model on every training frame
- `render_checkpoint(ck, interp, head=, size=)`: [F * interp, H, W] in [0, 1]

Checkpoints are plain dicts of tensors, numbers and strings (Trainer.checkpoint()), loaded with
`torch.load(weights_only=True)`: a crafted file can hold data only, never code to run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import TrainConfig
from .errors import CancelledError, InputError

CHECKPOINT_FORMAT = "medgs-checkpoint-1"


class _Stops:
    """The Trainer's `cancel` hook, also used to pause at chosen steps.

    Trainer.train() checks `cancel` before every step and loops while step < iterations, with
    all state (model, optimiser, densification statistics, generator) on the Trainer: stopping
    it there and calling train() again continues the same run (test_upstream_api checks that a
    run with stops equals one without, bit for bit on the CPU).
    """

    def __init__(self, user_cancel=None):
        self.user_cancel = user_cancel
        self.pending: list[int] = []
        self.trainer = None
        self.paused = False

    def __call__(self) -> bool:
        if self.user_cancel is not None and self.user_cancel():
            return True
        if self.pending and self.trainer is not None and self.trainer.step >= self.pending[0]:
            self.paused = True
            return True
        return False


def make_trainer(frames, config: TrainConfig, *, masks=None, pipeline: str = "img", start: dict | None = None,
                 progress=None, cancel=None):
    """A Trainer on frames [F, H, W] and/or masks [L, F, H, W] (float32 numpy, 0..1).

    `start` (a checkpoint dict):
    - same pipeline: resume it (weights, optimiser, step, generator, densification statistics);
    - pipeline "seg_head_only": its geometry and image head, frozen; the label head starts as a
      copy of the image head (upstream's init_seg_head_from_img) and the count restarts at 0;
    - another pipeline (e.g. joint from an image-only model): its weights, a label head copied
      from the image head when it has none, a new optimiser, and the count restarts at 0.
    """
    import torch

    from .model import FoldedGaussians
    from .train import Trainer
    t_frames = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)) if frames is not None else None
    t_masks = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32)) if masks is not None else None
    ref = t_frames if t_frames is not None else (t_masks[0] if t_masks is not None else None)
    if pipeline == "seg_head_only" and start is None:
        raise InputError("training only the label head needs a checkpoint to start from (--start_checkpoint)")
    model = None
    if start is not None:
        _check_shape(start, ref)
        model = FoldedGaussians.from_state_dict(start["model"])
        resume = start.get("pipeline") == pipeline
        if not resume and t_masks is not None and (pipeline == "seg_head_only" or not model.has_seg):
            model.add_seg_head(int(t_masks.shape[0]), init=_image_head_as_labels(model, int(t_masks.shape[0])))
    hook = _Stops(cancel)
    trainer = Trainer(t_frames, config, masks=t_masks, pipeline=pipeline, model=model, progress=progress,
                      cancel=hook)
    if start is not None and start.get("pipeline") == pipeline:
        trainer.load_checkpoint(start, resume_optimizer=True)
    hook.trainer = trainer
    return trainer


def _image_head_as_labels(model, n_labels: int):
    """Label-head colours copied from the image head (one column per label channel)."""
    return model.params["color"].detach().clone().repeat(1, n_labels)


def _check_shape(ck: dict, ref):
    if ref is None or "shape" not in ck:
        return
    want = tuple(int(x) for x in ck["shape"])
    got = tuple(int(x) for x in ref.shape)
    if want != got:
        raise InputError(f"the checkpoint was trained on frames {want} (F, H, W) but these frames are {got}")


def run(trainer, *, stops=(), on_stop=None):
    """Train to the end of the schedule; after each step number in `stops` call on_stop(trainer, step).

    A stop at the current step is called at once (step 0: the initial model), earlier ones are
    skipped (a resumed run has passed them). Returns
    the TrainResult of the last stretch; trainer.step is the number of steps done (the run may
    end early when the preset stops at convergence; later stops are then not reached).
    """
    hook = trainer.cancel
    if not isinstance(hook, _Stops):
        raise InputError("run() needs a trainer made by make_trainer()")
    iters = trainer.cfg.schedule.iterations
    todo = sorted({int(s) for s in stops if trainer.step <= int(s) <= iters})
    while todo and todo[0] <= trainer.step:
        on_stop(trainer, todo.pop(0))
    hook.pending = [s for s in todo if s < iters]
    try:
        while True:
            try:
                result = trainer.train()
                break
            except CancelledError:
                if not hook.paused:
                    raise
                hook.paused = False
                on_stop(trainer, hook.pending.pop(0))
    finally:
        hook.pending = []
    if iters in todo and trainer.step == iters:
        on_stop(trainer, iters)
    return result


def checkpoint(trainer, **extra) -> dict:
    """The trainer's checkpoint dict plus `extra` entries (numbers, strings, lists, tensors)."""
    ck = trainer.checkpoint()
    ck["n_frames"] = int(trainer.F)
    ck.update(extra)
    return ck


def save_checkpoint(ck: dict, path) -> Path:
    """Write a checkpoint atomically (io.save_torch, the one atomic writer)."""
    from .io import save_torch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_torch(ck, path, overwrite=True)


def load_checkpoint(path) -> dict:
    """Read a MedGS checkpoint. Only tensors and plain data are accepted (weights_only=True),
    so a crafted file cannot run code; anything else is refused with one clear message."""
    from .io import load_torch      # weights_only=True, one clear InputError for a bad file
    path = Path(path)
    ck = load_torch(path)
    if isinstance(ck, tuple) and len(ck) == 2 and isinstance(ck[1], int):
        raise InputError(f"{path.name} is an upstream MedGS checkpoint (its CUDA model's capture()); "
                         "retrain with medgs train: the two models store different tensors")
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT or "model" not in ck:
        raise InputError(f"{path.name} is not a MedGS checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return ck


def evaluate(trainer) -> tuple[float, float]:
    """(mean L1, mean per-frame PSNR) of the current model on every training frame (upstream's
    "test" report: its test cameras are the training frames). Label pipelines use the label head."""
    from .slice_grid import render_positions
    F, H, W = trainer.F, trainer.H, trainer.W
    positions = np.arange(F, dtype=np.float64)
    if trainer.frames is not None:
        pred = render_positions(trainer.model, positions, F, H, W, trainer.renderer, "image")
        gt = trainer.frames.detach().cpu().numpy()
    else:
        pred = render_positions(trainer.model, positions, F, H, W, trainer.renderer, "seg")
        pred = np.moveaxis(pred, -1, 1)                     # [F, L, H, W]
        gt = trainer.masks.detach().cpu().numpy().transpose(1, 0, 2, 3)
    pred = np.clip(pred, 0.0, 1.0)
    err = (pred - gt).reshape(F, -1)
    mse = np.maximum((err ** 2).mean(1), 1e-10)
    return float(np.abs(err).mean()), float(np.mean(-10.0 * np.log10(mse)))


def render_checkpoint(ck: dict, interp: int = 1, *, head: str = "image", size=None, device: str = "auto",
                      renderer: str = "auto", progress=None):
    """Render a checkpoint at t = (k + i / interp) / F for every frame k and i < interp, as upstream's
    render.py does (the last frame's sub-steps extrapolate a little past it).

    head "image" or "seg" (label channel 0; a model without label head falls back to the image
    head, as upstream). `size` (H, W) renders at another in-plane size; default the trained one.
    Returns (images float32 [F * interp, H, W] in [0, 1], head actually rendered).
    """
    from .slice_grid import render_positions
    from .model import FoldedGaussians
    from .render.base import resolve_device, select_renderer
    if isinstance(interp, bool) or int(interp) < 1:
        raise InputError(f"--interp must be a whole number >= 1, got {interp!r}")
    k = int(interp)
    dev = resolve_device(device)
    model = FoldedGaussians.from_state_dict(ck["model"], dev)
    rend, _ = select_renderer(dev, renderer)
    F, H, W = (int(x) for x in ck["shape"])
    if size is not None:
        H, W = int(size[0]), int(size[1])
    used = head if head == "image" or model.has_seg else "image"
    positions = np.arange(F * k, dtype=np.float64) / k
    imgs = render_positions(model, positions, F, H, W, rend, "seg" if used == "seg" else "image", progress=progress)
    if imgs.ndim == 4:
        imgs = imgs[..., 0]
    return np.clip(imgs, 0.0, 1.0).astype(np.float32), used
