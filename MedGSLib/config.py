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
    # the label heads' in-between masks: "blend" (the masks carried by the fields and cross-faded,
    # flow.blend), "shape-cubic" (each label's signed distances carried by the fields, a Catmull-Rom
    # spline through four annotated frames: label_targets.py) or "shape" (the two neighbours, linear).
    # As interpolators alone shape-cubic wins 10 of 12 dev cells (results/bench_label_targets_cpu.md),
    # but trained on the CPU it lost all 3 cells tried; "blend" stays until a GPU A/B decides
    seg_ibfr_target: str = "blend"
    seg_channels: int = 8           # label channels rendered per step (the rasteriser's cost grows with it)
    # annotated frames the label heads render per step, and as many in-between ones (0: all the
    # step's annotated frames); fewer than the image's frames make the label pass cheaper
    seg_frames: int = 0
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
    frame_visits: int = 0           # a sized GPU schedule's visits of all frames (0: sizing's)
    window: bool = True             # True: consecutive window (paper); False: random frames
    early_stop_db: float = 0.0      # >0: stop when training PSNR gains less than this per check
    early_stop_from: float = 0.7    # ...but never before this fraction of the schedule
    # self-validation (selfcheck.py): hold out a few kept frames, stop and choose on them, fold
    # them back in; reports the estimated gain over linear interpolation
    self_check: bool = False
    # what the self-check delivers: "auto" (its choice) or a named candidate, e.g. "linear"
    # (selfcheck.DELIVER); what it measured is reported either way
    deliver: str = "auto"
    # the labels' counterpart (selfcheck.DELIVER_LABELS): "auto", "model", "model_0.5", "blend", "linear"
    deliver_labels: str = "auto"

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
class FlowConfig:
    """Motion fields of the in-between targets (flow.py; used when loss.ibfr_target == "flow")."""
    levels: int = 0             # pyramid levels (factor 2 each); 0 = as many as the frame allows, up to 4 (sizing.py)
    iterations: int = 0         # Adam steps per level; 0 = 60 on a GPU, a share of the run's budget on a CPU
    lr: float = 0.25            # Adam step in pixels of the current level
    smooth: float = 1.0         # weight of the squared first differences of the field
    eps: float = 1e-3           # Charbonnier epsilon (intensity units, frames in [0, 1])
    stride: int = 4             # the field is fitted on a grid this many pixels apart, then upsampled


_SECTIONS = {"model": ModelConfig, "loss": LossConfig, "schedule": ScheduleConfig,
             "densify": DensifyConfig, "optim": OptimConfig, "flow": FlowConfig}
