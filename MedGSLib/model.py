"""The Folded-Gaussian model (method.md s1): parameters, initialisation, conditioning on t.

World units follow the released code so that every threshold keeps its meaning: a frame of
width W covers x in [-0.36, 0.36] (tan(FoVx/2) = 0.36), the pixel scale is fx = W / 0.72, the
scene extent is 1.1. Image column u = W/2 + fx*x, row v = H/2 - fx*z (the plane is y = 0).

Frame k of F sits at t_k = k / F (the last frame is at (F-1)/F, not 1).

All tensors of one Gaussian live in `params` (a dict of leaf tensors, first dim N) so that
densification, pruning and the optimiser treat every head the same way. Heads:
  image:  color [N, 1] (SH-DC), opacity [N, 1] (logit)
  labels: seg_color [N, L], seg_opacity [N, 1]   (added by `add_seg_head`)
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass


TAN_HALF_FOV = 0.36         # tan(0.6911112 / 2) of the released camera
EXTENT = 1.1                # cameras_extent of the released code (spatial_lr_scale)
SH_C0 = 0.28209479177387814
DELTA_CULL = 0.1            # render a Gaussian at t only where delta(t) > 0.1
EPS2D = 0.3                 # low-pass dilation added to every 2D covariance (px^2)
ALPHA_MIN = 1.0 / 255.0

GEOMETRY_KEYS = ("xyz", "scaling", "rotation", "m", "sigma", "w")
IMAGE_KEYS = ("color", "opacity")
SEG_KEYS = ("seg_color", "seg_opacity")


def focal(width: int) -> float:
    return width / (2.0 * TAN_HALF_FOV)


def fused_condition_usable(x) -> bool:
    """FoldedGaussians.condition runs the fused Triton kernels (render/triton_condition): `x` is on
    CUDA, Triton runs there, and MEDGS_FUSED_CONDITION is not 0 (the switch for A/B timing)."""
    if x.device.type != "cuda" or os.environ.get("MEDGS_FUSED_CONDITION", "1") == "0":
        return False
    from .render.triton_renderer import triton_status    # here, so that the CPU never imports triton
    return triton_status()[0]


def frame_times(n_frames: int):
    """t_k = k / F for k = 0..F-1."""
    import torch
    return torch.arange(n_frames, dtype=torch.float32) / n_frames


@dataclass
class Splats:
    """Per-(frame, Gaussian) conditioned 2D Gaussians, packed: one row per active pair.

    means2d [P, 2] px (pixel centre = j + 0.5), conics [P, 3] (a, b, c of the inverse 2D
    covariance), opacities [P], colors [P, C], radii [P, 2] int32, frame_ids [P] int64,
    gauss_ids [P] int64. Rows are ordered by frame, then Gaussian index: that is the
    compositing order (all depths are equal, as in the released code).
    """

    means2d: "object"
    conics: "object"
    opacities: "object"
    colors: "object"
    radii: "object"
    frame_ids: "object"
    gauss_ids: "object"
    n_frames: int
    height: int
    width: int


def _logit(p):
    import torch
    p = torch.as_tensor(p).clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


class FoldedGaussians:
    """Parameters of N Folded Gaussians and their conditioning on slice time t."""

    def __init__(self, params: dict, poly_degree: int):
        self.params = params
        self.poly_degree = int(poly_degree)

    # ----------------------------------------------------------------- construction
    @property
    def n(self) -> int:
        return int(self.params["xyz"].shape[0])

    @property
    def device(self):
        return self.params["xyz"].device

    @property
    def has_seg(self) -> bool:
        return "seg_color" in self.params

    @property
    def n_labels(self) -> int:
        return int(self.params["seg_color"].shape[1]) if self.has_seg else 0

    @classmethod
    def init_random(cls, n: int, height: int, width: int, poly_degree: int, opacity: float,
                    generator, device="cpu") -> "FoldedGaussians":
        """Paper initialisation (method.md s1.5): uniform points over the image rectangle."""
        import torch
        g = generator
        right = TAN_HALF_FOV
        top = TAN_HALF_FOV * height / width
        xy = torch.rand(n, 2, generator=g)
        xyz = torch.stack([(xy[:, 0] * 2 - 1) * right, (xy[:, 1] * 2 - 1) * top], 1)
        scale = torch.log(torch.sqrt(_mean_sq_knn3(xyz)).clamp_min(1e-7))
        params = {
            "xyz": xyz,
            "scaling": scale[:, None].repeat(1, 2),
            "rotation": _logit(torch.rand(n, 1, generator=g)),
            "m": _logit(torch.rand(n, 1, generator=g)),
            "sigma": torch.log(0.01 + 0.99 * torch.rand(n, 1, generator=g)),
            "w": torch.rand(n, 2 * poly_degree, generator=g) * 2 - 1,
            # released code: SH-DC = U(0,1)/255, i.e. a colour of ~0.5 grey
            "color": torch.rand(n, 1, generator=g) / 255.0,
            "opacity": _logit(torch.full((n, 1), opacity)),
        }
        return cls({k: v.to(device).float().contiguous() for k, v in params.items()}, poly_degree)

    @classmethod
    def init_pixels(cls, frames, n_points: int, poly_degree: int, opacity: float, generator,
                    device="cpu") -> "FoldedGaussians":
        """Start on the kept slices: one Gaussian per sampled pixel, coloured by it.

        Pixels are drawn with probability proportional to (local contrast + a uniform floor),
        so that edges get more Gaussians than flat regions. Each Gaussian starts at its frame's
        t with a temporal std of one frame gap, a size of the local sampling distance and a
        zero polynomial (no bending until the data asks for it).
        """
        import torch
        f, h, w = frames.shape
        if n_points <= 0:
            n_points = int(min(f * h * w // 6, 300_000))
        fr = frames.float().cpu()
        gx = torch.zeros_like(fr)
        gy = torch.zeros_like(fr)
        gx[:, :, 1:-1] = (fr[:, :, 2:] - fr[:, :, :-2]).abs()
        gy[:, 1:-1, :] = (fr[:, 2:, :] - fr[:, :-2, :]).abs()
        weight = (gx + gy) + 0.02 + 0.05 * (fr > 0.02).float()
        prob = (weight / weight.sum()).reshape(-1)
        # inverse-CDF sampling: torch.multinomial refuses more than 2^24 categories (512x512x150)
        cdf = torch.cumsum(prob.double(), 0)
        u = torch.rand(n_points, generator=generator, dtype=torch.float64) * float(cdf[-1])
        idx = torch.searchsorted(cdf, u).clamp_max(prob.numel() - 1)
        k = idx // (h * w)
        rem = idx % (h * w)
        row = (rem // w).float() + torch.rand(n_points, generator=generator) - 0.5
        col = (rem % w).float() + torch.rand(n_points, generator=generator) - 0.5
        fx = focal(w)
        x = (col + 0.5 - w / 2.0) / fx
        z = -(row + 0.5 - h / 2.0) / fx
        value = fr.reshape(-1)[idx].clamp(0, 1)
        # local sampling distance: pixels per Gaussian on that frame, as a radius in world units
        per_frame = torch.bincount(k, minlength=f).float().clamp_min(1)
        density = per_frame[k] / (h * w)
        radius_px = (0.5 / density.sqrt()).clamp(0.5, 8.0)
        t = k.float() / f
        params = {
            "xyz": torch.stack([x, z], 1),
            "scaling": torch.log(radius_px / fx)[:, None].repeat(1, 2),
            "rotation": _logit(torch.rand(n_points, 1, generator=generator)),
            "m": _logit(t.clamp(1e-4, 1 - 1e-4))[:, None],
            "sigma": torch.full((n_points, 1), math.log(1.0 / f)),
            "w": torch.zeros(n_points, 2 * poly_degree),
            "color": ((value - 0.5) / SH_C0)[:, None],
            "opacity": _logit(torch.full((n_points, 1), opacity)),
        }
        return cls({k_: v.to(device).float().contiguous() for k_, v in params.items()}, poly_degree)

    def add_seg_head(self, n_labels: int, init=None):
        """Add label channels: a colour per label and an own opacity (method.md s2).

        Without `init`, the seg opacity copies the image head and label colours start at 0.01.
        """
        import torch
        n = self.n
        dev = self.device
        # 0.01, not 0: colours pass clamp_min(., 0), whose gradient is 0 at (and, rounded, just below) 0
        color = torch.full((n, n_labels), (0.01 - 0.5) / SH_C0, device=dev) if init is None else init
        self.params["seg_color"] = color.float().contiguous()
        self.params["seg_opacity"] = self.params["opacity"].detach().clone()

    def seg_colors_from_masks(self, masks, annotated=None):
        """Label colours [N, L] (SH-DC) read from the masks [L, F, H, W] where each Gaussian sits.

        Each Gaussian takes the mask values at its centre pixel on its nearest frame (by m): the
        label head starts where the image head starts instead of learning every label from 0.01.
        Frames not in `annotated` give 0.01 (nothing known there).
        """
        import torch
        L, F, H, W = masks.shape
        m, _ = self.temporal()
        fx = focal(W)
        xyz = self.params["xyz"].detach()
        col = (W / 2.0 + fx * xyz[:, 0]).floor().long().clamp(0, W - 1)
        row = (H / 2.0 - fx * xyz[:, 1]).floor().long().clamp(0, H - 1)
        fr = torch.round(m.detach() * F).long().clamp(0, F - 1)
        value = masks[:, fr, row, col].T.float().clamp(0.01, 1.0)          # [N, L]
        if annotated is not None:
            known = torch.zeros(F, dtype=torch.bool, device=masks.device)
            known[torch.as_tensor(sorted(annotated), device=masks.device, dtype=torch.long)] = True
            value = torch.where(known[fr][:, None], value, torch.full_like(value, 0.01))
        return ((value - 0.5) / SH_C0).to(self.device)

    # ----------------------------------------------------------------- activations
    def temporal(self):
        import torch
        p = self.params
        return torch.sigmoid(p["m"][:, 0]), torch.exp(p["sigma"][:, 0])

    def active_pairs(self, times):
        """Indices (frame, gaussian) with delta(t) > 0.1, frame-major. times [T]."""
        import torch
        with torch.no_grad():
            m, s = self.temporal()
            d = m[None, :] - times[:, None]
            delta = torch.exp(-(d * d) / (2 * s[None, :] * s[None, :]))
            fi, gi = torch.nonzero(delta > DELTA_CULL, as_tuple=True)
        return fi, gi

    def condition(self, times, height: int, width: int, head: str = "image",
                  pairs=None, channels=None) -> Splats:
        """Condition every Gaussian on each t in `times` [T] -> packed 2D splats (method.md s1.2).

        mu(t) = (x, z) + sum_k w_k (m_t - t)^k; delta = exp(-(m_t - t)^2 / (2 sigma_t^2));
        scales shrink by delta; rotation, opacity and colour are constant in t.
        `channels` (label head only): render just these label channels, in this order.
        On CUDA with Triton, render/triton_condition computes the same splats in two kernel
        launches (forward, backward); the torch code below is the reference and the CPU path.
        """
        import torch
        p = self.params
        if pairs is None:
            pairs = self.active_pairs(times)
        fi, gi = pairs
        if head == "image":
            color_raw, opac_raw = p["color"], p["opacity"]
        elif head == "seg":
            color_raw, opac_raw = p["seg_color"], p["seg_opacity"]
            if channels is not None:
                color_raw = color_raw[:, channels]
        else:
            raise ValueError(f"unknown head {head!r}")
        if fused_condition_usable(p["xyz"]):
            from .render.triton_condition import condition_pairs
            means2d, conics, opac, colors, radii = condition_pairs(
                p["xyz"], p["scaling"], p["rotation"], p["m"], p["sigma"], p["w"], opac_raw, color_raw,
                times, fi, gi, width, height, self.poly_degree)
            return Splats(means2d, conics, opac, colors, radii, fi, gi, int(times.shape[0]), height, width)

        def take(x):    # index_select: its backward is one index_add, not a sort-based index_put
            return x.index_select(0, gi)
        m, s = self.temporal()
        d = take(m) - times[fi]                                 # [P]
        sg = take(s)
        delta = torch.exp(-(d * d) / (2 * sg * sg))
        w = take(p["w"]).view(-1, self.poly_degree, 2)          # [P, D, 2]
        powers = d[:, None] ** torch.arange(1, self.poly_degree + 1, device=d.device, dtype=d.dtype)[None]
        mu = take(p["xyz"]) + (w * powers[..., None]).sum(1)    # [P, 2] world (x, z)
        scale = torch.exp(take(p["scaling"])) * delta[:, None]  # [P, 2]
        theta = torch.sigmoid(take(p["rotation"])[:, 0]) * (2 * math.pi)
        c, sn = torch.cos(theta), torch.sin(theta)
        fx = focal(width)
        # world covariance R diag(s^2) R^T in (x, z); pixel axes (u, v) = (fx x, -fx z)
        s0, s1 = scale[:, 0] ** 2, scale[:, 1] ** 2
        cxx = c * c * s0 + sn * sn * s1
        czz = sn * sn * s0 + c * c * s1
        cxz = (s1 - s0) * c * sn
        a = fx * fx * cxx + EPS2D
        cc = fx * fx * czz + EPS2D
        b = -fx * fx * cxz
        det = (a * cc - b * b).clamp_min(1e-12)
        conics = torch.stack([cc / det, -b / det, a / det], 1)
        means2d = torch.stack([width / 2.0 + fx * mu[:, 0], height / 2.0 - fx * mu[:, 1]], 1)
        opac = torch.sigmoid(take(opac_raw)[:, 0])
        colors = torch.clamp_min(SH_C0 * take(color_raw) + 0.5, 0.0)
        with torch.no_grad():
            # gsplat's opacity-aware extent: alpha < 1/255 outside it (arXiv 2402.00525)
            ext = torch.sqrt(2 * torch.log((opac * 255).clamp_min(1.0))).clamp_max(3.33)
            r = torch.stack([torch.ceil(ext * torch.sqrt(a)), torch.ceil(ext * torch.sqrt(cc))], 1)
            r = torch.where((opac >= ALPHA_MIN)[:, None], r, torch.zeros_like(r))
            radii = r.to(torch.int32)
        return Splats(means2d, conics, opac, colors, radii, fi, gi, int(times.shape[0]), height, width)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"params": {k: v.detach().cpu() for k, v in self.params.items()},
                "poly_degree": self.poly_degree}

    @classmethod
    def from_state_dict(cls, d: dict, device="cpu") -> "FoldedGaussians":
        return cls({k: v.to(device).contiguous() for k, v in d["params"].items()}, d["poly_degree"])


def _mean_sq_knn3(xy, chunk: int = 4096):
    """Mean squared distance to the 3 nearest neighbours (what simple_knn's distCUDA2 gives)."""
    import torch
    n = xy.shape[0]
    if n < 4:
        return torch.full((n,), 1e-4)
    try:
        from scipy.spatial import cKDTree
        d, _ = cKDTree(xy.numpy()).query(xy.numpy(), k=4)
        return torch.from_numpy((d[:, 1:] ** 2).mean(1)).float()
    except ImportError:
        out = torch.empty(n)
        for i in range(0, n, chunk):
            dd = torch.cdist(xy[i:i + chunk], xy)
            out[i:i + chunk] = (dd.topk(4, largest=False).values[:, 1:] ** 2).mean(1)
        return out
