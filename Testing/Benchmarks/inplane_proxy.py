"""An in-plane proxy of the slice-filling problem, at the real physical gap, from the kept slices alone.

Measured and rejected (results/bench_proxy_cpu.md: Pearson r -0.39 against the true gain, worse than
the twice-gap hold-out's +0.32): kept here, beside its benchmark, as the record of that experiment;
the engine does not use it.

The self-check (selfcheck.py) holds out kept frames and predicts them from their neighbours, which
sit at twice the kept gap: its estimate of "how much does the motion-compensated blend gain over
linear" is taken on a harder problem than the one delivered. The kept slices themselves are full
resolution in-plane, so the same physical gap can be rebuilt inside them (the SMORE idea): reslice
the kept volume K [Fk, H, W] into planes P_y = K[:, y, :] (one [Fk, W] image per row y), keep every
g-th plane with g * dy = k * dz (the kept gap in mm) and fill in the planes between with the same
methods. Those planes are known, so each method is scored without any truth from the missing
slices. Done along y and along x. The proxy's frames are not the real ones (one axis of each plane
is the coarse z axis, motion is in (z, x) instead of (y, x)), so it is an estimate to be checked
against the true gain (Testing/Benchmarks/bench_proxy.py), not a guarantee.

Cost is capped by fitting fields for a subset of the planes' gaps only (`max_pixels`), so the proxy
stays at a few CPU seconds even for a 128 x 256 x 256 kept volume.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_PLANES = 5          # kept planes at least (the gap is shrunk to leave that many)
MAX_PIXELS = 400_000    # pixels of the plane pairs whose fields are fitted, per direction


def plane_gap(k_dz: float, d_plane: float, n_planes: int, min_planes: int = MIN_PLANES) -> int:
    """Planes g apart span the kept gap k_dz (mm) at in-plane spacing d_plane (mm); at least 2 (a
    gap of 1 leaves nothing in between) and small enough to keep `min_planes` planes."""
    g = max(2, int(round(k_dz / d_plane)))
    return max(2, min(g, (n_planes - 1) // (min_planes - 1)))


def _offsets(fractions: Sequence[float], g: int) -> list[int]:
    """The real problem's fractions on the plane grid: plane offsets 1..g-1 inside one gap."""
    return sorted({min(g - 1, max(1, int(round(f * g)))) for f in fractions})


def _gaps(n_gaps: int, pair_pixels: int, max_pixels: int) -> list[int]:
    """Gaps to score, evenly spread; each needs up to three fields (its own and its neighbours',
    for the four-slice chain), so about max_pixels / (3 * pair_pixels) of them fit the budget."""
    n = max(2, min(n_gaps, max_pixels // max(1, 3 * pair_pixels)))
    if n >= n_gaps:
        return list(range(n_gaps))
    return sorted({int(round(x)) for x in np.linspace(0, n_gaps - 1, n)})


def proxy_problem(kept, axis: int, k_dz: float, d_plane: float, fractions: Sequence[float],
                  max_pixels: int = MAX_PIXELS, config=None) -> dict:
    """The resliced problem along numpy axis 1 (y) or 2 (x) of kept [Fk, H, W] (torch, [0, 1]).

    Returns frames (the kept planes [P, Fk, n]), quads / alpha (one in-between plane each, for
    flow.image_between), truth (those planes), fields (PairFields.stack, the needed pairs fitted
    in one batch), lanczos_pos (their positions in kept-plane units), gap g and the gaps used.
    """
    import torch
    from MedGSLib import flow
    from MedGSLib.config import FlowConfig
    planes = kept.movedim(axis, 0)                     # [H, Fk, W] (axis 1) or [W, Fk, H] (axis 2)
    g = plane_gap(k_dz, d_plane, planes.shape[0])
    frames = planes[::g].contiguous()
    n = frames.shape[0]
    gaps = _gaps(n - 1, frames.shape[1] * frames.shape[2], max_pixels)
    offs = _offsets(fractions, g)
    pairs = [(i, i + 1) for i in gaps for _ in offs]
    quads = flow.consecutive_quads(n, pairs)
    alpha = torch.tensor([o / g for _ in gaps for o in offs], dtype=torch.float32)
    truth = torch.stack([planes[i * g + o] for i in gaps for o in offs])
    pf = flow.PairFields(frames, config or FlowConfig())
    pf.ensure([p for q in quads for p in zip(q[:-1], q[1:])])      # one batch
    return {"frames": frames, "quads": quads, "alpha": alpha, "truth": truth, "fields": pf.stack,
            "lanczos_pos": [i + o / g for i in gaps for o in offs], "gap": g, "gaps": gaps, "offsets": offs}


def _psnr(pred, truth) -> float:
    mse = float(np.mean((np.clip(pred, 0, 1) - np.clip(truth, 0, 1)) ** 2, dtype=np.float64))
    return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def score_problem(p: dict, between=None) -> dict:
    """PSNR of linear, Lanczos and the in-between image (`between`, default flow.image_between)
    on one proxy problem, pooled over its in-between planes."""
    import torch
    from MedGSLib import flow
    from MedGSLib.selfcheck import lanczos_z
    between = between or flow.image_between
    fr, truth = p["frames"], p["truth"].numpy()
    i1 = torch.tensor([q[1] for q in p["quads"]])
    a = p["alpha"].view(-1, 1, 1)
    lin = ((1 - a) * fr[i1] + a * fr[i1 + 1]).numpy()
    lan = lanczos_z(fr.numpy(), p["lanczos_pos"])
    with torch.no_grad():
        ib = between(fr, p["quads"], p["fields"], p["alpha"]).numpy()
    return {"linear": _psnr(lin, truth), "lanczos": _psnr(lan, truth), "blend": _psnr(ib, truth)}


def proxy_scores(kept, spacing_zyx_kept, fractions: Sequence[float], max_pixels: int = MAX_PIXELS,
                 config=None) -> dict:
    """In-plane proxy scores of kept [Fk, H, W] (numpy or torch, values in [0, 1]; spacing (dz_kept,
    dy, dx) in mm, dz_kept the gap between kept slices) at the real problem's `fractions` (r / k).

    Returns {"y": {...}, "x": {...}, "mean": {...}}: PSNR (dB) of linear / lanczos / blend
    (flow.image_between) on each direction's in-between planes, plus "gap" (planes) and "mm" (the
    proxy's gap in mm) per direction; "mean" averages the two directions' PSNRs.
    """
    import torch
    kept = torch.as_tensor(np.asarray(kept, dtype=np.float32))
    dz, dy, dx = (float(s) for s in spacing_zyx_kept)
    out = {}
    for name, axis, d in (("y", 1, dy), ("x", 2, dx)):
        p = proxy_problem(kept, axis, dz, d, fractions, max_pixels, config)
        s = score_problem(p)
        s.update(gap=p["gap"], mm=p["gap"] * d, planes_scored=len(p["alpha"]))
        out[name] = s
    out["mean"] = {m: 0.5 * (out["y"][m] + out["x"][m]) for m in ("linear", "lanczos", "blend")}
    return out
