"""Render a trained model at fractional slice positions and place slices on the new grid."""
from __future__ import annotations

import math

import numpy as np

from .errors import InputError


def target_positions(n_frames: int, factor: float | None = None, spacing_ratio: float | None = None) -> np.ndarray:
    """Positions (in units of the kept-frame gap, 0 .. F-1) of the output slices.

    `factor` k gives a gap of 1/k (k = 2 halves the slice spacing; 2.5 works too);
    `spacing_ratio` = new spacing / kept spacing gives a gap of that ratio. The first slice stays
    where it was and nothing is extrapolated past the last kept slice.
    """
    if (factor is None) == (spacing_ratio is None):
        raise InputError("give exactly one of factor or target spacing")
    gap = 1.0 / float(factor) if factor is not None else float(spacing_ratio)
    if not math.isfinite(gap) or gap <= 0:
        raise InputError(f"the up-sampling factor must be positive, got {factor}")
    if gap > 1.0 + 1e-9:
        raise InputError(f"factor {factor} would make slices sparser than the input: use a factor >= 1")
    n_out = int(math.floor((n_frames - 1) / gap + 1e-6)) + 1
    return np.arange(n_out, dtype=np.float64) * gap


def render_positions(model, positions: np.ndarray, n_frames: int, height: int, width: int, renderer,
                     head: str = "image", chunk: int = 8, progress=None, cancel=None,
                     channel_group: int = 32) -> np.ndarray:
    """Render the model at `positions` (kept-frame units) -> float32 [n, H, W] or [n, H, W, L] for labels.

    Label channels are rendered `channel_group` at a time: the rasteriser's cost and memory grow
    with the channel count (gsplat pads to a power of two), and 188 labels at once is slow.
    """
    import torch
    from .errors import CancelledError
    out = []
    dev = model.device
    with torch.no_grad():
        for i in range(0, len(positions), chunk):
            if cancel is not None and cancel():
                raise CancelledError("rendering was cancelled")
            t = torch.as_tensor(positions[i:i + chunk] / n_frames, dtype=torch.float32, device=dev)
            if head == "image":
                img = renderer.render(model.condition(t, height, width, head)).images[..., 0]
            else:
                pairs = model.active_pairs(t)
                groups = [torch.arange(c, min(c + channel_group, model.n_labels), device=dev)
                          for c in range(0, model.n_labels, channel_group)]
                img = torch.cat([renderer.render(model.condition(t, height, width, head, pairs, g)).images
                                 for g in groups], -1)
            out.append(img.float().cpu().numpy())
            if progress is not None:
                progress({"event": "progress", "stage": "render", "iteration": min(i + chunk, len(positions)),
                          "total": len(positions)})
    return np.concatenate(out, 0)


def paste_known(dense: np.ndarray, positions: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Put the kept slices back exactly where they fall on the new grid (integer positions)."""
    idx = np.where(np.abs(positions - np.round(positions)) < 1e-6)[0]
    dense[idx] = known[np.round(positions[idx]).astype(int)]
    return dense
