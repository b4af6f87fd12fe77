"""Symmetric dense motion between consecutive frames, in torch (GPU or CPU), for in-between targets.

The released code's in-between-frame regulariser (IBFR) pulls the rendered frame between kept
slices A and B toward the plain blend (1 - a) A + a B: toward linear interpolation, the very
method MedGS must beat. Here the blend is motion compensated instead. For each pair a field d
(pixels, defined on the half-way grid) is fitted so that A(x - d/2) matches B(x + d/2); the
target at fraction a is then

    (1 - a) A(x - a d) + a B(x + (1 - a) d)

which moves structures that shift between slices instead of cross-fading them. The same field
carries label masks, so the image steers the labels between annotated slices.

Fitting: coarse-to-fine over an image pyramid, Adam on the field, a robust (Charbonnier) data
term and a first-difference smoothness term; every pair of the volume is fitted in one batch.
No OpenCV needed, so it runs wherever training runs.
"""
from __future__ import annotations

from typing import NamedTuple

from .config import FlowConfig  # a training option: presets and --set reach it there


def _grid(h: int, w: int, device):
    import torch
    ys = torch.arange(h, device=device, dtype=torch.float32)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1)        # [H, W, 2] (x, y) in pixels


def warp(img, disp):
    """img [P, C, H, W] sampled at x + disp (disp [P, 2, H, W] in pixels), border replicate."""
    import torch
    import torch.nn.functional as F
    _, _, h, w = img.shape
    pos = _grid(h, w, img.device)[None] + disp.permute(0, 2, 3, 1)
    # pixel -> [-1, 1] with align_corners=True
    nx = pos[..., 0] * (2.0 / max(w - 1, 1)) - 1.0
    ny = pos[..., 1] * (2.0 / max(h - 1, 1)) - 1.0
    return F.grid_sample(img, torch.stack([nx, ny], -1), mode="bilinear", padding_mode="border",
                         align_corners=True)


def _pyramid(x, levels: int):
    import torch.nn.functional as F
    out = [x]
    for _ in range(levels - 1):
        if min(out[-1].shape[-2:]) < 16:
            break
        out.append(F.avg_pool2d(out[-1], 2, ceil_mode=True))
    return out[::-1]        # coarse first


