"""Folded-Gaussian conditioning (model.FoldedGaussians.condition) fused into one Triton kernel.

The torch code in model.py is the reference and the CPU path. On a GPU it is ~60 small
elementwise launches forward and ~80 backward, twice a training step (image and label head),
and a step is bound by the host issuing them. Here the forward is one launch over the P active
(frame, Gaussian) pairs and the backward one more: it recomputes each pair's intermediates from
the per-Gaussian parameters (nothing [P]-sized is saved but the pair indices) and adds the
parameter gradients with atomics. Pairs come frame-major with Gaussian indices ascending inside a
frame, so the atomics of one block hit distinct addresses.

Both passes are one kernel with a constexpr BACKWARD switch: the forward math has one copy.
model.fused_condition_usable says when model.condition takes this path.
"""
from __future__ import annotations

import math

from .triton_renderer import LazyFunction, _f32, _on, interpreting, tl, triton

BLOCK = 256          # pairs per program: a power of two (Triton block shapes must be)
NUM_WARPS = 4


def condition_pairs(xyz, scaling, rotation, m, sigma, w, opacity, color, times, fi, gi,
                    width: int, height: int, poly_degree: int, block: int | None = None):
    """(means2d [P, 2], conics [P, 3], opacities [P], colors [P, C], radii [P, 2] int32) of the
    pairs (fi, gi), from the raw per-Gaussian parameters (colour already channel-selected), as
    model.FoldedGaussians.condition computes them. Differentiable in every parameter, not in times.
    `block`: pairs per program (default BLOCK, read at the call so that tests can shrink it)."""
    block = BLOCK if block is None else block
    if block < 1 or block & (block - 1):
        raise ValueError("block must be a power of two")
    geom = (int(width), int(height), int(poly_degree), int(block))
    return _Condition.apply(xyz, scaling, rotation, m, sigma, w, opacity, color, times, fi, gi, geom)


def _constants():
    """The model's constants, read where the torch code reads them (one owner for each)."""
    from ..model import ALPHA_MIN, EPS2D, SH_C0, focal
    return ALPHA_MIN, EPS2D, SH_C0, focal


def _make_function():
    import torch

    class Condition(torch.autograd.Function):
        @staticmethod
        def forward(ctx, xyz, scaling, rotation, m, sigma, w, opacity, color, times, fi, gi, geom):
            width, height, D, block = geom
            gauss = [_f32(x) for x in (xyz, scaling, rotation, m, sigma, w, opacity, color)]
            times_, fi_, gi_ = _f32(times), fi.contiguous(), gi.contiguous()
            P, C = int(fi_.shape[0]), int(gauss[7].shape[1])
            dev = gauss[0].device
            means2d = torch.empty(P, 2, device=dev, dtype=torch.float32)
            conics = torch.empty(P, 3, device=dev, dtype=torch.float32)
            opac = torch.empty(P, device=dev, dtype=torch.float32)
            colors = torch.empty(P, C, device=dev, dtype=torch.float32)
            radii = torch.empty(P, 2, device=dev, dtype=torch.int32)
            outs = (means2d, conics, opac, colors, radii)
            # the backward's pointer slots are unused here (compiled out): any tensor fills them
            _launch(gauss, times_, fi_, gi_, outs, outs[:4], gauss, geom, backward=False)
            ctx.save_for_backward(*gauss, times_, fi_, gi_)
            ctx.geom = geom
            # an output no parameter can change carries no gradient, as in the torch code, where
            # frozen geometry (seg_head_only) leaves means2d without requires_grad
            need = ctx.needs_input_grad
            ctx.mark_non_differentiable(radii)
            if not any(need[:6]):
                ctx.mark_non_differentiable(means2d, conics)
            if not need[6]:
                ctx.mark_non_differentiable(opac)
            if not need[7]:
                ctx.mark_non_differentiable(colors)
            return outs

        @staticmethod
        def backward(ctx, g_means, g_conics, g_opac, g_colors, _g_radii):
            *gauss, times_, fi_, gi_ = ctx.saved_tensors
            # one zeroed buffer for the eight gradients: one memset launch, not eight
            flat = torch.zeros(sum(x.numel() for x in gauss), device=gauss[0].device, dtype=torch.float32)
            grads = [part.view_as(x) for part, x in zip(flat.split([x.numel() for x in gauss]), gauss)]
            g_in = [_f32(x) for x in (g_means, g_conics, g_opac, g_colors)]
            _launch(gauss, times_, fi_, gi_, g_in, g_in, grads, ctx.geom, backward=True)
            need = ctx.needs_input_grad
            return (*(g if need[k] else None for k, g in enumerate(grads)), None, None, None, None)

    return Condition


