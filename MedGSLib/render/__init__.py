"""Rendering backends behind one interface: `Renderer.render(splats) -> RenderOutput`.

`torch_renderer.TorchRenderer` runs on any torch device (CPU in CI); `gsplat_renderer`
runs gsplat's CUDA kernels; `triton_renderer` runs Triton kernels on any CUDA GPU with only
the torch wheel. All follow gsplat's kernel semantics (see torch_renderer).
`select_renderer` picks one for a device (gsplat, else triton, else torch on CUDA) and says why.
"""
from .base import RenderOutput, Renderer, select_renderer  # noqa: F401