def estimate(frames, config: FlowConfig | None = None, pairs=None):
    """Half-way fields for consecutive frames: frames [F, H, W] -> d [F-1, 2, H, W] (pixels, x then y).

    `pairs` [(i, j), ...] fits those pairs instead of (k, k+1).
    """
    import torch
    import torch.nn.functional as F
    cfg = config or FlowConfig()
    if not (cfg.levels and cfg.iterations):     # 0 = sized from the frames (GPU budget)
        import dataclasses
        from . import sizing
        cfg = dataclasses.replace(cfg, levels=cfg.levels or sizing.flow_levels(frames.shape),
                                  iterations=cfg.iterations or sizing.FLOW_STEPS[1])
    frames = frames.float()
    if pairs is None:
        ia = torch.arange(frames.shape[0] - 1, device=frames.device)
        ib = ia + 1
    else:
        ia = torch.as_tensor([p[0] for p in pairs], device=frames.device)
        ib = torch.as_tensor([p[1] for p in pairs], device=frames.device)
    a_full, b_full = frames[ia, None], frames[ib, None]
    pa, pb = _pyramid(a_full, cfg.levels), _pyramid(b_full, cfg.levels)
    c = None
    with torch.enable_grad():
        for a, b in zip(pa, pb):
            h, w = a.shape[-2:]
            gh, gw = max(2, -(-h // cfg.stride)), max(2, -(-w // cfg.stride))
            if c is None:
                c0 = torch.zeros(a.shape[0], 2, gh, gw, device=a.device)
            else:   # the coarser level's field, in this level's pixels
                c0 = F.interpolate(c, size=(gh, gw), mode="bilinear", align_corners=True) * 2.0
            c = c0.clone().requires_grad_(True)
            opt = torch.optim.Adam([c], lr=cfg.lr)
            for _ in range(cfg.iterations):
                opt.zero_grad(set_to_none=True)
                d = F.interpolate(c, size=(h, w), mode="bilinear", align_corners=True)
                r = warp(a, -0.5 * d) - warp(b, 0.5 * d)
                # a sum of per-pair means: each pair's gradient is what it would be fitted
                # alone, so Adam's epsilon weighs the same whatever else shares the batch
                # (a mean over the batch scaled every gradient by 1 / pairs: on the abdomen CT a
                # field moved by up to 1.5 px between a batch of 4 pairs and one of 14)
                per_pair = (1, 2, 3)
                data = torch.sqrt(r * r + cfg.eps ** 2).mean(per_pair).sum()
                dx = c[..., :, 1:] - c[..., :, :-1]
                dy = c[..., 1:, :] - c[..., :-1, :]
                reg = (dx * dx).mean(per_pair).sum() + (dy * dy).mean(per_pair).sum()
                (data + cfg.smooth * 1e-2 * reg).backward()
                opt.step()
            c = c.detach()
    h, w = frames.shape[-2:]
    return F.interpolate(c, size=(h, w), mode="bilinear", align_corners=True)


class PairFields:
    """Half-way fields of frame pairs (i, j), each fitted once, when first asked for.

    The trainer's pairs change during a run (a held-out frame's neighbours are one pair until it
    is folded back in, then two); fitting on demand keeps every pixel of a held-out frame out of
    the fields until then. Missing pairs asked for together are fitted in one batch.
    """

    def __init__(self, frames, config: FlowConfig):
        self.frames, self.config = frames, config
        self._fields: dict[tuple[int, int], object] = {}

    def ensure(self, pairs) -> None:
        missing = [p for p in dict.fromkeys((int(a), int(b)) for a, b in pairs)
                   if p not in self._fields and p[0] != p[1]]
        if missing:
            for p, f in zip(missing, estimate(self.frames, self.config, pairs=missing)):
                self._fields[p] = f

    def stack(self, pairs):
        """Fields of `pairs` as [P, 2, H, W] (fitting those not fitted yet); a frame with itself
        (`four_slices` repeats an end frame) has the zero field."""
        import torch
        self.ensure(pairs)
        zero = self.frames.new_zeros((2,) + tuple(self.frames.shape[-2:]), dtype=torch.float32)
        return torch.stack([zero if a == b else self._fields[(int(a), int(b))] for a, b in pairs])

    def consecutive(self):
        """Fields of (k, k+1) for every frame k: [F-1, 2, H, W]."""
        n = self.frames.shape[0]
        return self.stack([(k, k + 1) for k in range(n - 1)])


def blend(a, b, d, alpha):
    """Motion-compensated blend: a, b [P, C, H, W], d [P, 2, H, W], alpha [P] -> [P, C, H, W].

    Pure motion: what label masks are carried by (their own agreement says nothing of the motion)."""
    al = alpha.view(-1, 1, 1, 1).to(a.dtype)
    return (1 - al) * warp(a, -al * d) + al * warp(b, (1 - al) * d)


CONFIDENCE_WINDOW = 5   # px: residuals compared over a small neighbourhood, not pixel by pixel


def _monotone_cubic(f, z, alpha):
    """Value at fraction alpha of the middle gap of samples f [P, 4, ...] at positions z [P, 4].

    A cubic Hermite through the middle pair whose tangents are the three-point (quadratic)
    derivatives, limited as Hyman's monotone filter does: 0 where the secants on either side
    of a node differ in sign (a local extreme), at most 3x the smaller secant otherwise. The
    unlimited cubic reproduces quadratics on any spacing; the limiter keeps a structure that
    appears or vanishes between slices from overshooting (a plain cubic rings there), which
    is what made the unlimited cubic lose to linear on the dev cases.
    """
    import torch
    view = (-1,) + (1,) * (f.dim() - 2)
    h = [(z[:, k + 1] - z[:, k]).view(view) for k in range(3)]
    sec = [(f[:, k + 1] - f[:, k]) / h[k] for k in range(3)]

    def tangent(k):         # at node k (1 or 2), between secants k-1 and k
        m = (h[k] * sec[k - 1] + h[k - 1] * sec[k]) / (h[k - 1] + h[k])
        lim = 3 * torch.minimum(sec[k - 1].abs(), sec[k].abs())
        return torch.where(sec[k - 1] * sec[k] > 0, m.clamp(-lim, lim), torch.zeros_like(m))
    t = alpha.view(view).to(f.dtype)
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * f[:, 1] + (-2 * t3 + 3 * t2) * f[:, 2]
            + h[1] * ((t3 - 2 * t2 + t) * tangent(1) + (t3 - t2) * tangent(2)))


def four_slices(pairs, before: dict, after: dict):
    """(previous, start, end, following) frame of each in-between pair (start, end): the
    frames next to the pair (`before` / `after` map a frame to its neighbour); at an end of
    the stack the pair's own frame is repeated, which `image_between` reads as "none"."""
    return [(before.get(a, a), a, b, after.get(b, b)) for a, b in pairs]


def image_between(frames, quads, fields, alpha, cubic: bool = True):
    """The in-between image: frames [F, H, W], quads [(i0, i1, i2, i3)] (`four_slices`),
    fields(pairs) -> half-way fields [P, 2, H, W] of those frame pairs (zero for a frame with
    itself; `PairFields.stack`, `consecutive_fields`), alpha [P] the fraction from i1 to i2
    -> [P, H, W].

    Motion-compensated where the motion explains the pair, a cross-fade where it does not:
    where the warped pair (i1, i2) agrees better than the unwarped one (local mean squared
    residuals r_motion < r_fade) the field found the structure's motion; where it agrees
    worse (a structure appears, vanishes or changes between thick slices, or the fit failed)
    the slices as they lie are the safer guess. The motion weight is sqrt(r_fade) /
    (sqrt(r_fade) + sqrt(r_motion)): each pair's own evidence, no threshold. The two guesses'
    errors tend to cancel (on the dev cases even a fixed half-and-half mix beat inverse mean
    square weights, the rule for independent errors, in 6 of 12 cells); for errors of opposite
    sign, each as large as its pair's RMS residual, the mix that cancels them weights by the
    inverse RMS. Against inverse mean square it is 0.10 dB better on average, better in 9 of 12
    cells and worse in none by more than 0.01 dB (results/bench_flow_cpu.md).

    Both parts interpolate along z through four slices (`_monotone_cubic`): the fade through
    the slices as they lie, the motion part through the four slices carried to the target
    point by the fields chained gap by gap (i0 -> i1 -> target <- i2 <- i3), so a structure
    that slows or speeds up between gaps is followed. `cubic=False` interpolates the middle
    pair linearly (the two-slice blend). On the dev cases the four slices beat the two in 7 of
    12 cells, +0.09 dB on average, worse by at most 0.04 dB (results/bench_flow_cpu.md).
    """
    p = between_parts(frames, quads, fields, alpha, cubic)
    w = p.r_fade / (p.r_fade + p.r_motion + 1e-8)
    return w * p.motion + (1 - w) * p.fade


class BetweenParts(NamedTuple):
    """`image_between`'s two guesses [P, H, W] and the local RMS residuals [P, H, W] that weigh
    them (the fitted pair warped / as it lies): for experiments with other weights."""
    motion: object
    fade: object
    r_motion: object
    r_fade: object


def between_parts(frames, quads, fields, alpha, cubic: bool = True) -> BetweenParts:
    """The motion and fade parts of `image_between` and their residuals, before the weighting."""
    import torch
    import torch.nn.functional as F
    q = torch.as_tensor(quads, device=frames.device)
    s = frames[q]                                                   # [P, 4, H, W]
    d = fields([(a, b) for _, a, b, _ in quads])
    al = alpha.view(-1, 1, 1, 1).to(frames.dtype)
    e1, e2 = -al * d, (1 - al) * d          # target point -> start / end frame
    w1, w2 = warp(s[:, 1:2], e1), warp(s[:, 2:3], e2)
    k = CONFIDENCE_WINDOW
    r_motion = F.avg_pool2d((w1 - w2) ** 2, k, 1, k // 2, count_include_pad=False)
    r_fade = F.avg_pool2d((s[:, 1:2] - s[:, 2:3]) ** 2, k, 1, k // 2, count_include_pad=False)
    r_fade, r_motion = r_fade.sqrt()[:, 0], r_motion.sqrt()[:, 0]
    if not cubic:
        al = al[:, 0]
        return BetweenParts((1 - al) * w1[:, 0] + al * w2[:, 0], (1 - al) * s[:, 1] + al * s[:, 2],
                            r_motion, r_fade)
    w0, w3 = _chain(frames, quads, fields, q, e1, e2)
    motion = torch.cat([w0, w1, w2, w3], 1)
    # At an end of the stack the missing frame is the pair's line extended one gap: the
    # tangent there is the pair's own secant, so a two-frame stack is interpolated linearly
    # and an end gap is never flatter than linear (repeating the end frame would flatten it).
    z = q.to(frames.dtype)
    first, last = q[:, 0] == q[:, 1], q[:, 3] == q[:, 2]
    z[:, 0] = torch.where(first, 2 * z[:, 1] - z[:, 2], z[:, 0])
    z[:, 3] = torch.where(last, 2 * z[:, 2] - z[:, 1], z[:, 3])
    for f in (motion, s):
        f[:, 0] = torch.where(first[:, None, None], 2 * f[:, 1] - f[:, 2], f[:, 0])
        f[:, 3] = torch.where(last[:, None, None], 2 * f[:, 2] - f[:, 1], f[:, 3])
    return BetweenParts(_monotone_cubic(motion, z, alpha), _monotone_cubic(s, z, alpha), r_motion, r_fade)


def _chain(frames, quads, fields, q, e1, e2):
    """The outer frames i0 and i3 carried to the target point through their own gap's field
    after the middle one. A half-way field d of (a, b) maps a point p of a to p + d(p + d/2):
    the field is read half a step along (one fixed-point step). A repeated end frame has the
    zero field (`image_between` replaces it)."""
    outer = [[(a, b) for a, b, _, _ in quads], [(a, b) for _, _, a, b in quads]]
    out = []
    for pairs, e, side, sign in ((outer[0], e1, 0, -1.0), (outer[1], e2, 3, 1.0)):
        g = fields(pairs)
        dq = warp(g, e)
        dq = warp(g, e + sign * 0.5 * dq)
        out.append(warp(frames[q[:, side], None], e + sign * dq))
    return out


def interpolate(frames, k: int, d=None, config: FlowConfig | None = None):
    """Every k-th slice given: frames [F, H, W] -> [(F-1)k+1, H, W] by `image_between`."""
    import torch
    if d is None:
        d = estimate(frames, config)
    F_, H, W = frames.shape
    out = torch.empty(((F_ - 1) * k + 1, H, W), device=frames.device)
    out[::k] = frames
    quads = consecutive_quads(F_)
    for r in range(1, k):
        al = torch.full((F_ - 1,), r / k, device=frames.device)
        out[r::k][: F_ - 1] = image_between(frames, quads, consecutive_fields(d), al)
    return out


def consecutive_quads(n: int, pairs=None):
    """`four_slices` of consecutive frames 0..n-1 (all pairs (i, i+1) unless `pairs` given)."""
    nxt = {i: i + 1 for i in range(n - 1)}
    return four_slices(pairs if pairs is not None else list(nxt.items()), {b: a for a, b in nxt.items()}, nxt)


def consecutive_fields(d):
    """The `fields` lookup of `image_between` for fields d [F-1, 2, H, W] of pairs (i, i+1)."""
    import torch
    zero = torch.zeros_like(d[0])
    return lambda pairs: torch.stack([zero if a == b else d[a] for a, b in pairs])
