"""Adaptive density control of the released code (method.md s4): clone, split, prune, reset.

Spatial statistic: per step, the NDC-scaled norm of d loss / d means2d (pixel gradient x W/2,
H/2), max over the step's training frames, averaged over the steps where the Gaussian was
visible; threshold 2e-4. Temporal statistic: |d loss / d m_raw| averaged the same way.
Clone small (or temporally narrow) Gaussians, split big (or temporally wide) ones into two.
"""
from __future__ import annotations

import math

from .model import EXTENT


class DensifyState:
    def __init__(self, n: int, device):
        import torch
        self.grad = torch.zeros(n, device=device)
        self.tgrad = torch.zeros(n, device=device)
        self.denom = torch.zeros(n, device=device)
        self.max_radii = torch.zeros(n, device=device)

    def resize(self, n: int):
        self.__init__(n, self.grad.device)

    def update(self, gauss_ids, means2d_grad, radii, width: int, height: int, m_grad, n: int,
               grad_scale: float = 1.0):
        """Accumulate statistics of one step (training-frame pairs only, not IBFR renders)."""
        import torch
        g = means2d_grad * means2d_grad.new_tensor([width / 2.0, height / 2.0])
        norm = g.norm(dim=1) * grad_scale
        vis_pair = (radii > 0).all(1)
        norm = torch.where(vis_pair, norm, torch.zeros_like(norm))
        step_max = torch.zeros(n, device=norm.device).scatter_reduce(0, gauss_ids, norm, "amax")
        visible = torch.zeros(n, device=norm.device, dtype=torch.bool)
        visible[gauss_ids[vis_pair]] = True
        r = torch.zeros(n, device=norm.device).scatter_reduce(
            0, gauss_ids, radii.max(1).values.float(), "amax")
        self.max_radii = torch.maximum(self.max_radii, r)
        vf = visible.float()
        self.grad += step_max * vf
        self.denom += vf
        if m_grad is not None:
            self.tgrad += m_grad.abs().reshape(-1) * vf


def densify_and_prune(model, opt, state: DensifyState, cfg, generator, *, big_prune: bool,
                      max_gaussians: int) -> dict:
    """One densification event; returns counts for the log."""
    import torch
    p = model.params
    n0 = model.n
    denom = state.denom.clamp_min(1)
    grads = state.grad / denom
    tgrads = state.tgrad / denom
    with torch.no_grad():
        max_scale = torch.exp(p["scaling"]).max(1).values
        sig = torch.exp(p["sigma"][:, 0])
        thr_s = cfg.percent_dense * EXTENT
        hot_s = grads >= cfg.grad_threshold
        hot_t = tgrads >= cfg.time_grad_threshold
        clone = (hot_s & (max_scale <= thr_s)) | (hot_t & (sig <= 1.0))
        split = (hot_s & (max_scale > thr_s)) | (hot_t & (sig >= 1.0))
        # respect the cap: keep the strongest candidates
        room = max(0, max_gaussians - n0)
        if cfg.max_growth > 0:
            room = min(room, int(cfg.max_growth * n0))
        n_clone, n_split = int(clone.sum()), int(split.sum())
        if n_clone + n_split > room:
            score = torch.maximum(grads / cfg.grad_threshold, tgrads / cfg.time_grad_threshold)
            cand = clone | split
            k = room // 2
            keep = torch.zeros_like(cand)
            if k > 0:
                idx = torch.where(cand)[0]
                top = idx[torch.topk(score[idx], min(k, idx.numel())).indices]
                keep[top] = True
            clone &= keep
            split &= keep
            n_clone, n_split = int(clone.sum()), int(split.sum())
        # clone: exact copies (m, sigma, w included)
        radii = state.max_radii            # follows the rows through clone/split (0 for new rows)
        if n_clone:
            opt.append_rows({k: v.detach()[clone] for k, v in p.items()})
            radii = torch.cat([radii, radii.new_zeros(n_clone)])
        # split: two children sampled inside the parent, scales / 1.6, parent removed
        if n_split:
            split_full = torch.cat([split, torch.zeros(model.n - n0, dtype=torch.bool, device=split.device)])
            parents = {k: v.detach()[split_full] for k, v in model.params.items()}
            s = torch.exp(parents["scaling"]).repeat(2, 1)
            eps = torch.randn(s.shape, generator=generator).to(s.device)
            theta = torch.sigmoid(parents["rotation"][:, 0]).repeat(2) * (2 * math.pi)
            c, sn = torch.cos(theta), torch.sin(theta)
            loc = s * eps
            offset = torch.stack([c * loc[:, 0] + sn * loc[:, 1], -sn * loc[:, 0] + c * loc[:, 1]], 1)
            children = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in parents.items()}
            children["xyz"] = children["xyz"] + offset
            children["scaling"] = torch.log(s / 1.6)
            opt.append_rows(children)
            keep_rows = torch.cat([~split_full, torch.ones(2 * n_split, dtype=torch.bool, device=split.device)])
            opt.keep_rows(keep_rows)
            radii = torch.cat([radii, radii.new_zeros(2 * n_split)])[keep_rows]
        # prune
        p = model.params
        op = torch.sigmoid(p["opacity"][:, 0]) if "opacity" in p else None
        low = op < cfg.min_opacity if op is not None else None
        if "seg_opacity" in p:
            sop = torch.sigmoid(p["seg_opacity"][:, 0]) < cfg.min_opacity
            low = sop if low is None else (low & sop)
        prune = low
        if big_prune:
            # radii of clones/children are unknown (0) this round: only the originals can be too big on screen
            big_screen = radii > cfg.max_screen_radius
            big_world = torch.exp(p["scaling"]).max(1).values > cfg.big_scale * EXTENT
            prune = prune | big_screen | big_world
        n_pruned = int(prune.sum())
        if n_pruned and n_pruned < model.n:
            opt.keep_rows(~prune)
    state.resize(model.n)
    return {"cloned": n_clone, "split": n_split, "pruned": n_pruned, "n": model.n}


def reset_opacity(model, opt, ceiling: float = 0.01):
    """Opacity reset: o = min(o, 0.01) on every head, with fresh Adam moments."""
    import torch
    for k in ("opacity", "seg_opacity"):
        if k in model.params and k in opt.trainable:
            v = model.params[k].detach()
            lim = math.log(ceiling / (1 - ceiling))
            opt.reset_tensor(k, torch.minimum(v, torch.full_like(v, lim)))
