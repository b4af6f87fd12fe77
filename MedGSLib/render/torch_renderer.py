"""Differentiable pure-torch rasteriser with gsplat's kernel semantics (gsplat.md Appendix A).

Per pixel, splats are composited front to back in packed order (frame, then Gaussian index;
all depths equal, as in the released MedGS):
  power = 0.5 (a dx^2 + c dy^2) + b dx dy,  alpha = min(ALPHA_MAX, o exp(-power))
  skipped when power < 0 or alpha < 1/255; C = sum c_i alpha_i T_i; compositing stops
  *before* a splat that would bring T to <= 1e-4; returned alpha = 1 - T_final.

How: every (splat, tile) intersection is expanded to the tile's pixels and the intersections
are stably sorted by tile (which keeps the compositing order inside a tile). A first pass
without gradients finds the (splat, pixel) pairs that are not skipped (on real frames most of
a splat's tile rectangle is outside its 1/255 ellipse) and lists them pixel by pixel, each
pixel's splats contiguous and in compositing order. Compositing then runs on that compact
list only: the transmittance is a segmented cumulative sum of log(1 - alpha) down each
pixel's list (float64, so that long lists keep their precision), and the backward pass is
written out (suffix sums of the colour behind each splat) instead of being recorded op by
op, so no [pairs] intermediate is kept for autograd. The first pass is split into chunks of
whole tiles so that its [rows, tile^2] temporaries stay bounded.
"""
from __future__ import annotations

import math

import numpy as np

from .base import Renderer, RenderOutput

ALPHA_MAX = 0.999        # gsplat 1.5.3 kernel clamp (the INRIA rasteriser upstream uses 0.99)
ALPHA_MIN = 1.0 / 255.0
T_STOP = 1e-4
LOG_T_STOP = math.log(T_STOP)
# power units: the expanded quadratic's float32 error is ~1e-5 where tiles meet splats (|power| <~ 100)
CUT_MARGIN = 1e-2


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


def tile_intersections(splats, tile_size: int):
    """(splat ids, global tile ids, tiles_x, tiles_y) of every (splat, tile) pair, sorted by tile
    and, within a tile, in packed order: the list gsplat's isect_tiles makes. Every renderer's
    binning (torch and Triton) is this one."""
    import torch
    ts = tile_size
    tw, th = math.ceil(splats.width / ts), math.ceil(splats.height / ts)
    x0, x1, y0, y1, valid = tile_ranges(splats.means2d, splats.radii, ts, tw, th)
    bw = (x1 - x0).clamp_min(0)
    cnt = bw * (y1 - y0).clamp_min(0) * valid
    dev = splats.means2d.device
    sid = torch.repeat_interleave(torch.arange(cnt.numel(), device=dev), cnt)
    start = torch.cumsum(cnt, 0) - cnt
    # index_select, not tensor[sid]: the 1-D gather is several times faster on a CPU
    local = torch.arange(sid.numel(), device=dev) - start.index_select(0, sid)
    bws = bw.index_select(0, sid).clamp_min(1)
    row, col = local // bws, local % bws
    key = (splats.frame_ids.index_select(0, sid) * (th * tw) + (y0.index_select(0, sid) + row) * tw
           + x0.index_select(0, sid) + col)
    key, order = torch.sort(key, stable=True)
    return sid[order], key, tw, th


