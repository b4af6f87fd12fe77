"""Adaptive density control of the released code (method.md s4), as a strategy in gsplat's shape.

- `DensifyState`: the running statistics per Gaussian between events (explicit, checkpointed).
- `DensifyStrategy`: the schedule and the rules; `check_sanity` once before training, then
  `step_post_backward` every step after the optimiser step (it reads the step's gradients).
- Primitives shared by every rule: `clone`, `split`, `prune`, `reset_opacity`. They change the
  parameter rows through the optimiser (its Adam moments follow the rows) and keep a dict of
  per-row tensors aligned (new rows get 0).

Spatial statistic: per step, the NDC-scaled norm of d loss / d means2d (pixel gradient x W/2,
H/2), max over the step's training frames, averaged over the steps where the Gaussian was
visible; threshold 2e-4. Temporal statistic: |d loss / d m_raw| averaged the same way.
Clone small (or temporally narrow) Gaussians, split big (or temporally wide) ones into two.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .model import EXTENT

# every model has these; a head adds opacity (image) and/or seg_opacity (labels)
REQUIRED_KEYS = ("xyz", "scaling", "rotation", "m", "sigma", "w")


class DensifyState:
    """grad, tgrad (sums of the spatial / temporal statistic), denom (steps visible), max_radii (px)."""

    KEYS = ("grad", "tgrad", "denom", "max_radii")

    def __init__(self, n: int, device):
        self.reset(n, device)

    def reset(self, n: int, device=None):
        """Zero statistics for n Gaussians (after an event the rows have changed)."""
        import torch
        device = device if device is not None else self.grad.device
        for k in self.KEYS:
            setattr(self, k, torch.zeros(n, device=device))

    def update(self, gauss_ids, means2d_grad, radii, width: int, height: int, m_grad, n: int,
               grad_scale: float = 1.0):
        """Accumulate statistics of one step (training-frame pairs only, not IBFR renders)."""
        import torch
        g = means2d_grad * means2d_grad.new_tensor([width / 2.0, height / 2.0])
        norm = g.norm(dim=1) * grad_scale
        vis_pair = (radii > 0).all(1)
        norm = torch.where(vis_pair, norm, torch.zeros_like(norm))
        step_max = torch.zeros(n, device=norm.device).scatter_reduce(0, gauss_ids, norm, "amax")
        # a scatter, not visible[ids[mask]] = True: boolean indexing waits for the GPU every step
        vf = torch.zeros(n, device=norm.device).scatter_reduce(0, gauss_ids, vis_pair.float(), "amax")
        r = torch.zeros(n, device=norm.device).scatter_reduce(
            0, gauss_ids, radii.max(1).values.float(), "amax")
        self.max_radii = torch.maximum(self.max_radii, r)
        self.grad += step_max * vf
        self.denom += vf
        if m_grad is not None:
            self.tgrad += m_grad.abs().reshape(-1) * vf


# ------------------------------------------------------------------------------- primitives
def clone(opt, mask, rows: dict | None = None) -> dict:
    """Append exact copies (m, sigma, w included) of the rows in `mask`; returns `rows` extended."""
    rows = dict(rows or {})
    n_new = int(mask.sum())
    if n_new:
        opt.append_rows({k: v.detach()[mask] for k, v in opt.params.items()})
        rows = {k: _extend(v, n_new) for k, v in rows.items()}
    return rows


def split(opt, mask, generator, rows: dict | None = None, factor: float = 1.6) -> dict:
    """Replace each Gaussian in `mask` (may be shorter than N: the rest count as False) by two
    children sampled inside it, scales / `factor`; returns `rows` extended and filtered."""
    import torch
    rows = dict(rows or {})
    n_split = int(mask.sum())
    if not n_split:
        return rows
    n = opt.params["xyz"].shape[0]
    full = torch.cat([mask, torch.zeros(n - mask.numel(), dtype=torch.bool, device=mask.device)])
    parents = {k: v.detach()[full] for k, v in opt.params.items()}
    s = torch.exp(parents["scaling"]).repeat(2, 1)
    eps = torch.randn(s.shape, generator=generator).to(s.device)
    theta = torch.sigmoid(parents["rotation"][:, 0]).repeat(2) * (2 * math.pi)
    c, sn = torch.cos(theta), torch.sin(theta)
    loc = s * eps
    offset = torch.stack([c * loc[:, 0] + sn * loc[:, 1], -sn * loc[:, 0] + c * loc[:, 1]], 1)
    children = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in parents.items()}
    children["xyz"] = children["xyz"] + offset
    children["scaling"] = torch.log(s / factor)
    opt.append_rows(children)
    keep = torch.cat([~full, torch.ones(2 * n_split, dtype=torch.bool, device=mask.device)])
    opt.keep_rows(keep)
    return {k: _extend(v, 2 * n_split)[keep] for k, v in rows.items()}


def prune(opt, mask, rows: dict | None = None) -> dict:
    """Remove the rows in `mask`; returns `rows` filtered the same way."""
    opt.keep_rows(~mask)
    return {k: v[~mask] for k, v in (rows or {}).items()}


def reset_opacity(model, opt, ceiling: float = 0.01):
    """Opacity reset: o = min(o, ceiling) on every trained head, with fresh Adam moments."""
    import torch
    for k in ("opacity", "seg_opacity"):
        if k in model.params and k in opt.trainable:
            v = model.params[k].detach()
            lim = math.log(ceiling / (1 - ceiling))
            opt.reset_tensor(k, torch.minimum(v, torch.full_like(v, lim)))


def _extend(t, n_new: int):
    import torch
    return torch.cat([t, t.new_zeros((n_new,) + tuple(t.shape[1:]))])


# ------------------------------------------------------------------------------- strategy
@dataclass
class DensifyStrategy:
    """The released schedule: statistics until `densify_until`, an event every `densify_every`
    after `densify_from`, big-Gaussian pruning after `big_prune_from`, opacity resets."""

    cfg: object             # config.DensifyConfig
    schedule: object        # config.ScheduleConfig
    max_gaussians: int

    @classmethod
    def from_config(cls, train_cfg) -> "DensifyStrategy":
        return cls(train_cfg.densify, train_cfg.schedule, train_cfg.model.max_gaussians)

    def initialize_state(self, n: int, device) -> DensifyState:
        return DensifyState(n, device)

    def check_sanity(self, params: dict, opt) -> None:
        """The parameters densification edits: the required keys, one row count, owned by `opt`."""
        missing = [k for k in REQUIRED_KEYS if k not in params]
        if missing or not ({"opacity", "seg_opacity"} & set(params)):
            raise ValueError(f"densification needs {REQUIRED_KEYS} and an opacity; missing {missing or ['opacity']}")
        rows = {k: int(v.shape[0]) for k, v in params.items()}
        if len(set(rows.values())) != 1:
            raise ValueError(f"parameter tensors disagree on the number of Gaussians: {rows}")
        if opt.params is not params:
            raise ValueError("the optimiser does not hold the model's parameter dict: row surgery would desync them")

    def step_post_backward(self, model, opt, state: DensifyState, step: int, splat_info, generator):
        """After the step's backward and optimiser step: accumulate statistics, then run the
        step's event (returns its counts) and/or opacity reset; None when no event ran."""
        sc = self.schedule
        if step >= sc.at(sc.densify_until):
            return None
        if splat_info is not None:
            sp, nf, _ = splat_info
            g = sp.means2d.grad
            if g is not None:
                sel = sp.frame_ids < nf
                m_grad = model.params["m"].grad
                # loss is a mean over the step's frames: scale to the released 3-frame window
                state.update(sp.gauss_ids[sel], g[sel], sp.radii[sel], sp.width, sp.height,
                             m_grad, model.n, grad_scale=nf / 3.0)
        counts = None
        if step > sc.at(sc.densify_from) and step % sc.at(sc.densify_every) == 0:
            counts = self.densify_and_prune(model, opt, state, generator, big_prune=step > sc.at(sc.big_prune_from))
        if step % sc.at(sc.opacity_reset_every) == 0:
            reset_opacity(model, opt)
        return counts

    def select(self, state: DensifyState, params: dict, room: int):
        """(clone, split) masks: hot and small -> clone, hot and big -> split, at most `room` rows added."""
        import torch
        cfg = self.cfg
        denom = state.denom.clamp_min(1)
        grads, tgrads = state.grad / denom, state.tgrad / denom
        max_scale = torch.exp(params["scaling"]).max(1).values
        sig = torch.exp(params["sigma"][:, 0])
        thr_s = cfg.percent_dense * EXTENT
        hot_s = grads >= cfg.grad_threshold
        hot_t = tgrads >= cfg.time_grad_threshold
        clone_m = (hot_s & (max_scale <= thr_s)) | (hot_t & (sig <= 1.0))
        split_m = (hot_s & (max_scale > thr_s)) | (hot_t & (sig >= 1.0))
        if int(clone_m.sum()) + int(split_m.sum()) > room:
            # over the cap: keep the strongest candidates (room // 2: a split adds two rows)
            score = torch.maximum(grads / cfg.grad_threshold, tgrads / cfg.time_grad_threshold)
            cand = clone_m | split_m
            k = room // 2
            keep = torch.zeros_like(cand)
            if k > 0:
                idx = torch.where(cand)[0]
                keep[idx[torch.topk(score[idx], min(k, idx.numel())).indices]] = True
            clone_m, split_m = clone_m & keep, split_m & keep
        return clone_m, split_m

    def prune_mask(self, params: dict, max_radii, big_prune: bool):
        """Transparent on every head; after `big_prune_from` also too big on screen or in the world."""
        import torch
        cfg = self.cfg
        low = torch.sigmoid(params["opacity"][:, 0]) < cfg.min_opacity if "opacity" in params else None
        if "seg_opacity" in params:
            sop = torch.sigmoid(params["seg_opacity"][:, 0]) < cfg.min_opacity
            low = sop if low is None else (low & sop)
        if big_prune:
            # radii of clones/children are unknown (0) this round: only the originals can be too big on screen
            big_screen = max_radii > cfg.max_screen_radius
            big_world = torch.exp(params["scaling"]).max(1).values > cfg.big_scale * EXTENT
            low = low | big_screen | big_world
        return low

    def densify_and_prune(self, model, opt, state: DensifyState, generator, *, big_prune: bool) -> dict:
        """One event: clone, split, prune; resets the statistics; returns counts for the log."""
        import torch
        with torch.no_grad():
            n0 = model.n
            room = max(0, self.max_gaussians - n0)
            if self.cfg.max_growth > 0:
                room = min(room, int(self.cfg.max_growth * n0))
            clone_m, split_m = self.select(state, model.params, room)
            rows = {"radii": state.max_radii}      # follows the rows through clone/split
            rows = clone(opt, clone_m, rows)
            rows = split(opt, split_m, generator, rows)
            prune_m = self.prune_mask(model.params, rows["radii"], big_prune)
            n_pruned = int(prune_m.sum())
            if not n_pruned or n_pruned >= model.n:
                n_pruned = 0            # never remove every Gaussian
            else:
                prune(opt, prune_m, rows)
        state.reset(model.n)
        return {"cloned": int(clone_m.sum()), "split": int(split_m.sum()), "pruned": n_pruned, "n": model.n}
