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
                data = torch.sqrt(r * r + cfg.eps ** 2).mean()
                dx = c[..., :, 1:] - c[..., :, :-1]
                dy = c[..., 1:, :] - c[..., :-1, :]
                reg = (dx * dx).mean() + (dy * dy).mean()
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
        missing = [p for p in dict.fromkeys((int(a), int(b)) for a, b in pairs) if p not in self._fields]
        if missing:
            for p, f in zip(missing, estimate(self.frames, self.config, pairs=missing)):
                self._fields[p] = f

    def stack(self, pairs):
        """Fields of `pairs` as [P, 2, H, W] (fitting those not fitted yet)."""
        import torch
        self.ensure(pairs)
        return torch.stack([self._fields[(int(a), int(b))] for a, b in pairs])

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


def image_blend(a, b, d, alpha):
    """The in-between image: the motion-compensated blend where the motion explains the pair,
    the plain cross-fade where it does not.

    Where the two warped slices agree better than the unwarped ones (local mean squared
    residuals r_motion < r_fade), the field found the structure's motion; where they agree
    worse (a structure appears, vanishes or changes between thick slices, or the fit failed),
    a cross-fade is the safer guess. The weight of the motion blend is r_fade / (r_fade +
    r_motion): no threshold, each pair's own evidence. On the dev cases' held-out slices this
    beat the pure motion blend in every case and gap (Testing/Benchmarks/results/bench_flow_cpu.md).
    """
    import torch.nn.functional as F
    al = alpha.view(-1, 1, 1, 1).to(a.dtype)
    wa, wb = warp(a, -al * d), warp(b, (1 - al) * d)
    k = CONFIDENCE_WINDOW
    r_motion = F.avg_pool2d((wa - wb) ** 2, k, 1, k // 2, count_include_pad=False)
    r_fade = F.avg_pool2d((a - b) ** 2, k, 1, k // 2, count_include_pad=False)
    w = r_fade / (r_fade + r_motion + 1e-8)
    return w * ((1 - al) * wa + al * wb) + (1 - w) * ((1 - al) * a + al * b)


def interpolate(frames, k: int, d=None, config: FlowConfig | None = None):
    """Every k-th slice given: frames [F, H, W] -> [(F-1)k+1, H, W] by `image_blend`."""
    import torch
    if d is None:
        d = estimate(frames, config)
    F_, H, W = frames.shape
    out = torch.empty(((F_ - 1) * k + 1, H, W), device=frames.device)
    out[::k] = frames
    a, b = frames[:-1, None], frames[1:, None]
    for r in range(1, k):
        al = torch.full((F_ - 1,), r / k, device=frames.device)
        out[r::k][: F_ - 1] = image_blend(a, b, d, al)[:, 0]
    return out
