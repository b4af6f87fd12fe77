"""gsplat CUDA backend: packed splats -> isect_tiles -> isect_offset_encode -> rasterize_to_pixels.

Same semantics as torch_renderer (both follow gsplat's kernel); compared by
Testing/GPU/check_cuda_renderer.py. All depths are 1 (the released MedGS renders every
Gaussian at depth 1), so the radix sort keeps the packed (frame, Gaussian) order in a tile.
"""
from __future__ import annotations

import math

from .base import Renderer, RenderOutput

# the one gsplat version MedGS is tested with (pyproject's gpu extra and Slicer's on-demand install)
GSPLAT_REQUIREMENT = "gsplat==1.5.3"

_STATUS: tuple[bool, str] | None = None


def gsplat_status() -> tuple[bool, str]:
    """(usable, reason). Imports, and on first use JIT-builds, gsplat's CUDA extension once."""
    global _STATUS
    if _STATUS is not None:
        return _STATUS
    import torch
    if not torch.cuda.is_available():
        _STATUS = (False, "no CUDA device")
        return _STATUS
    try:
        import gsplat  # noqa: F401
    except ImportError:
        _STATUS = (False, "gsplat is not installed (pip install gsplat==1.5.3)")
        return _STATUS
    import contextlib
    import io
    buf = io.StringIO()
    try:
        # the JIT build prints pages of compiler output: keep it out of the user's terminal
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            from gsplat.cuda._backend import _C
        ok = _C is not None
        why = "ok" if ok else _diagnose(buf.getvalue())
    except Exception as err:  # the build raises many kinds of errors
        ok, why = False, _diagnose(buf.getvalue() + f"\n{type(err).__name__}: {err}")
    _STATUS = (ok, why)
    return _STATUS


def _diagnose(text: str) -> str:
    """One sentence for a failed gsplat build: what is missing."""
    import shutil
    low = text.lower()
    if shutil.which("nvcc") is None and "cuda_home" not in low:
        return "gsplat could not be built: no CUDA toolkit (nvcc) found"
    if "cuda_home" in low:
        return "gsplat could not be built: CUDA_HOME is not set or the CUDA toolkit does not match torch's CUDA"
    if "ninja" in low:
        return "gsplat could not be built: ninja is missing (pip install ninja)"
    if "cl.exe" in low or "gcc" in low or "g++" in low or "compiler" in low:
        return "gsplat could not be built: no suitable C++ compiler (gcc/g++ or MSVC cl.exe) on PATH"
    last = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "gsplat could not be built: " + (last[-1][:200] if last else "unknown error")


class GsplatRenderer(Renderer):
    name = "gsplat"

    def __init__(self, tile_size: int = 16):
        self.tile_size = int(tile_size)

    def render(self, splats, background=None) -> RenderOutput:
        import torch
        from gsplat import isect_offset_encode, isect_tiles, rasterize_to_pixels
        ts = self.tile_size
        T, H, W = splats.n_frames, splats.height, splats.width
        tw, th = math.ceil(W / ts), math.ceil(H / ts)
        depths = torch.ones_like(splats.opacities)
        if splats.means2d.shape[0] == 0:
            C = splats.colors.shape[1]
            img = torch.zeros(T, H, W, C, device=splats.means2d.device)
            alpha = torch.zeros(T, H, W, 1, device=splats.means2d.device)
            if background is not None:
                img = img + background.view(1, 1, 1, -1)
            return RenderOutput(img, alpha, 0, {"tile_size": ts})
        _, isect_ids, flatten_ids = isect_tiles(
            splats.means2d, splats.radii, depths, ts, tw, th, packed=True, n_images=T,
            image_ids=splats.frame_ids, gaussian_ids=splats.gauss_ids)
        offsets = isect_offset_encode(isect_ids, T, tw, th)
        bg = None if background is None else background.view(1, -1).expand(T, -1).contiguous()
        img, alpha = rasterize_to_pixels(splats.means2d, splats.conics, splats.colors, splats.opacities,
                                         W, H, ts, offsets, flatten_ids, backgrounds=bg, packed=True)
        return RenderOutput(img, alpha, int(flatten_ids.numel()), {"tile_size": ts})
