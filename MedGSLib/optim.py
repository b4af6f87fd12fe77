"""Adam with one group per named tensor, and the row surgery densification needs.

Densification adds, removes and resets rows of every parameter tensor; the optimiser's
moments must follow (zero moments for new rows), as in 3DGS.
"""
from __future__ import annotations


class ParamOptimizer:
    def __init__(self, params: dict, lrs: dict, trainable=None):
        import torch
        self.params = params
        self.trainable = set(trainable if trainable is not None else params)
        for k, p in params.items():
            p.requires_grad_(k in self.trainable)
        groups = [{"params": [params[k]], "lr": lrs[k], "name": k} for k in params if k in self.trainable]
        fused = bool(groups) and params[next(iter(self.trainable))].is_cuda
        self.opt = torch.optim.Adam(groups, eps=1e-15, fused=fused) if groups else None

    def zero_grad(self):
        for p in self.params.values():
            p.grad = None

    def step(self):
        if self.opt is not None:
            self.opt.step()

    def set_lr(self, name: str, lr: float):
        for g in self.opt.param_groups:
            if g["name"] == name:
                g["lr"] = lr

    def _swap(self, name: str, new, state_fn):
        """Replace params[name] by `new`, mapping its Adam moments with state_fn(moment)."""
        old = self.params[name]
        new = new.detach().contiguous().requires_grad_(name in self.trainable)
        self.params[name] = new
        if self.opt is None or name not in self.trainable:
            return
        for g in self.opt.param_groups:
            if g["name"] == name:
                st = self.opt.state.pop(old, None)
                g["params"] = [new]
                if st:
                    for key in ("exp_avg", "exp_avg_sq"):
                        if key in st:
                            st[key] = state_fn(st[key])
                    self.opt.state[new] = st

    def keep_rows(self, mask):
        for k in list(self.params):
            self._swap(k, self.params[k][mask], lambda s: s[mask])

    def append_rows(self, extra: dict):
        import torch
        for k in list(self.params):
            e = extra[k]
            self._swap(k, torch.cat([self.params[k].detach(), e]),
                       lambda s: torch.cat([s, torch.zeros((e.shape[0],) + s.shape[1:], device=s.device, dtype=s.dtype)]))

    def reset_tensor(self, name: str, value):
        import torch
        self._swap(name, value, torch.zeros_like)

    def state_dict(self):
        """A copy: torch's state_dict holds the live moment tensors, and load_state_dict keeps
        them as they are, so a checkpoint resumed in the same process would share them."""
        import copy
        return copy.deepcopy(self.opt.state_dict()) if self.opt is not None else {}

    def load_state_dict(self, d):
        if self.opt is not None and d:
            self.opt.load_state_dict(d)