# top-level options an override may set (device and preset are chosen by resolve_config's arguments)
_TOP_LEVEL = ("seed", "renderer")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    seed: int = 0
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    renderer: str = "auto"          # auto | torch | gsplat | triton
    # the preset it started from, "+cpu" when the CPU variant was applied, "+overrides" when
    # options were set over it (e.g. "fast+cpu+overrides"); `adjustments` says what and why
    preset: str = "paper"
    adjustments: list = field(default_factory=list)     # [{"what": ..., "why": ...}], for run.json

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The inverse of to_dict (checkpoints, run.json); an unknown section or key, or a value
        of the wrong type, raises one InputError naming it."""
        if not isinstance(d, dict):
            raise InputError(f"a training config must be an object, got {type(d).__name__}")
        cfg = cls()
        known = set(_SECTIONS) | set(_TOP_LEVEL) | {"device", "preset", "adjustments"}
        for key, value in d.items():
            if key not in known:
                raise InputError(f"unknown config section {key!r}; known: {sorted(known)}")
            if key in _SECTIONS:
                if not isinstance(value, dict):
                    raise InputError(f"config section {key!r} must be an object, got {value!r}")
                for name, v in value.items():
                    _set_option(cfg, key, name, v)
            elif key == "adjustments":
                cfg.adjustments = [dict(a) for a in value]
            else:
                setattr(cfg, key, _typed(key, getattr(cfg, key), value))
        return cfg


def _set_option(cfg: TrainConfig, section: str, name: str, value):
    """cfg.<section>.<name> = value (section "" for top-level options), type-checked; returns the old value."""
    if section == "":
        if name not in _TOP_LEVEL:
            raise InputError(f"unknown option {name!r}; top-level options: {', '.join(_TOP_LEVEL)}")
        obj = cfg
    elif section in _SECTIONS:
        obj = getattr(cfg, section)
    else:
        raise InputError(f"unknown config section {section!r}; known: {sorted(_SECTIONS)}")
    key = f"{section}.{name}" if section else name
    if section and name not in {f.name for f in dataclasses.fields(obj)}:
        known = ", ".join(f.name for f in dataclasses.fields(obj))
        raise InputError(f"unknown option {key!r}; {section} has: {known}")
    old = getattr(obj, name)
    setattr(obj, name, _typed(key, old, value))
    return old


def _typed(key: str, old, value):
    """`value` in the type of the option it replaces (ints widen to floats, lists to tuples)."""
    if isinstance(old, bool) or isinstance(old, str):
        ok = type(value) is type(old)
    elif isinstance(old, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(old, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(old, tuple):
        ok = isinstance(value, (tuple, list)) and len(value) == len(old) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        value = tuple(float(v) for v in value) if ok else value
    else:
        ok = True
    if not ok:
        raise InputError(f"option {key!r} takes a {type(old).__name__}, got {value!r}")
    return value


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
    # few, large steps, as many as give each kept frame its visits (0 = sizing.iterations). On the
    # 256 x 256 x 128 CT (H200, Testing/Benchmarks/results/sweep_steps_h200.json) 1500 steps of 8
    # frames: 36.06 dB in 22 s of training; 400 of 32: 36.07 in 7.5 s; 270 of 48: 36.07 in 5.7 s;
    # since then 134 of 48 (sizing.GPU_FRAME_VISITS): 36.19 in 2.8 s (results/study_h200_visits6400/)
    cfg.schedule.iterations = 0
    cfg.schedule.frames_per_step = 48
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
    cfg.schedule.self_check = True
    cfg.optim.xyz = 4e-4
    cfg.optim.xyz_final = 4e-6
    cfg.optim.color = 0.01
    cfg.optim.seg_color = 0.01
    # mask loss: L1 + soft Dice beat plain L1 and binary CE on ct_aorta (Dice 0.914 / 0.908 / 0.903
    # at k = 2; Testing/Benchmarks/results/study/labels/); small labels weigh as much as large ones
    cfg.loss.seg_dice = 1.0
    # with many labels (188 on the brain case) each channel must still be trained often: with 24
    # channels (400 steps of 32 frames) brain Dice rose 0.818 -> 0.834 (k = 2) over 8 channels
    # (1500 steps of 8); the steps are fewer again, the channels more
    cfg.loss.seg_channels = 32
    cfg.optim.m = 0.002
    cfg.optim.sigma = 0.005
    cfg.optim.w = 0.002
    return cfg


def quality_preset() -> TrainConfig:
    """The fast preset trained three times as long (sizing.iterations), without early stop.

    With the schedule of that time (1500 steps of 8 frames; here 3000 of 16) it gave 35.55 dB against
    35.40 for fast on the 256 x 256 x 128 CT (H100), at 50 s of training.
    """
    cfg = fast_preset()
    cfg.preset = "quality"
    cfg.schedule.early_stop_db = 0.0     # 3x the steps: sizing.iterations reads the preset's name
    return cfg


PRESETS = {"fast": fast_preset, "quality": quality_preset, "paper": paper_preset}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def parse_override(item: str) -> tuple[str, str, object]:
    """"section.name=value" -> (section, name, value); values are Python literals ("flow" may be
    given without quotes). Top-level options are written without a section ("seed=3")."""
    import ast
    key, sep, text = str(item).partition("=")
    sect, dot, name = key.strip().rpartition(".")
    if not sep or (not dot and name not in _TOP_LEVEL) or (dot and sect not in _SECTIONS):
        raise InputError(f"bad option {item!r}: write SECTION.NAME=VALUE with SECTION one of {sorted(_SECTIONS)}")
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        value = text.strip()
    return sect, name, value


def apply_overrides(cfg: TrainConfig, items, source: str = "--set") -> TrainConfig:
    """Set options over `cfg` and record each in cfg.adjustments (why = `source`).

    `items`: "section.name=value" strings (`--set`), or a nested {section: {name: value}} mapping
    (job.json's `config`). Unknown names or wrong types raise one InputError naming the item.
    """
    if not items:
        return cfg
    if isinstance(items, dict):
        triples = []
        for section, values in items.items():
            if section in _TOP_LEVEL:
                triples.append(("", section, values))
            elif section not in _SECTIONS:
                raise InputError(f"unknown config section {section!r}; known: {sorted(_SECTIONS)}")
            elif not isinstance(values, dict):
                raise InputError(f"config section {section!r} must be an object, got {values!r}")
            else:
                triples += [(section, name, v) for name, v in values.items()]
    elif isinstance(items, str):
        triples = [parse_override(items)]
    else:
        triples = [parse_override(item) for item in items]
    return _apply(cfg, triples, source)


def _apply(cfg: TrainConfig, triples, source: str) -> TrainConfig:
    for section, name, value in triples:
        old = _set_option(cfg, section, name, value)
        new = getattr(getattr(cfg, section) if section else cfg, name)
        key = f"{section}.{name}" if section else name
        cfg.adjustments.append({"what": f"{key} = {new!r} (was {old!r})", "why": source})
    if triples and not cfg.preset.endswith("+overrides"):
        cfg.preset += "+overrides"
    return cfg


def cpu_variant(cfg: TrainConfig) -> list[dict]:
    """The CPU variant of the short presets; returns what it changed and why.

    The pure-torch renderer on a CPU does ~1e7 pair evaluations/s: a lighter schedule so that a
    small case finishes in minutes (quality is lower than on a GPU; see README Results).
    """
    from .sizing import CPU_FRAMES_PER_STEP
    why = ("CPU variant of the preset: the pure-torch renderer on a CPU needs a lighter schedule; "
           "0 = sized from the kept frames and a time budget by sizing.py")
    changes = {"schedule.iterations": 0, "schedule.frames_per_step": CPU_FRAMES_PER_STEP,
               "model.num_points": 0, "model.max_gaussians": 0, "loss.seg_channels": 8}
    out = []
    for key, value in changes.items():
        section, name = key.split(".")
        old = _set_option(cfg, section, name, value)
        out.append({"what": f"{key} = {value!r} (was {old!r})", "why": why})
    return out


# options the entry points expose as plain arguments (--iterations, --seed, ...)
SHORTCUTS = {"iterations": ("schedule", "iterations"), "seed": ("", "seed"),
             "max_gaussians": ("model", "max_gaussians"), "poly_degree": ("model", "poly_degree"),
             "renderer": ("", "renderer")}


def resolve_config(preset_name: str = "fast", device: str = "auto", overrides=None, *,
                   cuda_available: bool | None = None, source: str = "--set", **options) -> TrainConfig:
    """The one way to build a training config, for every entry point (API, CLI, worker, eval).

    preset -> its CPU variant when `device` resolves to the CPU (fast and quality only) ->
    `options` (iterations, seed, max_gaussians, poly_degree, renderer; None = not given) ->
    `overrides` ("section.name=value" strings or a {section: {name: value}} mapping). Later
    steps win, so `iterations=` keeps the CPU variant's other settings. Every change is recorded
    in `cfg.adjustments` ({"what", "why"}, written to run.json); `cfg.preset` says it happened.
    """
    cfg = preset(preset_name)
    cfg.device = str(device or "auto")
    if preset_name in ("fast", "quality") and _resolves_to_cpu(cfg.device, cuda_available):
        cfg.adjustments += cpu_variant(cfg)
        cfg.preset += "+cpu"
    unknown = sorted(set(options) - set(SHORTCUTS))
    if unknown:
        raise InputError(f"unknown option {unknown[0]!r}; known: {', '.join(SHORTCUTS)}")
    _apply(cfg, [SHORTCUTS[k] + (v,) for k, v in options.items() if v is not None], source="entry-point option (--iterations, --seed, ...)")
    apply_overrides(cfg, overrides, source=source)
    return cfg


def _resolves_to_cpu(device: str, cuda_available: bool | None = None) -> bool:
    if device in ("", "auto"):
        if cuda_available is None:
            try:
                import torch
            except ImportError:     # no torch: training will say so; the config is the CPU one
                return True
            cuda_available = torch.cuda.is_available()
        return not cuda_available
    return device == "cpu"
