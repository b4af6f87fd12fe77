"""Triton GPU rasteriser: the torch renderer's semantics (gsplat's kernel) without a CUDA toolkit.

Triton ships inside the Linux CUDA torch wheels and brings its own ptxas, so no nvcc and no
JIT build of a C++ extension is needed. (It still builds one small C launcher with the
system C compiler, gcc or clang, on its first kernel launch and caches it in ~/.triton;
`triton_status` reports a machine without one.)

Per pixel, as in torch_renderer: power = 0.5 (a dx^2 + c dy^2) + b dx dy,
alpha = min(ALPHA_MAX, o exp(-power)), skipped when power < 0 or alpha < 1/255, colours
composited front to back in packed order, stop *before* the splat that would bring T to
<= T_STOP; outputs the colour sum and T_final (alpha = 1 - T_final, background in torch).

How:
- binning (torch ops): every splat's tile box is expanded to (splat, tile) pairs, stably
  sorted by global tile id (frame, tile row, tile column), which keeps the packed order inside
  a tile; `offsets[t]:offsets[t+1]` is tile t's list.
- forward: one program per tile (TS x TS pixels) walks its list in chunks of K splats; a chunk
  is a [K, pixels] block whose transmittance comes from a cumulative product down the chunk.
  The program leaves the loop when every pixel has stopped. It stores, per pixel, T_final and
  the list index where compositing stopped.
- backward: the same program walks the same list back to front from the last index any of its
  pixels used, recovering T_i = T_after / prod(1 - alpha_j, j >= i) (as gsplat does) and the
  colour behind each splat as a running sum; per-splat gradients are summed over the tile's
  pixels and added with one atomic per (splat, tile, parameter).
"""
from __future__ import annotations

import math
import os

from .base import Renderer, RenderOutput
from .torch_renderer import ALPHA_MAX, ALPHA_MIN, T_STOP, tile_intersections

try:                                   # optional: absent on CPU-only installs, macOS and Windows
    import triton
    import triton.language as tl
except ImportError:                    # pragma: no cover - depends on the install
    triton = None
    tl = None

_STATUS: tuple[bool, str] | None = None
_INT_BIG_C = tl.constexpr(2 ** 31 - 1) if tl is not None else None   # "no stop yet" list index


