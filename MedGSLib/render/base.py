"""The renderer interface and backend selection."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..errors import DeviceError

log = logging.getLogger(__name__)


@dataclass
class RenderOutput:
    images: "object"          # [T, H, W, C]
    alphas: "object"          # [T, H, W, 1]
    n_isects: int = 0         # (splat, tile) intersections: the rasteriser's work is n_isects * tile^2
    meta: dict = field(default_factory=dict)


class Renderer:
    """Composite packed 2D splats (model.Splats) into images, front to back."""

    name = "base"
    tile_size = 16

    def render(self, splats, background=None) -> RenderOutput:  # pragma: no cover - interface
        raise NotImplementedError


def resolve_device(device: str):
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU -> DeviceError."""
    import torch
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but torch sees no CUDA GPU; "
                          "use --device cpu (or auto) or install a CUDA build of torch")
    if str(device) == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("--device mps was asked for but torch sees no Apple GPU (MPS); use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise DeviceError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from err


def select_renderer(device, choice: str = "auto") -> tuple[Renderer, str]:
    """Pick the renderer for `device`; returns (renderer, reason)."""
    from .torch_renderer import TorchRenderer
    if device.type != "cuda":
        if choice in ("gsplat", "triton"):
            raise DeviceError(f"the {choice} renderer needs a CUDA device; use --renderer torch (or auto) here")
        if device.type == "mps":     # gsplat and triton are CUDA-only; torch ops run on Apple GPUs
            return TorchRenderer(tile_size=8), "Apple GPU (mps): pure-torch renderer"
        return TorchRenderer(tile_size=4), "CPU device: pure-torch renderer"
    if choice == "torch":
        return TorchRenderer(tile_size=8), "torch renderer requested"
    from .triton_renderer import TritonRenderer, triton_status
    if choice == "triton":
        ok, why = triton_status()
        if not ok:
            raise DeviceError(f"triton renderer requested but unavailable: {why}")
        return TritonRenderer(), "triton renderer requested"
    from .gsplat_renderer import GsplatRenderer, gsplat_status
    ok, why = gsplat_status()
    if ok:
        return GsplatRenderer(), "CUDA + gsplat kernels"
    if choice == "gsplat":
        raise DeviceError(f"gsplat renderer requested but unavailable: {why}")
    t_ok, t_why = triton_status()
    if t_ok:
        log.info("gsplat unavailable (%s); using the triton renderer", why)
        return TritonRenderer(), f"gsplat unavailable ({why}): triton renderer (no CUDA compiler needed)"
    log.warning("gsplat unavailable (%s) and triton unusable (%s); falling back to the torch renderer on the GPU",
                why, t_why)
    return TorchRenderer(tile_size=8), f"gsplat unavailable ({why}), triton unusable ({t_why}): torch renderer on the GPU"
