"""Loss terms of the released MedGS code (method.md s3-s4)."""
from __future__ import annotations

import math


def l1(a, b):
    return (a - b).abs().mean()


def _gaussian_window(size: int, sigma: float, device, dtype):
    import torch
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim(a, b, window: int = 11, sigma: float = 1.5):
    """Mean SSIM of two [B, C, H, W] batches (see ssim_map)."""
    return ssim_map(a, b, window, sigma).mean()


def ssim_map(a, b, window: int = 11, sigma: float = 1.5):
    """Per-pixel SSIM [B, C, H, W]: 11x11 Gaussian window, sigma 1.5, C1=0.01^2, C2=0.03^2.

    Zero padding as in the 3DGS/MedGS `ssim` (conv2d with padding = window // 2), so only the
    border (window // 2 pixels) differs from skimage's structural_similarity.
    """
    import torch
    import torch.nn.functional as F
    c = a.shape[1]
    g = _gaussian_window(window, sigma, a.device, a.dtype)
    # the five maps blurred in one grouped, separable convolution pair (ten launches were five pairs)
    kx = g.view(1, 1, 1, -1).repeat(5 * c, 1, 1, 1)
    ky = g.view(1, 1, -1, 1).repeat(5 * c, 1, 1, 1)
    pad = window // 2
    x = torch.cat([a, b, a * a, b * b, a * b], 1)
    x = F.conv2d(F.conv2d(x, kx, padding=(0, pad), groups=5 * c), ky, padding=(pad, 0), groups=5 * c)
    mu_a, mu_b, s_aa, s_bb, s_ab = x.split(c, 1)
    saa = s_aa - mu_a * mu_a
    sbb = s_bb - mu_b * mu_b
    sab = s_ab - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * sab + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (saa + sbb + c2)
    return num / den


def sigma_range_penalty(sigma_t, lower: float, upper: float = 1.0):
    """L_sigma as coded upstream: mean |sigma - lb| over those below lb plus mean |sigma - 1| over those above 1."""
    # written without boolean indexing so that it never waits for the GPU
    below = (sigma_t < lower).to(sigma_t.dtype)
    above = (sigma_t > upper).to(sigma_t.dtype)
    lo = ((lower - sigma_t) * below).sum() / below.sum().clamp_min(1.0)
    hi = ((sigma_t - upper) * above).sum() / above.sum().clamp_min(1.0)
    return lo + hi


def soft_dice(pred, target, eps: float = 1.0):
    """1 - mean soft Dice over channels; pred/target [B, C, H, W] in [0, 1]."""
    dims = (0, 2, 3)
    inter = (pred * target).sum(dims)
    den = pred.sum(dims) + target.sum(dims)
    return 1.0 - ((2 * inter + eps) / (den + eps)).mean()


def bce(pred, target, eps: float = 1e-4):
    """Mean binary cross-entropy of rendered label channels (clamped into (0, 1)) against masks."""
    import torch.nn.functional as F
    return F.binary_cross_entropy(pred.clamp(eps, 1 - eps), target)


def psnr(a, b) -> float:
    mse = float(((a - b) ** 2).mean())
    return 99.0 if mse <= 1e-10 else -10.0 * math.log10(mse)
