"""Training options as small dataclasses, and the named presets.

Milestones of the schedule are fractions of `iterations`, so `--iterations N` moves every
milestone proportionally (the paper preset reproduces the released code's absolute numbers at
30 000 iterations: IBFR from 10 000, L_sigma and densification until 20 000, densify every 100
from 500, opacity reset every 3 000).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import InputError

PAPER_ITERATIONS = 30_000


@dataclass
class ModelConfig:
    poly_degree: int = 7            # D of the polynomial mean shift (paper: 7 for interpolation)
    num_points: int = 100_000       # initial Gaussians (paper: 100 000, uniform random)
    init: str = "random"           # "random" (paper) or "pixels" (from the kept slices' pixels)
    init_opacity: float = 0.1
    max_gaussians: int = 600_000    # hard cap: densification stops growing past it


@dataclass
class LossConfig:
    l1: float = 2.0                 # weight of L1 on the training frames
    dssim: float = 0.25             # weight of (1 - SSIM)
    ibfr: float = 0.5               # weight of L1 on in-between frames (IBFR)
    sigma: float = 0.25             # weight of the temporal-std range penalty L_sigma
    ibfr_alpha: tuple[float, float] = (0.2, 0.8)
    # what the in-between frames are pulled toward: "linear" (released code: (1-a)A + aB) or
    # "flow" (motion-compensated blend, flow.py; also gives the label heads in-between targets)
    ibfr_target: str = "linear"
    seg_ibfr: float = 1.0           # weight of the label heads' in-between term (flow targets only)
    seg_channels: int = 8           # label channels rendered per step (the rasteriser's cost grows with it)
    seg_l1: float = 2.0             # mask loss weight (method.md s2)
    seg_dice: float = 0.0           # optional soft-Dice term for label heads
    seg_bce: float = 0.0            # optional per-channel binary cross-entropy for label heads
    seg_sigma: float = 0.5
    lambda_img: float = 1.0
    lambda_seg: float = 1.0


@dataclass
class ScheduleConfig:
    iterations: int = PAPER_ITERATIONS
    ibfr_from: float = 10_000 / PAPER_ITERATIONS
    sigma_until: float = 20_000 / PAPER_ITERATIONS
    densify_from: float = 500 / PAPER_ITERATIONS
    densify_until: float = 20_000 / PAPER_ITERATIONS
    densify_every: float = 100 / PAPER_ITERATIONS
    opacity_reset_every: float = 3_000 / PAPER_ITERATIONS
    big_prune_from: float = 3_000 / PAPER_ITERATIONS
    frames_per_step: int = 3        # paper: the window {k-1, k, k+1}
    window: bool = True             # True: consecutive window (paper); False: random frames
    early_stop_db: float = 0.0      # >0: stop when training PSNR gains less than this per check
    early_stop_from: float = 0.7    # ...but never before this fraction of the schedule

    def at(self, fraction: float) -> int:
        """Iteration number of a milestone given as a fraction of the schedule."""
        return max(1, int(round(fraction * self.iterations)))


@dataclass
class DensifyConfig:
    grad_threshold: float = 2e-4     # NDC-scaled means2d gradient (3DGS units)
    time_grad_threshold: float = 2e-4
    percent_dense: float = 0.01      # clone/split boundary as a fraction of the 1.1 extent
    min_opacity: float = 0.01
    max_screen_radius: float = 20.0  # px, pruned after big_prune_from
    big_scale: float = 0.1           # world, pruned after big_prune_from (x 1.1 extent)
    max_growth: float = 0.0          # >0: at most this fraction of N added per event (0 = no limit)


@dataclass
class OptimConfig:
    xyz: float = 1.6e-4
    xyz_final: float = 1.6e-6
    color: float = 0.0025
    opacity: float = 0.025
    scaling: float = 0.005
    rotation: float = 0.001
    m: float = 0.001
    sigma: float = 0.001
    w: float = 0.001
    seg_color: float = 0.0025
    seg_opacity: float = 0.025


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    renderer: str = "auto"          # auto | torch | gsplat | triton
    preset: str = "paper"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            sub = {"model": ModelConfig, "loss": LossConfig, "schedule": ScheduleConfig,
                   "densify": DensifyConfig, "optim": OptimConfig}.get(f.name)
            if sub is not None:
                known = {x.name for x in dataclasses.fields(sub)}
                v = sub(**{k: (tuple(x) if isinstance(x, list) else x) for k, x in v.items() if k in known})
            kw[f.name] = v
        return cls(**kw)


def paper_preset() -> TrainConfig:
    """The released code's defaults (method.md s1-s4)."""
    return TrainConfig(preset="paper")


