"""Training of Folded Gaussians on frames (method.md s2-s4), with progress, cancel and checkpoints.

Pipelines: "img" (intensity), "seg" (label channels only), "joint" (shared geometry, both heads),
"seg_head_only" (geometry and image head frozen; only the label head learns).
Frames are float32 [F, H, W] in [0, 1]; masks are float32 [L, F, H, W] one-hot channels.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field

from .config import TrainConfig
from .errors import CancelledError, InputError, OutOfMemoryError

log = logging.getLogger(__name__)

PIPELINES = ("img", "seg", "joint", "seg_head_only")
SEG_IBFR_TARGETS = ("shape-cubic", "shape", "blend")     # config.LossConfig.seg_ibfr_target
LABEL_CHUNK = 16        # label channels per in-between label computation (`_labels_between`)


@dataclass
class TrainResult:
    model: "object"
    info: dict = field(default_factory=dict)


@contextlib.contextmanager
def cpu_deterministic(device):
    """Deterministic torch kernels while the block runs on the CPU, then the caller's setting back.

    Multithreaded CPU backward of index gathers sums in a varying order: without this the same
    seed differs by ~1e-9 after one step. The switch is process-wide, so it is scoped here.
    """
    import torch
    if device.type != "cpu":
        yield
        return
    prev = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])


class Trainer:
    def __init__(self, frames, config: TrainConfig, *, masks=None, mask_frames=None, pipeline: str = "img",
                 model=None, progress=None, cancel=None, device=None, renderer=None, renderer_reason="",
                 holdout=()):
        import torch
        from .render.base import resolve_device, select_renderer
        if pipeline not in PIPELINES:
            raise InputError(f"unknown pipeline {pipeline!r}; choose one of {PIPELINES}")
        if frames is None and pipeline in ("img", "joint"):
            raise InputError(f"pipeline {pipeline!r} needs image frames")
        if masks is None and pipeline != "img":
            raise InputError(f"pipeline {pipeline!r} needs label masks")
        if config.loss.seg_ibfr_target not in SEG_IBFR_TARGETS:
            raise InputError(f"unknown label in-between target {config.loss.seg_ibfr_target!r}: "
                             f"use one of {SEG_IBFR_TARGETS}")
        from .selfcheck import DELIVER, DELIVER_LABELS
        if config.schedule.deliver not in DELIVER:
            raise InputError(f"unknown deliver choice {config.schedule.deliver!r}: use one of {DELIVER}")
        if config.schedule.deliver_labels not in DELIVER_LABELS:
            raise InputError(f"unknown deliver_labels choice {config.schedule.deliver_labels!r}: "
                             f"use one of {DELIVER_LABELS}")
        if config.schedule.deliver_labels != "auto" and not config.schedule.self_check:
            raise InputError(f"deliver_labels={config.schedule.deliver_labels!r} chooses among the self-check's "
                             "candidates: it needs schedule.self_check=True")
        if config.schedule.deliver != "auto" and not config.schedule.self_check:
            raise InputError(f"deliver={config.schedule.deliver!r} chooses among the self-check's candidates: "
                             "it needs schedule.self_check=True")
        if config.schedule.deliver == "blend" and (config.loss.ibfr_target != "flow" or config.loss.ibfr <= 0):
            raise InputError("deliver='blend' needs the motion-compensated in-between image "
                             "(loss.ibfr_target='flow', loss.ibfr > 0)")
        dl, lc = config.schedule.deliver_labels, config.loss
        if dl != "auto" and masks is None:
            raise InputError(f"deliver_labels={dl!r} needs a label map")
        if dl in ("model_0.5", "blend") and (lc.ibfr_target != "flow" or lc.ibfr <= 0 or lc.seg_ibfr <= 0):
            raise InputError(f"deliver_labels={dl!r} needs MedGS's in-between labels "
                             "(loss.ibfr_target='flow', loss.ibfr > 0, loss.seg_ibfr > 0)")
        if dl == "blend" and (frames is None or pipeline != "joint"):
            raise InputError("deliver_labels='blend' interpolates the labels by the image's motion: it needs "
                             "image frames and labels (the joint pipeline)")
        ref = frames if frames is not None else masks[0]
        if ref.dim() != 3 or ref.shape[0] < 2:
            raise InputError(f"training needs at least 2 frames of shape [F, H, W], got {tuple(ref.shape)}")
        # a copy: sizing from the data (sizing.py) fills this run's 0s, not the caller's config
        self.cfg = copy.deepcopy(config)
        # labels delivered as MedGS's in-between labels need no label heads: the run trains the
        # image alone (as fast as an image-only run) and keeps the labels for the motion-carried
        # shape interpolation and the self-check
        self.label_heads = masks is not None and dl != "blend"
        self.device = device if device is not None else resolve_device(config.device)
        if renderer is None:
            renderer, renderer_reason = select_renderer(self.device, config.renderer)
        self.renderer, self.renderer_reason = renderer, renderer_reason
        self.F, self.H, self.W = (int(x) for x in ref.shape)
        self.label_heads_reason = ""
        if self.label_heads and dl == "auto" and pipeline == "joint" and self._between_labels_possible():
            self.label_heads = self._sized_heads(int(masks.shape[0]))
        self.pipeline = pipeline if self.label_heads or masks is None else "img"
        self._size_to_data(int(masks.shape[0]) if self.label_heads else 0)
        self.frames = frames.to(self.device).float().contiguous() if frames is not None else None
        self.masks = masks.to(self.device).float().contiguous() if masks is not None else None
        self.mask_frames = set(int(i) for i in mask_frames) if mask_frames is not None else set(range(self.F))
        # self-validation (selfcheck.py): frames kept out of training until `_fold_in`
        holdout = sorted(int(i) for i in holdout)
        if holdout and (self.frames is None or pipeline == "seg_head_only"):
            raise InputError("self-validation needs the image head: hold out frames only with images")
        if holdout and (holdout[0] < 1 or holdout[-1] > self.F - 2):
            raise InputError(f"validation frames must be interior frames, got {holdout}")
        if any(b - a < 2 for a, b in zip(holdout[:-1], holdout[1:])):
            raise InputError(f"validation frames must not be neighbours, got {holdout}")
        self._all_mask_frames = set(self.mask_frames)
        self._hold_out(holdout)
        self.selfcheck: dict | None = None
        from .model import frame_times
        self.times = frame_times(self.F).to(self.device)
        self.progress = progress
        self.cancel = cancel
        if self.label_heads_reason:
            self._emit_log(self.label_heads_reason)
        # every random draw takes this generator: the process-wide seed is left alone
        self.gen = torch.Generator().manual_seed(int(config.seed))
        self.step = 0
        self.history: list[dict] = []
        self.model = model if model is not None else self._init_model()
        if self.label_heads and not self.model.has_seg:
            init = None
            if model is None and config.model.init == "pixels":   # held-out frames are not in mask_frames
                init = self.model.seg_colors_from_masks(self.masks, self.mask_frames)
            self.model.add_seg_head(self.masks.shape[0], init=init)
        self._build_optimizer()
        from .densify import DensifyState
        self.dstate = DensifyState(self.model.n, self.device)
        self.background = None
        t_flow = time.perf_counter()
        with cpu_deterministic(self.device):
            self.flow = self._fit_flow()
        self.flow_seconds = time.perf_counter() - t_flow
        # which label is on which frame, kept on the host: picking channels must not wait for the GPU
        self._present = (self.masks.amax((2, 3)) > 0).cpu().tolist() if self.masks is not None else None
        # signed distances of the annotated frames (held-out ones too: they train once folded in),
        # float16 on the device, each computed once when first read (`_signed_rows`): the label
        # heads' shape targets read all of them from the start, the self-check (`_labels_between`)
        # only those around its held-out frames, the delivery the rest if it delivers them
        self._sd = None
        lc = self.cfg.loss
        checks_labels = bool(self.holdout) and set(self.holdout) <= self._all_mask_frames
        asks_between = self.cfg.schedule.deliver_labels in ("model_0.5", "blend") or not self.label_heads
        if (self.flow is not None and self.masks is not None and lc.seg_ibfr > 0
                and (lc.seg_ibfr_target != "blend" or checks_labels or asks_between)):
            ann = sorted(self._all_mask_frames)
            self._sd = torch.empty((self.masks.shape[0], len(ann), self.H, self.W), dtype=torch.float16,
                                   device=self.device)                          # [L, A, H, W]
            self._sd_row = torch.full((self.F,), -1, dtype=torch.long, device=self.device)
            self._sd_row[ann] = torch.arange(len(ann), device=self.device)
            self._sd_done: set[int] = set()
            if lc.seg_ibfr_target != "blend":
                self._signed_rows(ann)

    def _signed_rows(self, frames):
        """Rows of `_sd` [len(frames)] for annotated `frames`, computing those not computed yet."""
        import torch
        from .label_targets import signed_distances
        frames = [int(f) for f in frames]
        missing = [f for f in dict.fromkeys(frames) if f not in self._sd_done]
        if missing:
            self._sd[:, self._sd_row[missing]] = signed_distances(self.masks, frames=missing)
            self._sd_done.update(missing)
        return self._sd_row[torch.as_tensor(frames, device=self.device)]

    def _between_labels_possible(self) -> bool:
        lc = self.cfg.loss
        return lc.ibfr_target == "flow" and lc.ibfr > 0 and lc.seg_ibfr > 0

    def _sized_heads(self, labels: int) -> bool:
        """Train label heads? Yes, unless the schedule is a CPU time budget sized here
        (schedule.iterations 0) that gives each label channel fewer frame visits than the heads
        need (sizing.MIN_LABEL_VISITS): then the run delivers MedGS's in-between labels, which the
        heads would be trained toward. A GPU schedule gives the label channels the image's own
        visits (sizing.iterations); the heads were measured against the in-between labels there
        only on volumes of up to 79 kept frames (81 visits and more), so it always keeps them."""
        from . import sizing
        sc, ch = self.cfg.schedule, self.cfg.loss.seg_channels
        if sc.iterations or self.device.type != "cpu":
            return True
        shape = (self.F, self.H, self.W)
        steps = sizing.iterations(shape, self.device.type, self.cfg.preset.split("+")[0], sc.frames_per_step,
                                  sc.frame_visits, labels, ch)
        visits = sizing.label_visits(self.F, steps, sc.frames_per_step, labels, ch)
        if visits >= sizing.MIN_LABEL_VISITS:
            return True
        self.label_heads_reason = (
            f"the schedule gives each label channel {visits:.1f} visits of each frame (the label heads need "
            f"{sizing.MIN_LABEL_VISITS}): the labels are MedGS's in-between labels, without heads "
            "(schedule.deliver_labels='model' trains the heads)")
        return False

    def _size_to_data(self, labels: int):
        """Fill the sizes left at 0 (the CPU variant of the presets) from the data (sizing.py)."""
        from . import sizing
        mc, sc = self.cfg.model, self.cfg.schedule
        plan = sizing.plan((self.F, self.H, self.W), self.device.type, self.cfg.preset.split("+")[0],
                           sc.frames_per_step, sc.frame_visits, labels, self.cfg.loss.seg_channels)
        mc.num_points = mc.num_points or plan.num_points
        mc.max_gaussians = mc.max_gaussians or max(plan.max_gaussians, mc.num_points)
        if not sc.iterations and self.device.type == "cpu":   # a sized CPU schedule: steps as long as it is short
            scale = sizing.lr_scale(plan.iterations)
            for k in sizing.LR_SCALED:
                setattr(self.cfg.optim, k, getattr(self.cfg.optim, k) * scale)
        sc.iterations = sc.iterations or plan.iterations
        if self.device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
            import torch
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0     # not on Windows
            torch.set_num_threads(sizing.cpu_threads((self.F, self.H, self.W), os.cpu_count() or 1, load,
                                                     sc.frames_per_step))

    def _fit_flow(self):
        """Half-way motion fields for the in-between targets (flow.py), fitted on the frames.

        Image pairs are consecutive training frames; label pairs are consecutive annotated
        frames (with a sparse annotation they are several frames apart, and the image between
        them is known). A held-out frame's neighbours form one pair until it is folded back in:
        its gap gets in-between targets like any other, from fields that never saw it.
        """
        lc = self.cfg.loss
        if lc.ibfr_target == "linear" or lc.ibfr <= 0:
            return None
        if lc.ibfr_target != "flow":
            raise InputError(f"unknown IBFR target {lc.ibfr_target!r}: use 'linear' or 'flow'")
        from . import flow, sizing
        src = self.frames if self.frames is not None else self.masks.sum(0).clamp(0, 1)
        # levels / steps left at 0 follow the data and the run's budget (sizing.py)
        shape, kind, sc = (self.F, self.H, self.W), self.device.type, self.cfg.schedule
        fc = dataclasses.replace(
            self.cfg.flow, levels=self.cfg.flow.levels or sizing.flow_levels(shape),
            iterations=self.cfg.flow.iterations or sizing.flow_steps(shape, kind, sc.iterations, sc.frames_per_step))
        self.flow_config = fc
        fields = flow.PairFields(src, fc)
        fields.ensure(self._image_pairs() + self._seg_pairs() + self._pairs_after_fold_in()
                      + self._interior_pairs())                                 # one batch
        return fields

    def _interior_pairs(self):
        """Pairs two kept frames apart that the self-check's interior evidence reads
        (selfcheck.interior_quads): the in-between image needs no model, so these see any frame."""
        if not self.holdout or self.frames is None:
            return []
        from .selfcheck import interior_quads
        return list(dict.fromkeys(p for q in interior_quads(self.F) for p in zip(q[:-1], q[1:]) if p[0] != p[1]))

    def _pairs_after_fold_in(self):
        """The pairs the gaps across held-out frames split into at fold-in. Their fields are
        fitted with the others, in the same batch (fitted at fold-in they cost ~1 s of a 256 run:
        a batch's cost is its Adam steps, not its size). A field is read only once its pair
        trains, after the self-check has scored the frame, and no other pair's pixels enter a
        pair's fit, so no held-out pixel reaches the model before then. (The batch's size does:
        its loss is a mean over all pairs, so Adam's epsilon weighs in by batch size; on
        ct_abdomen3mm a field moves 0.03 px on average with twice the pairs.)"""
        if not self.holdout:
            return []
        now = set(self._image_pairs() + self._seg_pairs())
        held = self.holdout
        self._hold_out([])
        later = self._image_pairs() + self._seg_pairs()
        self._hold_out(held)
        return [p for p in later if p not in now]

    def _hold_out(self, holdout):
        """The one place that says which frames train: all but `holdout` (images and labels);
        `_next` maps each training frame to the next one, the in-between pair it starts;
        `_prev` the other way (the in-between image reads the frames on either side of a pair)."""
        self.holdout = list(holdout)
        out = set(self.holdout)
        self._active = [f for f in range(self.F) if f not in out]
        self._next = dict(zip(self._active[:-1], self._active[1:]))
        self._prev = dict(zip(self._active[1:], self._active[:-1]))
        self.mask_frames = set(self._all_mask_frames) - out

    def _image_pairs(self):
        """In-between pairs of the image head now: consecutive frames of those in training."""
        if self.pipeline not in ("img", "joint"):
            return []
        return list(zip(self._active[:-1], self._active[1:]))

    def _seg_pairs(self):
        """In-between pairs of the label heads now: consecutive annotated frames in training."""
        if self.masks is None or self.cfg.loss.seg_ibfr <= 0:
            return []
        ann = sorted(self.mask_frames)
        return list(zip(ann[:-1], ann[1:]))

    # ------------------------------------------------------------------ setup
    def _init_model(self):
        import torch
        from .model import FoldedGaussians
        mc = self.cfg.model
        if mc.init == "pixels":
            src = self.frames if self.frames is not None else self.masks.amax(0)
            if self.holdout:    # no pixel of a held-out frame may reach the model: its neighbours' mean
                src = src.clone()
                h = torch.as_tensor(self.holdout, device=src.device)
                src[h] = 0.5 * (src[h - 1] + src[h + 1])
            n = mc.num_points
            return FoldedGaussians.init_pixels(src, n, mc.poly_degree, mc.init_opacity, self.gen, self.device)
        if mc.init == "random":
            return FoldedGaussians.init_random(mc.num_points, self.H, self.W, mc.poly_degree, mc.init_opacity,
                                               self.gen, self.device)
        raise InputError(f"unknown init {mc.init!r}: use 'random' or 'pixels'")

    def _build_optimizer(self):
        from .model import EXTENT
        from .optim import ParamOptimizer
        o = self.cfg.optim
        lrs = {"xyz": o.xyz * EXTENT, "color": o.color, "opacity": o.opacity, "scaling": o.scaling,
               "rotation": o.rotation, "m": o.m, "sigma": o.sigma, "w": o.w,
               "seg_color": o.seg_color, "seg_opacity": o.seg_opacity}
        keys = set(self.model.params)
        if self.pipeline == "seg_head_only":
            trainable = {"seg_color", "seg_opacity"}
            lrs["seg_opacity"] = o.seg_color        # released code: one group at feature lr
        elif self.pipeline == "seg":
            trainable = keys - {"color", "opacity"}
        elif self.pipeline == "img":
            trainable = keys - {"seg_color", "seg_opacity"}
        else:
            trainable = keys
        self.opt = ParamOptimizer(self.model.params, lrs, trainable & keys)

    def _xyz_lr(self, step: int) -> float:
        from .model import EXTENT
        o = self.cfg.optim
        frac = min(1.0, step / max(1, self.cfg.schedule.iterations))
        return math.exp(math.log(o.xyz * EXTENT) * (1 - frac) + math.log(o.xyz_final * EXTENT) * frac)

    # ------------------------------------------------------------------ one step
    def _pick_frames(self):
        """Training frames of this step and their in-between pairs (frame, next training frame).

        Held-out validation frames are never drawn; their neighbours are a pair across them."""
        import torch
        sc = self.cfg.schedule
        act, out, nxt = self._active, set(self.holdout), self._next
        if sc.window:
            k = act[int(torch.randint(0, len(act), (1,), generator=self.gen))]
            frames = [i for i in (k - 1, k, k + 1) if 0 <= i < self.F and i not in out]
            pairs = [(i, nxt[i]) for i in frames if nxt.get(i) in frames]
        else:
            n = min(sc.frames_per_step, len(act))
            frames = sorted(act[int(i)] for i in torch.randperm(len(act), generator=self.gen)[:n])
            pairs = [(i, nxt[i]) for i in frames if i in nxt]
        return frames, pairs

    def _loss_terms(self, frames, pairs, use_ibfr, use_sigma):
        import torch
        from . import losses
        lc = self.cfg.loss
        pl = self.pipeline
        alphas = None
        if use_ibfr and pairs and pl in ("img", "joint"):
            lo, hi = lc.ibfr_alpha
            alphas = (lo + (hi - lo) * torch.rand(len(pairs), generator=self.gen)).to(self.device)
        fidx = torch.as_tensor(frames, device=self.device)
        t = self.times[fidx]
        if alphas is not None:
            pidx = torch.as_tensor([p[0] for p in pairs], device=self.device)
            nxt = torch.as_tensor([p[1] for p in pairs], device=self.device)
            t = torch.cat([t, self.times[pidx] + alphas * (nxt - pidx).to(alphas.dtype) / self.F])
        pairs_active = self.model.active_pairs(t)
        total = torch.zeros((), device=self.device)
        stats = {}
        splat_for_stats = None
        nf = len(frames)
        if pl in ("img", "joint"):
            sp = self.model.condition(t, self.H, self.W, "image", pairs_active)
            sp.means2d.retain_grad()
            out = self.renderer.render(sp, self.background)
            img = out.images[..., 0]                                      # [B, H, W]
            gt = self.frames[fidx]
            l1 = losses.l1(img[:nf], gt)
            ss = losses.ssim(img[:nf, None], gt[:, None])
            li = lc.l1 * l1 + lc.dssim * (1 - ss)
            if alphas is not None:
                if self.flow is not None:
                    from .flow import four_slices
                    blend = self._image_between(four_slices(pairs, self._prev, self._next), alphas)
                else:
                    a = alphas[:, None, None]
                    blend = (1 - a) * self.frames[pidx] + a * self.frames[nxt]
                li = li + lc.ibfr * losses.l1(img[nf:], blend)
            if use_sigma:
                li = li + lc.sigma * self._sigma_term()
            total = total + (lc.lambda_img if pl == "joint" else 1.0) * li
            stats["img"] = img[:nf].detach()
            stats["gt"] = gt
            splat_for_stats = (sp, nf, out.n_isects)
        if pl in ("seg", "joint", "seg_head_only"):
            keep = [j for j, f in enumerate(frames) if f in self.mask_frames]
            if 0 < lc.seg_frames < len(keep):   # a random subset (no draw otherwise: seeded runs stay as they were)
                keep = sorted(keep[int(i)] for i in torch.randperm(len(keep), generator=self.gen)[:lc.seg_frames])
            n_seg = lc.seg_frames if lc.seg_frames > 0 else len(frames)
            between = self._seg_between(n_seg) if use_ibfr and self.flow is not None else None
            if keep or between is not None:
                ch = self._pick_channels([frames[j] for j in keep])
                tf = t[:nf][keep]
                if between is not None:
                    tf = torch.cat([tf, between[0]])
                sp2 = self.model.condition(tf, self.H, self.W, "seg", self.model.active_pairs(tf), ch)
                if splat_for_stats is None and sp2.means2d.requires_grad:   # frozen geometry (seg_head_only): no grad
                    sp2.means2d.retain_grad()
                out2 = self.renderer.render(sp2, None)
                pred = out2.images.permute(0, 3, 1, 2)                       # [B, C, H, W]
                ls = torch.zeros((), device=self.device)
                if keep:
                    tgt = self._mask_slices(ch, fidx[keep])
                    ls = ls + self._mask_loss(pred[:len(keep)], tgt)
                if between is not None:
                    ls = ls + lc.seg_ibfr * self._mask_loss(pred[len(keep):], between[1](ch))
                if use_sigma and pl != "seg_head_only":
                    ls = ls + lc.seg_sigma * self._sigma_term()
                total = total + (lc.lambda_seg if pl == "joint" else 1.0) * ls
                stats["seg_l1"] = ls.detach()
                if splat_for_stats is None:
                    splat_for_stats = (sp2, len(keep), out2.n_isects)
        return total, stats, splat_for_stats

    def _image_between(self, quads, alphas):
        """In-between images [P, H, W] (flow.image_between) of the middle pair of each of `quads`
        (four training frames; flow.four_slices) at fractions `alphas`."""
        from .flow import image_between
        # every field the chain needs, fitted in one batch (after a fold-in new pairs appear)
        self.flow.ensure([p for q in quads for p in zip(q[:-1], q[1:])])
        return image_between(self.frames, quads, self.flow.stack, alphas)

    def _pick_channels(self, frames):
        """Label channels trained this step: all of them when few, else `seg_channels` of them,
        those present on the step's annotated frames first (the rest at random, so that absent
        labels are also pushed to 0). The whole set is covered over the steps."""
        import torch
        L, G = self.masks.shape[0], self.cfg.loss.seg_channels
        if G <= 0 or L <= G:
            return torch.arange(L, device=self.device)
        present = {c for c in range(L) if any(self._present[c][f] for f in frames)}
        order = torch.randperm(L, generator=self.gen).tolist()
        chosen = [c for c in order if c in present][:G]
        taken = set(chosen)
        chosen += [c for c in order if c not in taken][: G - len(chosen)]
        return torch.as_tensor(sorted(chosen), device=self.device)

    def _seg_between(self, n: int):
        """Times between annotated frames and a function giving their in-between masks per channel:
        shape interpolation of the flow-carried signed distances (label_targets.py), or with
        seg_ibfr_target "blend" the flow-carried masks cross-faded."""
        import torch
        lc = self.cfg.loss
        allowed = self._seg_pairs()
        if not allowed:
            return None
        n = min(len(allowed), max(1, n))
        js = torch.randperm(len(allowed), generator=self.gen)[:n].tolist()
        pick = [allowed[j] for j in js]
        lo, hi = lc.ibfr_alpha
        alphas = (lo + (hi - lo) * torch.rand(n, generator=self.gen)).to(self.device)
        ia = torch.as_tensor([a for a, _ in pick], device=self.device)
        ib = torch.as_tensor([b for _, b in pick], device=self.device)
        t = self.times[ia] + alphas * (self.times[ib] - self.times[ia])
        d = self.flow.stack(pick)
        if lc.seg_ibfr_target == "blend":
            from .flow import blend

            def targets(ch):
                return blend(self._mask_slices(ch, ia), self._mask_slices(ch, ib), d, alphas)
            return t, targets
        from .label_targets import shape_between

        def sd(ch, frames):
            return self._sd[ch[None, :], self._sd_row[frames][:, None]]
        if lc.seg_ibfr_target == "shape":
            return t, lambda ch: shape_between(sd(ch, ia), sd(ch, ib), d, alphas)
        from .label_targets import cubic_between
        ann = sorted(self.mask_frames)     # `allowed` is its consecutive pairs: js index both

        def targets(ch):
            return cubic_between(lambda fr: sd(ch, torch.as_tensor(fr, device=self.device)), self.flow.stack,
                                 ann, js, alphas)
        return t, targets

    def _labels_between(self, positions):
        """MedGS's in-between labels, the heads' target (label_targets.cubic_between over the
        annotated frames in training), at `positions` (frame units, inside the annotated range)
        -> float32 [L, P, H, W] on the host. Ramped over 1 px of distance instead of the sign,
        so that a mix with the heads' probabilities decodes at the same 0.5 level."""
        import bisect
        import numpy as np
        import torch
        from .label_targets import cubic_between
        ann = sorted(self.mask_frames)
        ks = [min(bisect.bisect_right(ann, p) - 1, len(ann) - 2) for p in positions]
        if min(ks) < 0:
            raise ValueError(f"in-between labels need positions inside the annotated frames {ann[0]}..{ann[-1]}")
        alphas = torch.as_tensor([(p - ann[k]) / (ann[k + 1] - ann[k]) for p, k in zip(positions, ks)],
                                 device=self.device, dtype=torch.float32)
        L = self.masks.shape[0]
        out = np.empty((L, len(positions), self.H, self.W), np.float32)
        with torch.no_grad():
            for c0 in range(0, L, LABEL_CHUNK):       # a few channels at a time: 188 labels stay in memory
                ch = torch.arange(c0, min(L, c0 + LABEL_CHUNK), device=self.device)

                def sd_of(frames):
                    return self._sd[ch[None, :], self._signed_rows(frames)[:, None]]
                got = cubic_between(sd_of, self.flow.stack, ann, ks, alphas, band=1.0)
                out[c0:c0 + len(ch)] = got.transpose(0, 1).cpu().numpy()
        return out

    def deliver_labels(self, probs, positions, chunk: int = 8):
        """Label probabilities [L, n, H, W] rendered at `positions` turned into the self-check's
        label choice, in place (selfcheck.choose_labels): the heads, a mix with the in-between
        labels, the in-between labels or linear interpolation. Positions on or outside the
        annotated frames are left alone (the annotated slices are pasted back; beyond the ends
        there is nothing to interpolate between)."""
        import numpy as np
        from .selfcheck import label_weight
        rec = self.selfcheck or {}
        if "label_choice" in rec:
            w = label_weight(rec)
        else:               # no self-check on the labels: the heads, or without them the in-between labels
            w = 1.0 if self.label_heads else 0.0
        if w == 1.0:
            return probs
        ann = sorted(self.mask_frames)
        inside = [n for n, p in enumerate(positions)
                  if ann[0] < p < ann[-1] and min(abs(p - a) for a in ann) > 1e-6]
        if w is None:               # linear interpolation of the annotated neighbours' masks
            ann_arr = np.asarray(ann)
            pos = np.asarray([positions[n] for n in inside], dtype=float)
            k = np.clip(np.searchsorted(ann_arr, pos, side="right") - 1, 0, len(ann) - 2)
            for n, p, a, b in zip(inside, pos, ann_arr[k], ann_arr[k + 1]):
                al = float((p - a) / (b - a))
                probs[:, n] = ((1 - al) * self.masks[:, a] + al * self.masks[:, b]).cpu().numpy()
            return probs
        for c in range(0, len(inside), chunk):
            idx = inside[c:c + chunk]
            mc = self._labels_between([float(positions[n]) for n in idx])
            probs[:, idx] = mc if w == 0.0 else w * probs[:, idx] + (1 - w) * mc
        return probs

    def _mask_slices(self, channels, frames):
        """Masks of `channels` on `frames` as [frames, channels, H, W], gathering only those
        (masks[ch][:, f] would first copy every frame of the chosen channels, each step)."""
        return self.masks[channels[None, :], frames[:, None]]

    def _mask_loss(self, pred, target):
        """L1 (released code) plus the optional soft-Dice and binary cross-entropy terms."""
        from . import losses
        lc = self.cfg.loss
        out = lc.seg_l1 * losses.l1(pred, target)
        if lc.seg_dice > 0:
            out = out + lc.seg_dice * losses.soft_dice(pred.clamp(0, 1), target)
        if lc.seg_bce > 0:
            out = out + lc.seg_bce * losses.bce(pred, target)
        return out

    def _sigma_term(self):
        from .losses import sigma_range_penalty
        import torch
        # released code with mirror cameras: num_frames = 2F, so the lower bound is 1/F
        return sigma_range_penalty(torch.exp(self.model.params["sigma"][:, 0]), 1.0 / self.F, 1.0)

    # ------------------------------------------------------------------ loop
    def train(self) -> TrainResult:
        with cpu_deterministic(self.device):
            return self._train()

    def _train(self) -> TrainResult:
        import torch
        from .densify import DensifyStrategy
        from .losses import psnr
        sc = self.cfg.schedule
        iters = sc.iterations
        dens = self.pipeline != "seg_head_only"
        strategy = DensifyStrategy.from_config(self.cfg)
        if dens:
            strategy.check_sanity(self.model.params, self.opt)
        t0 = time.perf_counter()
        from .checkpoints import current as active_checkpointing
        ckpt = active_checkpointing()      # periodic checkpoints / resume (checkpoints.py)
        resumed = ckpt.resume_into(self) if ckpt is not None else None
        psnr_window: list[float] = list(resumed["psnr_window"]) if resumed else []
        check_every = max(10, iters // 20)
        last_check = resumed["last_check"] if resumed else None
        isects = resumed["isects"] if resumed else 0
        stopped_early = False
        report_every = max(1, iters // 100)
        # self-validation: check the held-out frames every `check_every` steps from `val_from`;
        # fold them in when their PSNR stops rising or at `fold_at`, then train a quarter more
        val_from, fold_at = max(3 * check_every, int(0.3 * iters)), int(0.8 * iters)
        val_best, val_stale = -math.inf, 0
        if resumed and "iters" in resumed:      # a resumed self-validation goes on where it was
            iters, val_best, val_stale = int(resumed["iters"]), float(resumed["val_best"]), int(resumed["val_stale"])
        while self.step < iters:
            if self.cancel is not None and self.cancel():
                raise CancelledError("training was cancelled")
            step = self.step + 1
            use_ibfr = step >= sc.at(sc.ibfr_from)
            use_sigma = step < sc.at(sc.sigma_until) and self.pipeline != "seg_head_only"
            if self.pipeline != "seg_head_only":
                self.opt.set_lr("xyz", self._xyz_lr(step))
            frames, pairs = self._pick_frames()
            try:
                loss, stats, sfs = self._loss_terms(frames, pairs, use_ibfr, use_sigma)
                self.opt.zero_grad()
                loss.backward()
            except torch.cuda.OutOfMemoryError as err:
                raise OutOfMemoryError(
                    f"the GPU ran out of memory with {self.model.n} Gaussians; lower --max-gaussians "
                    f"(now {self.cfg.model.max_gaussians}) or use --device cpu") from err
            with torch.no_grad():
                if sfs is not None:
                    isects += sfs[2]
                self.opt.step()
                if dens:    # reads the step's gradients: the optimiser step leaves them as they were
                    counts = strategy.step_post_backward(self.model, self.opt, self.dstate, step, sfs, self.gen)
                    if counts is not None:
                        self._emit_log(f"step {step}: densify {counts}")
            self.step = step
            if "img" in stats and (step % report_every == 0 or step == iters):
                psnr_window.append(psnr(stats["img"].clamp(0, 1), stats["gt"]))
            if step % report_every == 0 or step == iters:
                self._emit_progress(step, iters, float(loss.detach()), psnr_window[-1] if psnr_window else None, t0)
            if ckpt is not None:
                ckpt.after_step(self, {"psnr_window": psnr_window, "last_check": last_check, "isects": isects,
                                       "iters": iters, "val_best": val_best, "val_stale": val_stale})
            if self.holdout:
                if step >= fold_at:
                    iters = self._fold_in(step, iters)
                elif step % check_every == 0 and step >= val_from:
                    cur = self._validation_psnr()
                    val_stale = 0 if cur > val_best + sc.early_stop_db else val_stale + 1
                    val_best = max(val_best, cur)
                    if val_stale >= 2:
                        self._emit_log(f"validation PSNR converged at step {step} ({cur:.2f} dB)")
                        iters = self._fold_in(step, iters)
                continue
            if self.selfcheck is not None:
                continue        # the validation decided when to stop
            if sc.early_stop_db > 0 and step % check_every == 0 and step >= sc.at(sc.early_stop_from) and psnr_window:
                cur = sum(psnr_window[-5:]) / len(psnr_window[-5:])
                if last_check is not None and cur - last_check < sc.early_stop_db:
                    stopped_early = True
                    self._emit_log(f"training PSNR converged at step {step} ({cur:.2f} dB); stopping early")
                    break
                last_check = cur
        elapsed = time.perf_counter() - t0
        stopped_early = stopped_early or self.step < sc.iterations
        info = {"iterations_run": self.step, "iterations_planned": sc.iterations, "stopped_early": stopped_early,
                "train_seconds": elapsed, "flow_seconds": self.flow_seconds, "gaussians": self.model.n,
                "renderer": self.renderer.name, "threads": torch.get_num_threads(),
                "renderer_reason": self.renderer_reason, "device": str(self.device),
                "train_psnr": psnr_window[-1] if psnr_window else None,
                "n_isects_per_step": isects / max(1, self.step), "self_check": self.selfcheck,
                "pair_throughput": isects * self.renderer.tile_size ** 2 / max(elapsed, 1e-9)}
        return TrainResult(self.model, info)

    # ------------------------------------------------------------------ self-validation
    def _render_at(self, frames, head="image"):
        import torch
        t = self.times[torch.as_tensor(frames, device=self.device)]
        with torch.no_grad():
            if head == "image":
                return self.renderer.render(self.model.condition(t, self.H, self.W, "image")).images[..., 0]
            ch = torch.arange(self.model.n_labels, device=self.device)
            return self.renderer.render(self.model.condition(t, self.H, self.W, "seg", self.model.active_pairs(t),
                                                             ch)).images.permute(0, 3, 1, 2)

    def _validation_psnr(self) -> float:
        from .selfcheck import psnr
        pred = self._render_at(self.holdout).clamp(0, 1).cpu().numpy()
        return psnr(pred, self.frames[self.holdout].cpu().numpy())

    def _fold_in(self, step: int, iters: int) -> int:
        """Score the held-out frames, record the choice, give them back to training.

        Returns the new iteration count: a quarter more than the steps run so far (at most the plan).
        """
        import numpy as np
        import torch
        from . import selfcheck
        h = torch.as_tensor(self.holdout, device=self.device)
        truth = self.frames[h].cpu().numpy()
        a, b = self.frames[h - 1], self.frames[h + 1]
        linear = (0.5 * (a + b)).cpu().numpy()
        blend = None
        if self.flow is not None:
            # across each held-out frame j from training frames and fields that never saw it
            train = set(self._active)
            quads = selfcheck.quads_across(self.holdout, train.__contains__)
            blend = self._image_between(quads, torch.full((len(h),), 0.5, device=self.device))
            blend = blend.clamp(0, 1).cpu().numpy()
        model = self._render_at(self.holdout).clamp(0, 1).cpu().numpy()
        kept = self.frames.cpu().numpy()
        lanczos = np.clip(selfcheck.held_out_lanczos(kept, self.holdout), 0, 1)
        rec = selfcheck.choose(model, blend, linear, truth, lanczos, self._interior_evidence(kept),
                               self.cfg.schedule.deliver)
        rec.update({"frames": list(self.holdout), "step": step})
        if self.masks is not None and set(self.holdout) <= self._all_mask_frames:
            from .labels import decode
            vals = list(range(1, self.masks.shape[0] + 1))
            tm = self.masks[:, h].cpu().numpy()
            lin = 0.5 * (self.masks[:, h - 1] + self.masks[:, h + 1]).cpu().numpy()
            cands = {"linear": lin}
            if self.label_heads:
                cands["model_1"] = pm = self._render_at(self.holdout, "seg").clamp(0, 1).transpose(0, 1).cpu().numpy()
            if self._sd is not None:     # MedGS's in-between labels across each held-out frame, and a mix
                cands["blend"] = mc = self._labels_between(self.holdout)
                if self.label_heads:
                    cands["model_0.5"] = 0.5 * pm + 0.5 * mc
            rec.update(selfcheck.choose_labels({k: decode(v, vals) for k, v in cands.items()}, decode(tm, vals),
                                               self.cfg.schedule.deliver_labels))
        if self.masks is not None and "label_choice" not in rec and self.cfg.schedule.deliver_labels != "auto":
            # no annotated frame held out (a sparse annotation): nothing measured, the asked choice holds
            asked = self.cfg.schedule.deliver_labels
            rec["label_choice"] = "model_1" if asked == "model" else asked
        self.selfcheck = rec
        self._emit_log(f"self-check on {len(h)} held-out kept slices: MedGS {rec['model_gain_db']:+.2f} dB over "
                       f"linear; delivering {rec['choice']} ({rec['gain_db']:+.2f} dB)")
        self._hold_out([])
        if self.flow is not None:   # fitted at start (`_pairs_after_fold_in`); a resumed run may lack them
            self.flow.ensure(self._image_pairs() + self._seg_pairs())
        return min(iters, step + max(1, int(math.ceil(0.25 * step))))

    def _interior_evidence(self, kept):
        """Per-frame PSNRs of the in-between image, linear and Lanczos on every other interior
        kept frame at twice the gap (selfcheck.interior_quads), or None without motion fields."""
        import numpy as np
        import torch
        from . import selfcheck
        quads = selfcheck.interior_quads(self.F)
        if self.flow is None or not quads:
            return None
        js = [q[1] + 1 for q in quads]
        blend = []
        for c in range(0, len(quads), 16):      # a few frames at a time: large volumes stay in memory
            part = quads[c:c + 16]
            blend.append(self._image_between(part, torch.full((len(part),), 0.5, device=self.device))
                         .clamp(0, 1).cpu().numpy())
        truth = kept[js]
        lin = 0.5 * (kept[[j - 1 for j in js]] + kept[[j + 1 for j in js]])
        lz = np.clip(selfcheck.held_out_lanczos(kept, js), 0, 1)
        return {"blend": selfcheck.frame_psnrs(np.concatenate(blend), truth),
                "linear": selfcheck.frame_psnrs(lin, truth), "lanczos": selfcheck.frame_psnrs(lz, truth)}

    def _emit_progress(self, step, total, loss, train_psnr, t0):
        if self.progress is None:
            return
        el = time.perf_counter() - t0
        eta = el / step * (total - step)
        self.progress({"event": "progress", "stage": "train", "iteration": step, "total": total,
                       "loss": loss, "psnr": train_psnr, "eta_s": eta, "gaussians": self.model.n})

    def _emit_log(self, message: str):
        log.info(message)
        if self.progress is not None:
            self.progress({"event": "log", "level": "info", "message": message})

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict:
        return {"format": "medgs-checkpoint-1", "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "step": self.step, "config": self.cfg.to_dict(), "pipeline": self.pipeline,
                "generator": self.gen.get_state(), "shape": [self.F, self.H, self.W],
                "densify": {k: getattr(self.dstate, k).cpu() for k in ("grad", "tgrad", "denom", "max_radii")},
                "holdout": list(self.holdout), "selfcheck": self.selfcheck}

    def load_checkpoint(self, ck: dict, resume_optimizer: bool = True):
        from .model import FoldedGaussians
        self.model = FoldedGaussians.from_state_dict(ck["model"], self.device)
        if self.label_heads and not self.model.has_seg:
            self.model.add_seg_head(self.masks.shape[0])
        self._build_optimizer()
        same = ck.get("pipeline") == self.pipeline
        if resume_optimizer and same:
            self.opt.load_state_dict(ck["optimizer"])
            self.step = int(ck["step"])
            self.gen.set_state(ck["generator"])
            for k, v in ck["densify"].items():
                setattr(self.dstate, k, v.to(self.device))
            if "holdout" in ck:     # self-validation state: the same frames stay out (or are back in)
                self._hold_out([int(i) for i in ck["holdout"]])
                self.selfcheck = ck.get("selfcheck")
        else:
            from .densify import DensifyState
            self.dstate = DensifyState(self.model.n, self.device)
