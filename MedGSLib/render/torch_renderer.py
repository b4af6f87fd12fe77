"""Differentiable pure-torch rasteriser with gsplat's kernel semantics (gsplat.md Appendix A).

Per pixel, splats are composited front to back in packed order (frame, then Gaussian index;
all depths equal, as in the released MedGS):
  power = 0.5 (a dx^2 + c dy^2) + b dx dy,  alpha = min(ALPHA_MAX, o exp(-power))
  skipped when power < 0 or alpha < 1/255; C = sum c_i alpha_i T_i; compositing stops
  *before* a splat that would bring T to <= 1e-4; returned alpha = 1 - T_final.

How: every (splat, tile) intersection is expanded to the tile's pixels, the intersections
are stably sorted by tile (which keeps the compositing order inside a tile), and the
transmittance is a segmented cumulative sum of log(1 - alpha) down each tile's list (float64,
so that long lists keep their precision). No per-pixel sort is needed. Work is split into
chunks of whole tiles; with gradients on and several chunks, each chunk is checkpointed so
that memory stays bounded (the chunk is recomputed in the backward pass).
"""
from __future__ import annotations

import math

import numpy as np

from .base import Renderer, RenderOutput

ALPHA_MAX = 0.999        # gsplat 1.5.3 kernel clamp (the INRIA rasteriser upstream uses 0.99)
ALPHA_MIN = 1.0 / 255.0
T_STOP = 1e-4


def tile_ranges(means2d, radii, tile_size: int, tiles_x: int, tiles_y: int):
    """Tile bounding box [x0, x1) x [y0, y1) of each splat, as gsplat's isect_tiles computes it."""
    import torch
    r = radii.to(means2d.dtype)
    m = means2d.detach()
    x0 = torch.floor((m[:, 0] - r[:, 0]) / tile_size).clamp(0, tiles_x)
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / tile_size).clamp(0, tiles_x)
    y0 = torch.floor((m[:, 1] - r[:, 1]) / tile_size).clamp(0, tiles_y)
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / tile_size).clamp(0, tiles_y)
    valid = (radii > 0).all(1)
    return [v.long() for v in (x0, x1, y0, y1)] + [valid]