def interpreting() -> bool:
    """True when TRITON_INTERPRET=1: kernels run on CPU tensors (tests, no GPU)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_status() -> tuple[bool, str]:
    """(usable, reason) for the CUDA device; runs one tiny render once to be sure it launches."""
    global _STATUS
    if _STATUS is not None:
        return _STATUS
    import torch
    if triton is None:
        _STATUS = (False, ("triton is not installed (it ships with the Linux CUDA torch wheels; "
                           "there is no official build for Windows or macOS)"))
    elif not torch.cuda.is_available():
        _STATUS = (False, "no CUDA device")
    else:
        try:
            _smoke_test("cuda")
            _STATUS = (True, "ok")
        except Exception as err:  # noqa: BLE001 - compiler, driver or launcher problems raise many kinds
            msg = f"{type(err).__name__}: {err}".strip().splitlines()[0][:200]
            if "compiler" in msg.lower():
                msg = ("triton needs a C compiler (gcc or clang) once, to build its launcher: "
                       "install gcc or set CC (" + msg + ")")
            _STATUS = (False, "triton kernels failed to run: " + msg)
    return _STATUS


def _smoke_test(device):
    import torch

    from ..model import Splats
    f = {"device": device, "dtype": torch.float32}
    sp = Splats(torch.tensor([[4.0, 4.0]], **f), torch.tensor([[0.5, 0.0, 0.5]], **f),
                torch.tensor([0.5], **f), torch.ones(1, 1, **f),
                torch.full((1, 2), 4, dtype=torch.int32, device=device),
                torch.zeros(1, dtype=torch.long, device=device), torch.zeros(1, dtype=torch.long, device=device),
                1, 8, 8)
    out = TritonRenderer().render(sp)
    got = float(out.images[0, 3, 3, 0])           # pixel centre (3.5, 3.5): power 0.5 (0.5 * 0.25 * 2)
    want = 0.5 * math.exp(-0.125)
    if abs(got - want) > 1e-5:
        raise RuntimeError(f"smoke test rendered {got}, expected {want}")


def bin_tiles(splats, tile_size: int):
    """(sid int32 [n], offsets int32 [n_tiles + 1], tiles_x, tiles_y): tile t's splats are
    sid[offsets[t]:offsets[t+1]] in packed order (torch_renderer.tile_intersections' list)."""
    import torch
    sid, key, tw, th = tile_intersections(splats, tile_size)
    n_tiles = splats.n_frames * th * tw
    counts = torch.bincount(key, minlength=n_tiles)
    offsets = torch.zeros(n_tiles + 1, dtype=torch.int32, device=key.device)
    offsets[1:] = torch.cumsum(counts, 0)
    return sid.to(torch.int32).contiguous(), offsets, tw, th


class TritonRenderer(Renderer):
    name = "triton"

    def __init__(self, tile_size: int = 16, chunk: int = 16, bwd_chunk: int = 8, num_warps: int = 8):
        # Triton block shapes must be powers of two. The backward keeps ~3x more [chunk, pixel]
        # values alive than the forward, so it takes smaller chunks (sm_90: ~156 registers/thread
        # at 8 warps, chunk 8, against ~116 for the forward at chunk 16)
        for v in (tile_size, chunk, bwd_chunk):
            if v < 1 or v & (v - 1):
                raise ValueError("tile_size, chunk and bwd_chunk must be powers of two")
        self.tile_size, self.chunk, self.bwd_chunk = int(tile_size), int(chunk), int(bwd_chunk)
        self.num_warps = int(num_warps)

    def render(self, splats, background=None) -> RenderOutput:
        import torch
        ts = self.tile_size
        T, H, W = splats.n_frames, splats.height, splats.width
        C = splats.colors.shape[1]
        dev = splats.means2d.device
        n = 0
        if splats.means2d.shape[0] == 0:
            img = torch.zeros(T, H, W, C, device=dev)
            trans = torch.ones(T, H, W, 1, device=dev)
        else:
            sid, offsets, tw, th = bin_tiles(splats, ts)
            geom = (T, H, W, C, tw, th, ts, self.chunk, self.bwd_chunk, self.num_warps)
            img, trans = _Rasterize.apply(splats.means2d, splats.conics, splats.opacities, splats.colors,
                                          sid, offsets, geom)
            n = int(sid.numel())
        if background is not None:
            img = img + trans * background.view(1, 1, 1, -1)
        return RenderOutput(img, 1.0 - trans, n, {"tile_size": ts})


def _on(device):
    """Launch on the tensors' GPU (Triton launches on the current device), a no-op on the CPU."""
    import contextlib

    import torch
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _f32(x):
    import torch
    return x.detach().to(torch.float32).contiguous()


def _make_function():
    import torch

    class Rasterize(torch.autograd.Function):
        @staticmethod
        def forward(ctx, means2d, conics, opacities, colors, sid, offsets, geom):
            T, H, W, C, tw, th, ts, K, _, nw = geom
            m, q, o, c = _f32(means2d), _f32(conics), _f32(opacities), _f32(colors)
            dev = m.device
            img = torch.empty(T, H, W, C, device=dev, dtype=torch.float32)
            trans = torch.empty(T, H, W, 1, device=dev, dtype=torch.float32)
            last = torch.empty(T, H, W, dtype=torch.int32, device=dev)
            fwd, _ = _kernels()
            with _on(dev):
                fwd[(T * th * tw,)](m, q, o, c, sid, offsets, img, trans, last, H, W, tw, th * tw, C,
                                    BC=triton.next_power_of_2(C), TS=ts, K=K,
                                    ALPHA_MAX=ALPHA_MAX, ALPHA_MIN=ALPHA_MIN, T_STOP=T_STOP, num_warps=nw)
            ctx.save_for_backward(m, q, o, c, sid, offsets, trans, last)
            ctx.geom = geom
            ctx.dtypes = tuple(x.dtype for x in (means2d, conics, opacities, colors))
            return img, trans

        @staticmethod
        def backward(ctx, g_img, g_trans):
            m, q, o, c, sid, offsets, trans, last = ctx.saved_tensors
            T, H, W, C, tw, th, ts, _, K, nw = ctx.geom
            g_img = torch.zeros_like(trans.expand(-1, -1, -1, C)) if g_img is None else g_img
            g_trans = torch.zeros_like(trans) if g_trans is None else g_trans
            gm, gq, go, gc = (torch.zeros_like(x) for x in (m, q, o, c))
            _, bwd = _kernels()
            with _on(m.device):
                bwd[(T * th * tw,)](m, q, o, c, sid, offsets, trans, last, _f32(g_img), _f32(g_trans),
                                    gm, gq, go, gc, H, W, tw, th * tw, C,
                                    BC=triton.next_power_of_2(C), TS=ts, K=K,
                                    ALPHA_MAX=ALPHA_MAX, ALPHA_MIN=ALPHA_MIN, T_STOP=T_STOP, num_warps=nw)
            grads = [g.to(dt) for g, dt in zip((gm, gq, go, gc), ctx.dtypes)]
            return (*grads, None, None, None)

    return Rasterize


class LazyFunction:
    """An autograd.Function made by `factory` on first use, so that importing a module of Triton
    kernels needs no torch work (the fused conditioning uses it too)."""

    def __init__(self, factory):
        self._factory, self._fn = factory, None

    def apply(self, *args):
        if self._fn is None:
            self._fn = self._factory()
        return self._fn.apply(*args)


_Rasterize = LazyFunction(_make_function)
_KERNELS: dict = {}


def _kernels():
    """(forward, backward) jitted, or interpreted under TRITON_INTERPRET=1 (decided at first use,
    not at import, so that a test can switch the interpreter on before rendering)."""
    if triton is None:
        from ..errors import DeviceError
        raise DeviceError("the triton renderer needs the triton package (Linux CUDA torch wheels ship it)")
    key = interpreting()
    if key not in _KERNELS:
        _KERNELS[key] = (triton.jit(_fwd_kernel), triton.jit(_bwd_kernel))
    return _KERNELS[key]


# ----------------------------------------------------------------------------- kernels
# Plain functions, jitted by _kernels(). Tile `tile` = (frame, tile row, tile column); its pixel
# p is (x, y) = (tx * TS + p % TS, ty * TS + p // TS), centre (x + 0.5, y + 0.5). Blocks are
# [K splats, TS*TS pixels]; pixels outside the image are computed but never stored. The channel
# loop is unrolled to BC = next power of two of C (C itself is a run-time argument), so that label
# renders with 5, 6 or 7 channels share one compiled kernel.

def _fwd_kernel(means_ptr, conics_ptr, opac_ptr, colors_ptr, sid_ptr, offsets_ptr,
                img_ptr, trans_ptr, last_ptr, H, W, tiles_x, tiles_per_frame, C,
                BC: tl.constexpr, TS: tl.constexpr, K: tl.constexpr,
                ALPHA_MAX: tl.constexpr, ALPHA_MIN: tl.constexpr, T_STOP: tl.constexpr):
    tile = tl.program_id(0)
    frame = tile // tiles_per_frame
    rem = tile % tiles_per_frame
    pix = tl.arange(0, TS * TS)
    x = (rem % tiles_x) * TS + pix % TS
    y = (rem // tiles_x) * TS + pix // TS
    inside = (x < W) & (y < H)
    px = x.to(tl.float32) + 0.5
    py = y.to(tl.float32) + 0.5
    start = tl.load(offsets_ptr + tile)
    end = tl.load(offsets_ptr + tile + 1)
    kk = tl.arange(0, K)
    cidx = tl.arange(0, BC)
    trans = tl.full([TS * TS], 1.0, tl.float32)
    stop = tl.zeros([TS * TS], tl.int32) + end          # list index where compositing stopped
    alive = inside
    acc = tl.zeros([TS * TS, BC], tl.float32)
    n_alive = tl.sum(alive.to(tl.int32), axis=0)
    cur = start
    while (cur < end) & (n_alive > 0):
        idx = cur + kk
        inl = idx < end
        g = tl.load(sid_ptr + idx, mask=inl, other=0)
        mx = tl.load(means_ptr + 2 * g, mask=inl, other=0.0)
        my = tl.load(means_ptr + 2 * g + 1, mask=inl, other=0.0)
        ca = tl.load(conics_ptr + 3 * g, mask=inl, other=0.0)
        cb = tl.load(conics_ptr + 3 * g + 1, mask=inl, other=0.0)
        cc = tl.load(conics_ptr + 3 * g + 2, mask=inl, other=0.0)
        op = tl.load(opac_ptr + g, mask=inl, other=0.0)
        dx = mx[:, None] - px[None, :]
        dy = my[:, None] - py[None, :]
        power = 0.5 * (ca[:, None] * dx * dx + cc[:, None] * dy * dy) + cb[:, None] * dx * dy
        alpha = tl.minimum(op[:, None] * tl.exp(-power), ALPHA_MAX)
        use = (power >= 0) & (alpha >= ALPHA_MIN) & inl[:, None] & alive[None, :]
        alpha = tl.where(use, alpha, 0.0)
        f = 1.0 - alpha
        t_incl = trans[None, :] * tl.cumprod(f, axis=0)                 # T after splat i
        # first splat that would bring T to <= T_STOP: it and all after it are dropped
        first = tl.min(tl.where(t_incl <= T_STOP, idx[:, None], _INT_BIG_C), axis=0)
        kept = idx[:, None] < first[None, :]
        w = tl.where(kept, alpha * (t_incl / f), 0.0)                  # alpha_i * T_i
        for ch in tl.static_range(BC):
            col = tl.load(colors_ptr + g * C + ch, mask=inl & (kk * 0 + ch < C), other=0.0)
            s = tl.sum(w * col[:, None], axis=0)
            acc += tl.where(cidx[None, :] == ch, s[:, None], 0.0)
        trans = tl.min(tl.where(kept, t_incl, trans[None, :]), axis=0)  # T is non-increasing
        newly = alive & (first < _INT_BIG_C)
        stop = tl.where(newly, first, stop)
        alive = alive & (first >= _INT_BIG_C)
        n_alive = tl.sum(alive.to(tl.int32), axis=0)
        cur += K
    off = (frame * H + y) * W + x
    tl.store(img_ptr + off[:, None] * C + cidx[None, :], acc, mask=inside[:, None] & (cidx[None, :] < C))
    tl.store(trans_ptr + off, trans, mask=inside)
    tl.store(last_ptr + off, stop, mask=inside)


def _bwd_kernel(means_ptr, conics_ptr, opac_ptr, colors_ptr, sid_ptr, offsets_ptr, trans_ptr, last_ptr,
                gimg_ptr, gtrans_ptr, gmeans_ptr, gconics_ptr, gopac_ptr, gcolors_ptr,
                H, W, tiles_x, tiles_per_frame, C,
                BC: tl.constexpr, TS: tl.constexpr, K: tl.constexpr,
                ALPHA_MAX: tl.constexpr, ALPHA_MIN: tl.constexpr, T_STOP: tl.constexpr):
    tile = tl.program_id(0)
    frame = tile // tiles_per_frame
    rem = tile % tiles_per_frame
    pix = tl.arange(0, TS * TS)
    x = (rem % tiles_x) * TS + pix % TS
    y = (rem // tiles_x) * TS + pix // TS
    inside = (x < W) & (y < H)
    px = x.to(tl.float32) + 0.5
    py = y.to(tl.float32) + 0.5
    off = (frame * H + y) * W + x
    start = tl.load(offsets_ptr + tile)
    stop = tl.load(last_ptr + off, mask=inside, other=0)
    stop = tl.where(inside, stop, start)                              # outside pixels use nothing
    t_after = tl.load(trans_ptr + off, mask=inside, other=1.0)        # T after the current chunk
    behind = t_after * tl.load(gtrans_ptr + off, mask=inside, other=0.0)   # dL/dC . colour behind
    kk = tl.arange(0, K)
    hi = tl.max(stop, axis=0)
    while hi > start:
        idx = hi - K + kk
        inl = idx >= start
        g = tl.load(sid_ptr + idx, mask=inl, other=0)
        mx = tl.load(means_ptr + 2 * g, mask=inl, other=0.0)
        my = tl.load(means_ptr + 2 * g + 1, mask=inl, other=0.0)
        ca = tl.load(conics_ptr + 3 * g, mask=inl, other=0.0)
        cb = tl.load(conics_ptr + 3 * g + 1, mask=inl, other=0.0)
        cc = tl.load(conics_ptr + 3 * g + 2, mask=inl, other=0.0)
        op = tl.load(opac_ptr + g, mask=inl, other=0.0)
        dx = mx[:, None] - px[None, :]
        dy = my[:, None] - py[None, :]
        power = 0.5 * (ca[:, None] * dx * dx + cc[:, None] * dy * dy) + cb[:, None] * dx * dy
        vis = tl.exp(-power)
        raw = op[:, None] * vis
        alpha = tl.minimum(raw, ALPHA_MAX)
        use = (power >= 0) & (alpha >= ALPHA_MIN) & inl[:, None] & (idx[:, None] < stop[None, :])
        alpha = tl.where(use, alpha, 0.0)
        vis = tl.where(use, vis, 0.0)              # exp(-power) may be inf where power < 0: keep 0 * inf out
        f = 1.0 - alpha
        suffix = tl.cumprod(f, axis=0, reverse=True)                   # prod_{j >= i in chunk}
        t_i = t_after[None, :] / suffix                                 # T before splat i
        w = alpha * t_i
        cg = tl.zeros([K, TS * TS], tl.float32)                         # dL/dC . c_i
        for ch in tl.static_range(BC):
            has = kk * 0 + ch < C                                       # a tensor: masks need one
            col = tl.load(colors_ptr + g * C + ch, mask=inl & has, other=0.0)
            gch = tl.load(gimg_ptr + off * C + ch, mask=inside & (pix * 0 + ch < C), other=0.0)
            cg += col[:, None] * gch[None, :]
            tl.atomic_add(gcolors_ptr + g * C + ch, tl.sum(w * gch[None, :], axis=1), mask=inl & has)
        v = cg * w
        after_i = behind[None, :] + tl.cumsum(v, axis=0, reverse=True) - v
        d_alpha = tl.where(use & (raw <= ALPHA_MAX), t_i * cg - after_i / f, 0.0)
        tl.atomic_add(gopac_ptr + g, tl.sum(d_alpha * vis, axis=1), mask=inl)
        d_pow = -d_alpha * alpha
        tl.atomic_add(gconics_ptr + 3 * g, tl.sum(0.5 * d_pow * dx * dx, axis=1), mask=inl)
        tl.atomic_add(gconics_ptr + 3 * g + 1, tl.sum(d_pow * dx * dy, axis=1), mask=inl)
        tl.atomic_add(gconics_ptr + 3 * g + 2, tl.sum(0.5 * d_pow * dy * dy, axis=1), mask=inl)
        tl.atomic_add(gmeans_ptr + 2 * g, tl.sum(d_pow * (ca[:, None] * dx + cb[:, None] * dy), axis=1),
                      mask=inl)
        tl.atomic_add(gmeans_ptr + 2 * g + 1, tl.sum(d_pow * (cc[:, None] * dy + cb[:, None] * dx), axis=1),
                      mask=inl)
        behind += tl.sum(v, axis=0)
        t_after = t_after / tl.min(suffix, axis=0)                      # suffix[0]: the whole chunk
        hi -= K