def _launch(gauss, times, fi, gi, outs, g_in, g_out, geom, backward: bool):
    width, height, D, block = geom
    P = int(fi.shape[0])
    if P == 0:                             # a grid of 0 programs is not launchable
        return
    ALPHA_MIN, EPS2D, SH_C0, focal = _constants()
    fx = focal(width)
    C = int(gauss[7].shape[1])
    means2d, conics, opac, colors = outs[:4]
    radii = outs[4] if len(outs) > 4 else outs[0]
    with _on(gauss[0].device):
        _kernel()[(triton.cdiv(P, block),)](
            *gauss, times, fi, gi, means2d, conics, opac, colors, radii, *g_in, *g_out,
            P, C, fx, fx * fx, width / 2.0, height / 2.0,
            D=D, BC=triton.next_power_of_2(C), BLOCK=block, EPS=EPS2D, SH=SH_C0, AMIN=ALPHA_MIN,
            TWO_PI=2 * math.pi, BACKWARD=backward, num_warps=NUM_WARPS)


_Condition = LazyFunction(_make_function)
_KERNELS: dict = {}


def _kernel():
    """The kernel, jitted (or interpreted under TRITON_INTERPRET=1) on first use, as in triton_renderer."""
    if triton is None:
        from ..errors import DeviceError
        raise DeviceError("fused conditioning needs the triton package (Linux CUDA torch wheels ship it)")
    key = interpreting()
    if key not in _KERNELS:
        # P (pairs) changes every step: no recompiles for its divisibility by 16
        _KERNELS[key] = triton.jit(_condition_kernel, do_not_specialize=["P"])
    return _KERNELS[key]


# ----------------------------------------------------------------------------- kernel
# Row r of a block is pair r: frame fi[r], Gaussian gi[r]. The forward stores the pair's splat;
# the backward takes dL/d(splat) and adds dL/d(raw parameter) of its Gaussian. Float constants
# of the torch code (fx * fx, W / 2) are computed in double and rounded once, as torch's scalars are.