class TorchRenderer(Renderer):
    name = "torch"

    def __init__(self, tile_size: int = 8, max_elements: int = 1 << 23):
        # 8 px tiles waste less work than 16 on small splats; the result does not depend on it
        self.tile_size = int(tile_size)
        self.max_elements = int(max_elements)

    def intersections(self, splats):
        """Sorted (splat id, global tile id) pairs: the same list gsplat's isect_tiles makes."""
        return tile_intersections(splats, self.tile_size)

    def pixel_pairs(self, splats, sid, key, tw, th):
        """The (splat, pixel) pairs that composite, ordered pixel by pixel and, per pixel, in packed
        order: splat ids, global pixel ids (tile * ts^2 + pixel in tile), mean - pixel centre (dx,
        dy) and o exp(-power) before the clamp. Also returns the number of chunks.

        Each chunk's rows are laid out [ts^2, rows]: flattened, each pixel of a tile has its
        splats contiguous and in order; chunks end on tile boundaries, so concatenating the
        chunks' lists keeps that.
        """
        import torch
        ts = self.tile_size
        dev = splats.means2d.device
        pix = torch.arange(ts * ts, device=dev)
        offx, offy = (pix % ts).float() + 0.5, (pix // ts).float() + 0.5
        # one row per splat, gathered once per chunk: mx, my, a, b, c, o
        attr = torch.cat([splats.means2d.detach(), splats.conics.detach(),
                          splats.opacities.detach()[:, None]], 1).contiguous()
        _, counts = torch.unique_consecutive(key, return_counts=True)
        ends_np = torch.cumsum(counts, 0).cpu().numpy()
        rows_budget = max(1, self.max_elements // (ts * ts * 4))
        # greedy split at tile boundaries so that each chunk has <= rows_budget rows
        bounds, lo_row = [], 0
        while lo_row < sid.numel():
            seg = int(np.searchsorted(ends_np, lo_row + rows_budget, side="right"))
            first = int(np.searchsorted(ends_np, lo_row, side="right"))   # a chunk holds >= 1 tile
            hi_row = int(ends_np[max(seg, first + 1) - 1])
            bounds.append((lo_row, hi_row))
            lo_row = hi_row
        # the cut, power in [0, log(255 o)], is first tested on the quadratic expanded in the
        # pixel offsets (u, v): one [ts^2, 6] @ [6, rows] product instead of a dozen [ts^2, rows]
        # passes. Expanded, it is not bit-exact, so it only proposes a superset (CUT_MARGIN);
        # the candidates are then tested again with the exact expression of the reference.
        mono = torch.stack([torch.ones_like(offx), offx, offy, offx * offx, offy * offy, offx * offy], 1).to(attr.dtype)
        lists = []
        for lo, hi in bounds:
            c_sid, c_key = sid[lo:hi], key[lo:hi]
            rows = hi - lo
            t_local = c_key % (tw * th)
            at = attr.index_select(0, c_sid)
            X = at[:, 0] - ((t_local % tw) * ts).float()               # mean - tile origin
            Y = at[:, 1] - ((t_local // tw) * ts).float()
            a, b, c, o = at[:, 2], at[:, 3], at[:, 4], at[:, 5]
            half = 0.5 * torch.log((255.0 * o).clamp_min(1.0))       # centre of [0, log(255 o)]
            coef = torch.stack([0.5 * a * X * X + 0.5 * c * Y * Y + b * X * Y - half, -a * X - b * Y,
                                -c * Y - b * X, 0.5 * a, 0.5 * c, b], 0)
            near = torch.mm(mono, coef).abs_() <= (half + CUT_MARGIN)[None]     # [ts^2, rows]
            flat = torch.nonzero(near.view(-1)).squeeze(1)
            r_idx = flat % rows
            p_idx = flat // rows
            rc = torch.stack([X, Y, a, b, c, o], 1).index_select(0, r_idx)
            dx = rc[:, 0] - offx.index_select(0, p_idx)
            dy = rc[:, 1] - offy.index_select(0, p_idx)
            power = 0.5 * (rc[:, 2] * dx * dx + rc[:, 4] * dy * dy) + rc[:, 3] * dx * dy
            raw = rc[:, 5] * torch.exp(-power)
            ok = torch.nonzero((power >= 0) & (torch.clamp_max(raw, ALPHA_MAX) >= ALPHA_MIN)).squeeze(1)
            r_ok = r_idx.index_select(0, ok)
            lists.append((c_sid.index_select(0, r_ok), c_key.index_select(0, r_ok) * (ts * ts) + p_idx.index_select(0, ok),
                          dx.index_select(0, ok), dy.index_select(0, ok), raw.index_select(0, ok)))
        if len(lists) == 1:
            return lists[0] + (1,)
        return tuple(torch.cat(x) for x in zip(*lists)) + (len(bounds),)

    def render(self, splats, background=None) -> RenderOutput:
        import torch
        ts = self.tile_size
        T, H, W = splats.n_frames, splats.height, splats.width
        C = splats.colors.shape[1]
        dev = splats.means2d.device
        sid, key, tw, th = self.intersections(splats)
        n_pix = T * th * tw * ts * ts
        chunks = 0
        if sid.numel():
            p_sid, p_pid, dx, dy, raw, chunks = self.pixel_pairs(splats, sid, key, tw, th)
            out, logT = _composite()(splats.means2d, splats.conics, splats.opacities, splats.colors,
                                     p_sid, p_pid, dx, dy, raw, n_pix)
        else:
            out = torch.zeros(n_pix, C, device=dev, dtype=torch.float32)
            logT = torch.zeros(n_pix, device=dev, dtype=torch.float64)
        img = out.view(T, th, tw, ts, ts, C).permute(0, 1, 3, 2, 4, 5).reshape(T, th * ts, tw * ts, C)
        trans = torch.exp(logT).float().view(T, th, tw, ts, ts).permute(0, 1, 3, 2, 4).reshape(
            T, th * ts, tw * ts, 1)
        img, trans = img[:, :H, :W], trans[:, :H, :W]
        if background is not None:
            img = img + trans * background.view(1, 1, 1, -1)
        return RenderOutput(img, 1.0 - trans, int(sid.numel()), {"tile_size": ts, "chunks": chunks})


def _segments(pid):
    """Index of the first and of the last pair of each pair's pixel (pid sorted by pixel)."""
    import torch
    _, inverse, counts = torch.unique_consecutive(pid, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0)
    return (ends - counts)[inverse], (ends - 1)[inverse]


_FN = None


def _composite():
    """Front-to-back compositing of the compact pair list, with its backward written out
    (a torch.autograd.Function, made on first use so that importing this module needs no torch)."""
    global _FN
    if _FN is not None:
        return _FN
    import torch

    class Composite(torch.autograd.Function):
        """Inputs are the splats (for their gradients) and the pair list of pixel_pairs, whose
        dx, dy and raw alpha the first pass already computed from the same splats."""

        @staticmethod
        def forward(ctx, means2d, conics, opacities, colors, sid, pid, dx, dy, raw, n_pix):
            first, last = _segments(pid)
            alpha = torch.clamp_max(raw, ALPHA_MAX)
            lg = torch.log1p(-alpha).double()
            cs = torch.cumsum(lg, 0)
            incl = cs - (cs.index_select(0, first) - lg.index_select(0, first))   # log T after this splat
            keep = incl > LOG_T_STOP                       # the stop is absorbing: kept pairs are a prefix
            trans = torch.exp(incl - lg).float()          # T before this splat
            w = alpha * trans * keep
            # one 1-D scatter per channel: a [pairs, C] index_add costs ~4x more on a CPU
            out = torch.zeros(colors.shape[1], n_pix, device=colors.device, dtype=colors.dtype)
            for ch in range(colors.shape[1]):
                out[ch].index_add_(0, pid, w * colors[:, ch].index_select(0, sid))
            logT = torch.zeros(n_pix, device=colors.device, dtype=torch.float64
                               ).index_add_(0, pid, lg * keep)
            ctx.save_for_backward(conics, opacities, colors, sid, pid, dx, dy, raw, w, last)
            ctx.n = means2d.shape[0]
            return out.t(), logT

        @staticmethod
        def backward(ctx, g_out, g_logT):
            conics, opacities, colors, sid, pid, dx, dy, raw, w, last = ctx.saved_tensors
            alpha = torch.clamp_max(raw, ALPHA_MAX)
            n, C = ctx.n, colors.shape[1]
            g_cols = [g_out[:, ch].contiguous().index_select(0, pid) for ch in range(C)]   # dL/dC per pair
            cg = g_cols[0] * colors[:, 0].index_select(0, sid)
            for ch in range(1, C):
                cg = cg + g_cols[ch] * colors[:, ch].index_select(0, sid)
            # colour composited behind splat i in its pixel: S_i = sum_{k > i} w_k c_k . g
            cv = torch.cumsum((w * cg).double(), 0)
            behind = (cv.index_select(0, last) - cv).float()
            g_lt = g_logT.index_select(0, pid).to(alpha.dtype)
            # C = sum w_k c_k with w_k = alpha_k T_k; dC/dalpha_i = T_i c_i - S_i / (1 - alpha_i);
            # d log T / dalpha_i = -1 / (1 - alpha_i); pairs after the stop (w = 0) get nothing
            trans_kept = torch.where(w > 0, w / alpha, torch.zeros_like(w))
            g_alpha = torch.where(w > 0, trans_kept * cg - (behind + g_lt) / (1 - alpha), torch.zeros_like(w))
            g_raw = g_alpha * (raw <= ALPHA_MAX)
            g_power = -g_raw * raw
            gpx, gpy = g_power * dx, g_power * dy
            # per splat, the conic is constant: sum the pair terms first, multiply by it after
            # (1-D scatters, one per term: see forward)
            terms = [gpx, gpy, gpx * dx, gpx * dy, gpy * dy, g_raw * raw]
            if ctx.needs_input_grad[3]:
                terms += [w * g for g in g_cols]
            acc = torch.zeros(len(terms), n, device=raw.device, dtype=raw.dtype)
            for k, term in enumerate(terms):
                acc[k].index_add_(0, sid, term)
            a, b, c = conics[:, 0], conics[:, 1], conics[:, 2]
            gm = torch.stack([a * acc[0] + b * acc[1], c * acc[1] + b * acc[0]], 1)
            gq = torch.stack([0.5 * acc[2], acc[3], 0.5 * acc[4]], 1)
            go = acc[5] / opacities
            gc = acc[6:].t() if ctx.needs_input_grad[3] else None
            return gm, gq, go, gc, None, None, None, None, None, None

    _FN = Composite.apply
    return _FN
