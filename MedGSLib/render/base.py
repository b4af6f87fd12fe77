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
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise DeviceError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from err


def select_renderer(device, choice: str = "auto") -> tuple[Renderer, str]:
    """Pick the renderer for `device`; returns (renderer, reason)."""
    from .torch_renderer import TorchRenderer
    if device.type != "cuda":
        if choice == "gsplat":
            raise DeviceError("the gsplat renderer needs a CUDA device; use --renderer torch on the CPU")
        return TorchRenderer(tile_size=4), "CPU device: pure-torch renderer"
    if choice == "torch":
        return TorchRenderer(tile_size=8), "torch renderer requested"
    from .gsplat_renderer import GsplatRenderer, gsplat_status
    ok, why = gsplat_status()
    if ok:
        return GsplatRenderer(), "CUDA + gsplat kernels"
    if choice == "gsplat":
        raise DeviceError(f"gsplat renderer requested but unavailable: {why}")
    log.warning("gsplat unavailable (%s); falling back to the torch renderer on the GPU", why)
    return TorchRenderer(tile_size=8), f"gsplat unavailable ({why}): torch renderer on the GPU"