class TorchRenderer(Renderer):
    name = "torch"

    def __init__(self, tile_size: int = 8, max_elements: int = 1 << 23):
        # 8 px tiles waste less work than 16 on small splats; the result does not depend on it
        self.tile_size = int(tile_size)
        self.max_elements = int(max_elements)

    def intersections(self, splats):
        """Sorted (splat id, global tile id) pairs: the same list gsplat's isect_tiles makes."""
        import torch
        ts = self.tile_size
        tw, th = math.ceil(splats.width / ts), math.ceil(splats.height / ts)
        x0, x1, y0, y1, valid = tile_ranges(splats.means2d, splats.radii, ts, tw, th)
        bw = (x1 - x0).clamp_min(0)
        cnt = bw * (y1 - y0).clamp_min(0) * valid
        dev = splats.means2d.device
        sid = torch.repeat_interleave(torch.arange(cnt.numel(), device=dev), cnt)
        start = torch.cumsum(cnt, 0) - cnt
        local = torch.arange(sid.numel(), device=dev) - start[sid]
        bws = bw[sid].clamp_min(1)
        tx = x0[sid] + local % bws
        ty = y0[sid] + local // bws
        key = splats.frame_ids[sid] * (th * tw) + ty * tw + tx
        key, order = torch.sort(key, stable=True)
        return sid[order], key, tw, th

    def render(self, splats, background=None) -> RenderOutput:
        import torch
        from torch.utils.checkpoint import checkpoint

        ts = self.tile_size
        T, H, W = splats.n_frames, splats.height, splats.width
        C = splats.colors.shape[1]
        dev = splats.means2d.device
        sid, key, tw, th = self.intersections(splats)
        n_tiles = T * th * tw
        out = torch.zeros(n_tiles, ts * ts, C, device=dev, dtype=torch.float32)
        logT = torch.zeros(n_tiles, ts * ts, device=dev, dtype=torch.float64)
        if sid.numel():
            tiles, counts = torch.unique_consecutive(key, return_counts=True)
            ends = torch.cumsum(counts, 0)
            rows_budget = max(1, self.max_elements // (ts * ts * (4 + C)))
            # greedy split at tile boundaries so that each chunk has <= rows_budget rows
            ends_np = ends.cpu().numpy()
            bounds, lo_seg, lo_row = [], 0, 0
            while lo_seg < len(ends_np):
                hi_seg = int(np.searchsorted(ends_np, lo_row + rows_budget, side="right"))
                hi_seg = max(hi_seg, lo_seg + 1)
                bounds.append((lo_seg, hi_seg))
                lo_row = int(ends_np[hi_seg - 1])
                lo_seg = hi_seg
            grad = torch.is_grad_enabled() and any(
                t.requires_grad for t in (splats.means2d, splats.conics, splats.opacities, splats.colors))
            pix = torch.arange(ts * ts, device=dev)
            off = torch.stack([(pix % ts).float() + 0.5, (pix // ts).float() + 0.5], 1)   # [ts^2, 2]
            outs, logs, tile_lists = [], [], []
            for lo_seg, hi_seg in bounds:
                row_lo = int(ends_np[lo_seg - 1]) if lo_seg > 0 else 0
                row_hi = int(ends_np[hi_seg - 1])
                c_tiles = tiles[lo_seg:hi_seg]
                c_counts = counts[lo_seg:hi_seg]
                c_key = key[row_lo:row_hi]
                c_sid = sid[row_lo:row_hi]
                rel = torch.repeat_interleave(torch.arange(c_tiles.numel(), device=dev), c_counts)
                seg_start = torch.repeat_interleave(torch.cumsum(c_counts, 0) - c_counts, c_counts)
                tile_in_frame = c_key % (th * tw)
                origin = torch.stack([(tile_in_frame % tw) * ts, (tile_in_frame // tw) * ts], 1).float()
                args = (splats.means2d, splats.conics, splats.opacities, splats.colors)
                fn = _ChunkFn(c_sid, rel, seg_start, origin, off, c_tiles.numel())
                if grad and len(bounds) > 1:
                    o, lt = checkpoint(fn, *args, use_reentrant=False)
                else:
                    o, lt = fn(*args)
                outs.append(o)
                logs.append(lt)
                tile_lists.append(c_tiles)
            all_tiles = torch.cat(tile_lists)
            out = out.index_copy(0, all_tiles, torch.cat(outs))
            logT = logT.index_copy(0, all_tiles, torch.cat(logs))
        img = out.view(T, th, tw, ts, ts, C).permute(0, 1, 3, 2, 4, 5).reshape(T, th * ts, tw * ts, C)
        trans = torch.exp(logT).float().view(T, th, tw, ts, ts).permute(0, 1, 3, 2, 4).reshape(
            T, th * ts, tw * ts, 1)
        img, trans = img[:, :H, :W], trans[:, :H, :W]
        if background is not None:
            img = img + trans * background.view(1, 1, 1, -1)
        return RenderOutput(img, 1.0 - trans, int(sid.numel()), {"tile_size": ts})


class _ChunkFn:
    """Forward of one chunk of whole tiles: returns colour sums and log-transmittance per pixel."""

    def __init__(self, sid, rel, seg_start, origin, off, n_tiles):
        self.sid, self.rel, self.seg_start = sid, rel, seg_start
        self.origin, self.off, self.n_tiles = origin, off, n_tiles

    def __call__(self, means2d, conics, opacities, colors):
        import torch
        sid = self.sid
        px = self.origin[:, None, :] + self.off[None]                     # [R, ts^2, 2] pixel centres
        d = means2d[sid][:, None, :] - px                                 # mean - pixel, as gsplat
        q = conics[sid]
        power = 0.5 * (q[:, 0:1] * d[..., 0] ** 2 + q[:, 2:3] * d[..., 1] ** 2) + q[:, 1:2] * d[..., 0] * d[..., 1]
        alpha = torch.clamp_max(opacities[sid][:, None] * torch.exp(-power), ALPHA_MAX)
        alpha = torch.where((power >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
        lg = torch.log1p(-alpha).double()
        cs = torch.cumsum(lg, 0)
        prev = self.seg_start - 1
        base = torch.where((prev >= 0)[:, None], cs[prev.clamp_min(0)], torch.zeros_like(cs[:1]))
        incl = cs - base
        keep = (incl > math.log(T_STOP)).detach()
        weight = alpha * keep * torch.exp(incl - lg).float()              # alpha_i * T_i (exclusive)
        col = colors[sid]                                                 # [R, C]
        contrib = weight[..., None] * col[:, None, :]
        o = torch.zeros(self.n_tiles, weight.shape[1], col.shape[1], device=col.device,
                        dtype=col.dtype).index_add(0, self.rel, contrib)
        lt = torch.zeros(self.n_tiles, weight.shape[1], device=col.device, dtype=torch.float64
                         ).index_add(0, self.rel, lg * keep)
        return o, lt
