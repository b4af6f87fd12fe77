"""How much model and how much work a run gets for its data, device and preset (one owner).

Pure functions of the kept frames' shape (F, H, W), the device kind ("cpu" or "cuda") and the
preset name; they return plain numbers and never read a config, so any caller can use them.

- Gaussians follow the data: a GPU run starts with one Gaussian per 6 kept voxels (as the fast
  preset always did); a CPU run with one per 4. Neither may ever grow past half the kept
  voxels, nor past the absolute caps below (300k on a GPU, 40k on a CPU).
- CPU iterations follow a time budget: the pure-torch renderer costs about
  CPU_STEP_S_PER_PIXEL seconds per rendered pixel and step (measured after its rewrite on
  this shared 2-core machine), the budget grows with the kept voxels, and the count is held
  between CPU_ITERATIONS (the self-check needs the lower bound's validation rounds).
- GPU iterations follow frame visits (GPU_FRAME_VISITS over the frames a step draws), and a
  run whose label channels are drawn a few a step gets as many more steps as gives each channel
  the image's visits.
- CPU threads: one, unless a step renders enough pixels and the machine has idle cores; never
  every core.
- The motion fields (flow.py) get a fixed share of that budget: their steps per level are
  cut so that fitting them costs about FLOW_SHARE of the training time.
- A schedule sized shorter than the preset's own takes larger steps (`lr_scale`): Adam moves a
  parameter by about its learning rate a step, and a 50-step CPU run must travel as far from the
  pixel initialisation (19 dB on the kept slices of the example) as a long run does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

GPU_START_PER_VOXEL = 1 / 6
GPU_MAX_PER_VOXEL = 1 / 2
GPU_MAX_GAUSSIANS = 300_000
# 9 x 32 x 28 CT at keep 2 (4480 kept voxels, 150 steps): 1/12 -> 23.8 dB, 1/4 -> 25.5 dB held
# out (linear 25.3); on larger frames the 40k cap binds first
CPU_START_PER_VOXEL = 1 / 4
CPU_MAX_PER_VOXEL = 1 / 2
CPU_MAX_GAUSSIANS = 40_000

# one rendered frame-pixel, forward + backward + the step's rest: 0.35 s for 8 frames of 101 x 122
# (example CT, 40k Gaussians, 1 thread, idle machine), plus ~10 % for the loss and the optimiser
CPU_STEP_S_PER_PIXEL = 4e-6
# the budget grows with the kept voxels: 1 s of training per 20k. The README example (30 x 101 x
# 122, every slice kept, factor 2) must finish in 30 s end to end, of which ~7 s are start-up,
# loading, the motion fields, rendering and writing: 18.5 s of training leaves room for a loaded
# machine. Bounds in seconds; past the upper one, larger volumes get dearer steps, not more time
CPU_BUDGET_S_PER_VOXEL = 1 / 20_000
CPU_BUDGET_S = (4.0, 45.0)
# the self-check (selfcheck.py) needs its validation rounds: below 40 steps it has none
CPU_ITERATIONS = (40, 300)
# lr_scale: sqrt(LR_REFERENCE_ITERATIONS / iterations), at most LR_SCALE_MAX; on the example CT at
# 50 steps the model's held-out gain over linear went -3.0 dB -> -1.5 (x3) / -1.4 (x6); ct_aorta
# 64 x 128 x 128 at 60 steps -0.8 -> -0.1 dB (x3). Only these rates: scaling the temporal ones
# (m, sigma, w) and rotation as well measured no better (example, 45 steps: -1.43 dB vs -1.33)
LR_REFERENCE_ITERATIONS = 1500    # the step count the fast preset's learning rates were chosen at
LR_SCALE_MAX = 6.0
LR_SCALED = ("xyz", "xyz_final", "color", "opacity", "scaling")
CPU_FRAMES_PER_STEP = 4
# below this many rendered pixels per step a second thread costs more than it gives, and on a
# loaded machine OpenMP threads waiting for a busy core make every op ~30x slower (measured:
# 30 steps on 5 x 32 x 28 frames, 40 s on 2 threads at load 8, 1.3 s on 1)
CPU_THREAD_PIXELS = 50_000

# GPU steps follow frame visits: a run takes as few, large steps as give each kept frame its
# visits; a volume of few slices then gets more, cheaper steps (a 7-slice MRI 915, not 134),
# bounded by the old schedule's 1500. 6400 visits (100 a frame on the 256 x 256 x 128 CT) met the
# 12 800 visits' held-out PSNR over the study's 12 cells (H200: mean +0.56 dB over the best
# classical method against +0.57, results/study_h200_visits6400/) in half the steps.
# Label channels are drawn `channels` of `labels` a step: each one gets as many frame visits as
# the image does (GPU_FRAME_VISITS), so a run of many labels takes more steps. At half its visits
# the 188-label brain lost 0.02 Dice in every cell, the 7-label CT nothing.
GPU_FRAME_VISITS = 6_400
# the floor keeps the self-check's validation rounds (selfcheck.py: a check every 10 steps from
# 30 % of the schedule, the fold-in at 80 %): 100 steps leave it five
GPU_ITERATIONS = (100, 1500)

# The label heads learn each label channel from its frame visits: steps x frames a step / frames,
# times channels / labels where a step trains a few of many. The GPU schedule gives every dev case
# 81 or more; a CPU run 0.1-12 (the 188-label brain 0.14). On the CPU study the labels the heads
# are trained toward, MedGS's in-between labels (label_targets.cubic_between), delivered without
# heads, beat shape-based cubic interpolation in 10 of 12 cells (mean Dice 0.769), the heads with
# the self-check's choice in 7 (0.751), in about half the training time
# (results/study_cpu_labels_blend/, results/study_cpu_label_choice/). A sized schedule that gives
# fewer visits on the CPU delivers those labels without heads (train.Trainer; a GPU schedule keeps
# them: its label channels get the image's visits, and fewer than 25 happen only past 256 kept
# frames, where the two were never compared).
MIN_LABEL_VISITS = 25

FLOW_S_PER_PIXEL = 2.5e-7         # one Adam step of one pair at the finest level (coarser: +1/3)
FLOW_SHARE = 0.1
FLOW_STEPS = (8, 60)
FLOW_MIN_SIDE = 16                # flow.py's pyramid stops below this side


@dataclass(frozen=True)
class Plan:
    num_points: int
    max_gaussians: int
    iterations: int
    frames_per_step: int
    flow_levels: int
    flow_steps: int


def _voxels(shape) -> int:
    f, h, w = (int(x) for x in shape)
    if min(f, h, w) < 1:
        raise ValueError(f"kept frames must be non-empty, got shape {tuple(shape)}")
    return f * h * w


def gaussians(shape, device: str, preset: str = "fast") -> tuple[int, int]:
    """(initial Gaussians, most Gaussians) for kept frames of `shape` on `device`."""
    v = _voxels(shape)
    if device == "cpu":
        cap = max(1, min(CPU_MAX_GAUSSIANS, int(v * CPU_MAX_PER_VOXEL)))
        return min(cap, max(1, int(v * CPU_START_PER_VOXEL))), cap
    cap = max(1, min(GPU_MAX_GAUSSIANS, int(v * GPU_MAX_PER_VOXEL)))
    return min(cap, max(1, int(v * GPU_START_PER_VOXEL))), cap


def cpu_train_budget_s(shape) -> float:
    """Seconds of CPU training a run of this size is given."""
    lo, hi = CPU_BUDGET_S
    return min(hi, max(lo, _voxels(shape) * CPU_BUDGET_S_PER_VOXEL))


def iterations(shape, device: str, preset: str = "fast", frames_per_step: int = CPU_FRAMES_PER_STEP,
               frame_visits: int = 0, labels: int = 0, channels: int = 0) -> int:
    """CPU iterations that fit the budget (each step renders its frames and as many in-between
    frames); on a GPU, `frame_visits` (0: GPU_FRAME_VISITS) over the frames a step draws, times
    `labels` / `channels` when a step trains `channels` of `labels` label channels (3x for the
    quality preset)."""
    f, h, w = (int(x) for x in shape)
    if device != "cpu":
        lo, hi = GPU_ITERATIONS
        share = labels / channels if 0 < channels < labels else 1.0
        n = math.ceil((frame_visits or GPU_FRAME_VISITS) * share / max(1, min(int(frames_per_step), f)))
        return (3 if preset == "quality" else 1) * max(lo, min(hi, n))
    step_s = CPU_STEP_S_PER_PIXEL * 2 * frames_per_step * h * w
    n = int(cpu_train_budget_s(shape) / step_s)
    if preset == "quality":
        n *= 2
    lo, hi = CPU_ITERATIONS
    return max(lo, min(hi * (2 if preset == "quality" else 1), n))


def label_visits(frames: int, iterations: int, frames_per_step: int, labels: int, channels: int) -> float:
    """Visits of each frame by each label channel over a schedule (see MIN_LABEL_VISITS)."""
    share = channels / labels if 0 < channels < labels else 1.0
    return iterations * min(int(frames_per_step), int(frames)) / max(1, int(frames)) * share


def lr_scale(iterations: int) -> float:
    """Factor on the LR_SCALED learning rates for a schedule of `iterations` sized by `iterations()`."""
    if iterations <= 0:
        return 1.0
    return min(LR_SCALE_MAX, max(1.0, math.sqrt(LR_REFERENCE_ITERATIONS / iterations)))


def cpu_threads(shape, cores: int, load: float, frames_per_step: int = CPU_FRAMES_PER_STEP) -> int:
    """Torch threads for CPU training: `cores` minus what `load` (1-minute load average, other
    processes) keeps busy, never every core, and 1 for steps too small to share.

    Never every core: an OpenMP thread whose core is taken stalls every op of the step. On this
    2-core machine, one step of the example (8 frames of 101 x 122, 40k Gaussians) took 0.34 s on
    2 threads idle and 0.38 s on 1, but 0.86 s on 2 threads with one other busy process."""
    _, h, w = (int(x) for x in shape)
    if 2 * frames_per_step * h * w < CPU_THREAD_PIXELS:
        return 1
    return max(1, min(int(cores) - 1, int(cores - load + 0.5)))


def flow_levels(shape) -> int:
    """Pyramid levels that flow.py can use on frames of this size (at most 4)."""
    _, h, w = (int(x) for x in shape)
    side, n = min(h, w), 1
    while n < 4 and side >= FLOW_MIN_SIDE:
        side = -(-side // 2)
        n += 1
    return n


def flow_steps(shape, device: str, train_iterations: int, frames_per_step: int = CPU_FRAMES_PER_STEP) -> int:
    """Adam steps per pyramid level: 60 on a GPU; on a CPU, FLOW_SHARE of the training time."""
    if device != "cpu":
        return FLOW_STEPS[1]
    f, h, w = (int(x) for x in shape)
    train_s = train_iterations * CPU_STEP_S_PER_PIXEL * 2 * frames_per_step * h * w
    per_step_s = FLOW_S_PER_PIXEL * max(1, f - 1) * h * w * 4 / 3
    lo, hi = FLOW_STEPS
    return max(lo, min(hi, int(FLOW_SHARE * train_s / per_step_s)))


def plan(shape, device: str, preset: str = "fast", frames_per_step: int = CPU_FRAMES_PER_STEP,
         frame_visits: int = 0, labels: int = 0, channels: int = 0) -> Plan:
    """Everything above for one run (`frames_per_step`: the run's own; the CPU variant sets 4;
    `labels`, `channels`: the label channels and how many a step trains, 0 without labels)."""
    start, cap = gaussians(shape, device, preset)
    it = iterations(shape, device, preset, frames_per_step, frame_visits, labels, channels)
    steps = flow_steps(shape, device, it, frames_per_step)
    return Plan(start, cap, it, frames_per_step, flow_levels(shape), steps)