def fast_preset() -> TrainConfig:
    """Few iterations, many frames per step, Gaussians started on the kept slices' pixels."""
    cfg = TrainConfig(preset="fast")
    cfg.model.init = "pixels"
    cfg.model.num_points = 0          # 0 = derived from the frame size (see model.init_from_pixels)
    cfg.model.init_opacity = 0.5
    cfg.model.max_gaussians = 300_000
    cfg.densify.max_growth = 0.15     # short schedules: grow gradually, never explode
    # pixel-initialised Gaussians on large frames are legitimately wider than 20 px: the released
    # screen-size rule pruned 96 % of them on a 512 x 512 CT; the world-size rule stays
    cfg.densify.max_screen_radius = 1e9
    cfg.schedule.iterations = 1500
    cfg.schedule.frames_per_step = 8
    cfg.schedule.window = False
    cfg.schedule.ibfr_from = 0.2
    # motion-compensated in-between targets: +0.9 dB over the linear-blend targets on the
    # 256 x 256 x 128 CT (Testing/Benchmarks/results/bench_ct_aorta_256_*flow*.json)
    cfg.loss.ibfr_target = "flow"
    cfg.loss.ibfr = 1.0
    cfg.schedule.sigma_until = 0.7
    cfg.schedule.densify_from = 0.05
    cfg.schedule.densify_until = 0.6
    cfg.schedule.densify_every = 0.05
    cfg.schedule.opacity_reset_every = 10.0   # no resets in a short schedule
    cfg.schedule.big_prune_from = 0.2
    cfg.schedule.early_stop_db = 0.02
    cfg.optim.xyz = 4e-4
    cfg.optim.xyz_final = 4e-6
    cfg.optim.color = 0.01
    cfg.optim.seg_color = 0.01
    # mask loss: L1 + soft Dice beat plain L1 and binary CE on ct_aorta (Dice 0.914 / 0.908 / 0.903
    # at k = 2; Testing/Benchmarks/results/study/labels/); small labels weigh as much as large ones
    cfg.loss.seg_dice = 1.0
    cfg.optim.m = 0.002
    cfg.optim.sigma = 0.005
    cfg.optim.w = 0.002
    return cfg


def quality_preset() -> TrainConfig:
    """The fast preset trained twice as long with 16 frames per step, without early stop.

    On the 256 x 256 x 128 CT (H100): 35.55 dB against 35.40 for fast, at 50 s of training.
    """
    cfg = fast_preset()
    cfg.preset = "quality"
    cfg.schedule.iterations = 3000
    cfg.schedule.early_stop_db = 0.0
    cfg.schedule.frames_per_step = 16
    return cfg


PRESETS = {"fast": fast_preset, "quality": quality_preset, "paper": paper_preset}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def apply_overrides(cfg: TrainConfig, items) -> TrainConfig:
    """Set options given as "section.name=value" (e.g. "loss.ibfr=1.0", "schedule.iterations=3000").

    Values are Python literals ("flow" may be given without quotes); each must have the type of
    the option it replaces. Unknown names or wrong types raise one InputError naming the item.
    """
    import ast
    if not items:
        return cfg
    sections = {f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        sect, dot, name = key.strip().partition(".")
        if not sep or not dot or sect not in sections:
            raise InputError(f"bad option {item!r}: write SECTION.NAME=VALUE with SECTION one of {sorted(sections)}")
        obj = getattr(cfg, sect)
        if name not in {f.name for f in dataclasses.fields(obj)}:
            known = ", ".join(f.name for f in dataclasses.fields(obj))
            raise InputError(f"unknown option {key!r}; {sect} has: {known}")
        old = getattr(obj, name)
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        if isinstance(old, bool) or isinstance(old, str):
            ok = type(value) is type(old)
        elif isinstance(old, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(old, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(old, tuple):
            ok = isinstance(value, (tuple, list)) and len(value) == len(old)
            value = tuple(float(v) for v in value) if ok else value
        else:
            ok = True
        if not ok:
            raise InputError(f"option {key!r} takes a {type(old).__name__}, got {text.strip()!r}")
        setattr(obj, name, value)
    return cfg