def _condition_kernel(xyz_ptr, scaling_ptr, rot_ptr, m_ptr, sigma_ptr, w_ptr, opac_ptr, color_ptr,
                      times_ptr, fi_ptr, gi_ptr,
                      means_ptr, conics_ptr, opac_out_ptr, colors_out_ptr, radii_ptr,
                      g_means_ptr, g_conics_ptr, g_opac_ptr, g_colors_ptr,
                      g_xyz_ptr, g_scaling_ptr, g_rot_ptr, g_m_ptr, g_sigma_ptr, g_w_ptr, g_opac_raw_ptr,
                      g_color_ptr,
                      P, C, fx, fx2, half_w, half_h,
                      D: tl.constexpr, BC: tl.constexpr, BLOCK: tl.constexpr, EPS: tl.constexpr,
                      SH: tl.constexpr, AMIN: tl.constexpr, TWO_PI: tl.constexpr, BACKWARD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = row < P
    f = tl.load(fi_ptr + row, mask=ok, other=0)
    g = tl.load(gi_ptr + row, mask=ok, other=0)
    if BACKWARD:
        # dL/dmu (world x, z) from dL/dmeans2d: u = W/2 + fx x, v = H/2 - fx z
        gmu0 = fx * tl.load(g_means_ptr + 2 * row, mask=ok, other=0.0)
        gmu1 = -fx * tl.load(g_means_ptr + 2 * row + 1, mask=ok, other=0.0)

    # temporal: d = m_t - t, delta = exp(-d^2 / (2 sigma_t^2))
    t = tl.load(times_ptr + f, mask=ok, other=0.0)
    mt = 1.0 / (1.0 + tl.exp(-tl.load(m_ptr + g, mask=ok, other=0.0)))
    s = tl.exp(tl.load(sigma_ptr + g, mask=ok, other=0.0))
    d = mt - t
    delta = tl.exp(-(d * d) / (2.0 * s * s))

    # mean: (x, z) + sum_k w[k - 1] d^k, w viewed [D, 2]; dpoly = d/dd of the sum
    shift0 = tl.zeros([BLOCK], tl.float32)
    shift1 = tl.zeros([BLOCK], tl.float32)
    dpoly0 = tl.zeros([BLOCK], tl.float32)
    dpoly1 = tl.zeros([BLOCK], tl.float32)
    prev = tl.full([BLOCK], 1.0, tl.float32)                     # d^(k-1)
    for k in tl.static_range(D):
        pw = prev * d                                            # d^k (k counted from 1)
        w0 = tl.load(w_ptr + g * (2 * D) + 2 * k, mask=ok, other=0.0)
        w1 = tl.load(w_ptr + g * (2 * D) + 2 * k + 1, mask=ok, other=0.0)
        shift0 += w0 * pw
        shift1 += w1 * pw
        dpoly0 += (k + 1) * w0 * prev
        dpoly1 += (k + 1) * w1 * prev
        if BACKWARD:
            tl.atomic_add(g_w_ptr + g * (2 * D) + 2 * k, gmu0 * pw, mask=ok)
            tl.atomic_add(g_w_ptr + g * (2 * D) + 2 * k + 1, gmu1 * pw, mask=ok)
        prev = pw
    mu0 = tl.load(xyz_ptr + 2 * g, mask=ok, other=0.0) + shift0
    mu1 = tl.load(xyz_ptr + 2 * g + 1, mask=ok, other=0.0) + shift1

    # covariance R diag(scale^2) R^T in (x, z), to pixels, plus the EPS2D dilation
    e0 = tl.exp(tl.load(scaling_ptr + 2 * g, mask=ok, other=0.0))
    e1 = tl.exp(tl.load(scaling_ptr + 2 * g + 1, mask=ok, other=0.0))
    sc0 = e0 * delta
    sc1 = e1 * delta
    rot = 1.0 / (1.0 + tl.exp(-tl.load(rot_ptr + g, mask=ok, other=0.0)))
    theta = rot * TWO_PI
    c = tl.cos(theta)
    sn = tl.sin(theta)
    s0 = sc0 * sc0
    s1 = sc1 * sc1
    cxx = c * c * s0 + sn * sn * s1
    czz = sn * sn * s0 + c * c * s1
    cxz = (s1 - s0) * c * sn
    a = fx2 * cxx + EPS
    cc = fx2 * czz + EPS
    b = -fx2 * cxz
    det_raw = a * cc - b * b
    det = tl.maximum(det_raw, 1e-12)

    op = 1.0 / (1.0 + tl.exp(-tl.load(opac_ptr + g, mask=ok, other=0.0)))
    cidx = tl.arange(0, BC)
    cmask = ok[:, None] & (cidx[None, :] < C)
    coff = g[:, None] * C + cidx[None, :]
    lin = SH * tl.load(color_ptr + coff, mask=cmask, other=0.0) + 0.5

    if BACKWARD:
        # colour: clamp_min(., 0) passes the gradient where its input is >= 0 (torch's rule)
        gcol = tl.load(g_colors_ptr + row[:, None] * C + cidx[None, :], mask=cmask, other=0.0)
        tl.atomic_add(g_color_ptr + coff, tl.where(lin >= 0.0, gcol, 0.0) * SH, mask=cmask)
        gop = tl.load(g_opac_ptr + row, mask=ok, other=0.0)
        tl.atomic_add(g_opac_raw_ptr + g, gop * (1.0 - op) * op, mask=ok)

        # conics (cc, -b, a) / det, det = max(a cc - b^2, 1e-12)
        gq0 = tl.load(g_conics_ptr + 3 * row, mask=ok, other=0.0)
        gq1 = tl.load(g_conics_ptr + 3 * row + 1, mask=ok, other=0.0)
        gq2 = tl.load(g_conics_ptr + 3 * row + 2, mask=ok, other=0.0)
        gdet = tl.where(det_raw >= 1e-12, -(gq0 * cc - gq1 * b + gq2 * a) / (det * det), 0.0)
        ga = gq2 / det + gdet * cc
        gcc = gq0 / det + gdet * a
        gb = -gq1 / det - 2.0 * b * gdet
        gcxx = fx2 * ga
        gczz = fx2 * gcc
        gcxz = -fx2 * gb
        gs0 = gcxx * c * c + gczz * sn * sn - gcxz * c * sn
        gs1 = gcxx * sn * sn + gczz * c * c + gcxz * c * sn
        gc = 2.0 * c * (gcxx * s0 + gczz * s1) + gcxz * (s1 - s0) * sn
        gsn = 2.0 * sn * (gcxx * s1 + gczz * s0) + gcxz * (s1 - s0) * c
        gtheta = c * gsn - sn * gc
        tl.atomic_add(g_rot_ptr + g, gtheta * TWO_PI * (1.0 - rot) * rot, mask=ok)

        # scale_j = exp(raw_j) delta, s_j = scale_j^2
        gsc0 = 2.0 * sc0 * gs0
        gsc1 = 2.0 * sc1 * gs1
        tl.atomic_add(g_scaling_ptr + 2 * g, gsc0 * sc0, mask=ok)
        tl.atomic_add(g_scaling_ptr + 2 * g + 1, gsc1 * sc1, mask=ok)
        gdelta = (gsc0 * e0 + gsc1 * e1) * delta               # dL/d(exponent of delta)
        inv_s2 = 1.0 / (s * s)
        gd = -gdelta * d * inv_s2 + gmu0 * dpoly0 + gmu1 * dpoly1
        tl.atomic_add(g_sigma_ptr + g, gdelta * d * d * inv_s2, mask=ok)    # d(-d^2/2s^2)/dlog s
        tl.atomic_add(g_m_ptr + g, gd * (1.0 - mt) * mt, mask=ok)
        tl.atomic_add(g_xyz_ptr + 2 * g, gmu0, mask=ok)
        tl.atomic_add(g_xyz_ptr + 2 * g + 1, gmu1, mask=ok)
    else:
        tl.store(means_ptr + 2 * row, half_w + fx * mu0, mask=ok)
        tl.store(means_ptr + 2 * row + 1, half_h - fx * mu1, mask=ok)
        tl.store(conics_ptr + 3 * row, cc / det, mask=ok)
        tl.store(conics_ptr + 3 * row + 1, -b / det, mask=ok)
        tl.store(conics_ptr + 3 * row + 2, a / det, mask=ok)
        tl.store(opac_out_ptr + row, op, mask=ok)
        tl.store(colors_out_ptr + row[:, None] * C + cidx[None, :], tl.maximum(lin, 0.0), mask=cmask)
        # gsplat's opacity-aware extent (model.condition): alpha < 1/255 outside it
        ext = tl.minimum(tl.sqrt_rn(2.0 * tl.log(tl.maximum(op * 255.0, 1.0))), 3.33)
        r0 = tl.where(op >= AMIN, tl.ceil(ext * tl.sqrt_rn(a)), 0.0)
        r1 = tl.where(op >= AMIN, tl.ceil(ext * tl.sqrt_rn(cc)), 0.0)
        tl.store(radii_ptr + 2 * row, r0.to(tl.int32), mask=ok)
        tl.store(radii_ptr + 2 * row + 1, r1.to(tl.int32), mask=ok)
