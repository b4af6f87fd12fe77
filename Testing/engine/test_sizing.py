"""sizing.py: Gaussians, iterations and flow steps follow the kept frames, the device and the preset."""
from __future__ import annotations

import pytest

from MedGSLib import sizing

SHAPES = [(5, 32, 28), (9, 32, 28), (15, 101, 122), (30, 101, 122), (32, 128, 128), (64, 256, 256),
          (150, 512, 512)]


def test_cpu_gaussians_follow_the_kept_voxels():
    assert sizing.gaussians((9, 32, 28), "cpu") == (2016, 4032)        # 8064 voxels: 1/4 and 1/2
    assert sizing.gaussians((5, 32, 28), "cpu") == (1120, 2240)
    assert sizing.gaussians((15, 101, 122), "cpu") == (40_000, 40_000)  # absolute cap
    assert sizing.gaussians((2, 4, 4), "cpu") == (8, 16)


def test_gaussians_never_exceed_a_fraction_of_the_kept_voxels():
    for shape in SHAPES:
        v = shape[0] * shape[1] * shape[2]
        for kind, frac in (("cpu", sizing.CPU_MAX_PER_VOXEL), ("cuda", sizing.GPU_MAX_PER_VOXEL)):
            start, cap = sizing.gaussians(shape, kind)
            assert 0 < start <= cap <= v * frac, (shape, kind)


def test_gpu_start_is_the_fast_presets_rule():
    # model.init_pixels with num_points = 0: min(F H W // 6, 300 000)
    for shape in SHAPES:
        v = shape[0] * shape[1] * shape[2]
        assert sizing.gaussians(shape, "cuda")[0] == min(v // 6, 300_000)
    assert sizing.gaussians((64, 256, 256), "cuda") == (300_000, 300_000)


def test_cpu_iterations_fit_the_budget():
    assert sizing.cpu_train_budget_s((9, 32, 28)) == sizing.CPU_BUDGET_S[0] == 4.0
    assert sizing.cpu_train_budget_s((150, 512, 512)) == sizing.CPU_BUDGET_S[1] == 45.0
    assert sizing.cpu_train_budget_s((30, 101, 122)) == pytest.approx(18.483)    # 369 660 voxels / 20k
    assert sizing.iterations((9, 32, 28), "cpu") == 139                 # 4 s / 0.0287 s a step
    assert sizing.iterations((30, 101, 122), "cpu") == 46               # the README example: 18.5 s / 0.394 s
    assert sizing.iterations((15, 101, 122), "cpu") == 40               # its keep 2: 9.2 s / 0.394 s -> 23, the floor
    assert sizing.iterations((32, 128, 128), "cpu") == 50               # 64 x 128 x 128 at keep 2: 26.2 s / 0.524 s
    assert sizing.iterations((300, 32, 28), "cpu") == 300               # 13.4 s / 0.0287 s -> 468
    assert sizing.iterations((300, 32, 28), "cpu", "quality") == 600
    assert sizing.iterations((150, 512, 512), "cpu") == 40              # never below the self-check's floor
    its = [sizing.iterations(s, "cpu") for s in [(40, 32, 28), (120, 32, 28), (300, 32, 28)]]
    assert its == [139, 187, 300]
    assert its == sorted(its)                                           # more slices, more budget


def test_gpu_iterations_follow_frame_visits():
    # 6400 visits over the frames a step draws: 64 kept frames, 48 a step -> 134 steps
    assert sizing.iterations((64, 256, 256), "cuda", "fast", 48) == 134
    assert sizing.iterations((64, 256, 256), "cuda", "fast", 32) == 200
    assert sizing.iterations((13, 256, 256), "cuda", "fast", 48) == 493     # every frame each step: more steps
    assert sizing.iterations((5, 256, 256), "cuda", "fast", 48) == 1280
    assert sizing.iterations((4, 256, 256), "cuda", "fast", 48) == 1500     # 1600, held at the old schedule's
    assert sizing.iterations((600, 256, 256), "cuda", "fast", 128) == 100   # 50, held at the floor
    assert sizing.iterations((64, 256, 256), "cuda", "quality", 48) == 3 * 134
    assert sizing.iterations((64, 256, 256), "cuda", "fast", 48, frame_visits=12_800) == 267


def test_gpu_label_channels_get_the_image_frames_visits():
    # 7 labels, all trained each step: the image's schedule
    assert sizing.iterations((64, 256, 256), "cuda", "fast", 48, labels=7, channels=32) == 134
    # 188 labels, 32 a step: each channel drawn 32 / 188 of the steps -> 188 / 32 x 134 steps
    assert sizing.iterations((64, 256, 256), "cuda", "fast", 48, labels=188, channels=32) == 784
    assert sizing.iterations((64, 256, 256), "cuda", "fast", 48, labels=188, channels=0) == 134   # 0: all
    assert sizing.plan((64, 256, 256), "cuda", "fast", 48, labels=188, channels=32).iterations == 784


def test_label_visits_decide_the_label_heads():
    # the GPU schedule of the 256 CT with 7 labels: 134 steps of 48 of 64 frames
    assert sizing.label_visits(64, 134, 48, 7, 8) == pytest.approx(100.5)
    assert sizing.label_visits(64, 784, 48, 188, 32) == pytest.approx(784 * 48 / 64 * 32 / 188)   # 100.1
    # CPU: the 188-label brain (67 frames, 55 steps of 4, 8 channels a step) and a 13-slice MRI
    assert sizing.label_visits(67, 55, 4, 188, 8) == pytest.approx(55 * 4 / 67 * 8 / 188)          # 0.14
    assert sizing.label_visits(13, 40, 4, 1, 8) == pytest.approx(40 * 4 / 13)                      # 12.3
    assert sizing.label_visits(3, 10, 48, 1, 0) == 10.0         # a step cannot draw more frames than there are
    assert sizing.label_visits(13, 40, 4, 1, 8) < sizing.MIN_LABEL_VISITS <= sizing.label_visits(64, 784, 48, 188, 32)


def test_short_schedules_take_larger_steps():
    assert sizing.lr_scale(1500) == sizing.lr_scale(3000) == sizing.lr_scale(0) == 1.0
    assert sizing.lr_scale(375) == 2.0                                  # sqrt(1500 / 375)
    assert sizing.lr_scale(46) == pytest.approx(5.7104, abs=1e-4)
    assert sizing.lr_scale(40) == sizing.lr_scale(10) == sizing.LR_SCALE_MAX == 6.0


def test_flow_levels_and_steps():
    assert [sizing.flow_levels(s) for s in [(4, 8, 8), (4, 32, 28), (4, 101, 122), (4, 512, 512)]] == [1, 2, 4, 4]
    assert sizing.flow_steps((64, 256, 256), "cuda", 1500) == 60
    for shape in SHAPES:
        it = sizing.iterations(shape, "cpu")
        steps = sizing.flow_steps(shape, "cpu", it)
        assert sizing.FLOW_STEPS[0] <= steps <= sizing.FLOW_STEPS[1]
        # FLOW_SHARE of the modelled training time, unless held at a bound
        f, h, w = shape
        flow_s = steps * sizing.FLOW_S_PER_PIXEL * (f - 1) * h * w * 4 / 3
        train_s = it * sizing.CPU_STEP_S_PER_PIXEL * 2 * sizing.CPU_FRAMES_PER_STEP * h * w
        assert flow_s <= sizing.FLOW_SHARE * train_s * 1.001 or steps == sizing.FLOW_STEPS[0]


def test_cpu_threads():
    assert sizing.cpu_threads((5, 32, 28), 2, 0.0) == 1                 # 7168 px a step: one thread
    assert sizing.cpu_threads((30, 101, 122), 2, 0.0) == 1              # never every core
    assert sizing.cpu_threads((30, 101, 122), 4, 0.1) == 3
    assert sizing.cpu_threads((30, 101, 122), 4, 1.7) == 2              # one other core is busy
    assert sizing.cpu_threads((30, 101, 122), 16, 40.0) == 1


def test_bad_shape():
    with pytest.raises(ValueError):
        sizing.plan((0, 32, 28), "cpu")


def test_cpu_variant_is_sized_by_the_trainer():
    torch = pytest.importorskip("torch")
    from MedGSLib.api import default_config
    from MedGSLib.train import Trainer
    cfg = default_config("fast", "cpu")
    assert (cfg.model.num_points, cfg.model.max_gaussians, cfg.schedule.iterations) == (0, 0, 0)
    frames = torch.rand(5, 32, 28, generator=torch.Generator().manual_seed(0))
    tr = Trainer(frames, cfg)
    plan = sizing.plan((5, 32, 28), "cpu", "fast")
    assert tr.model.n == plan.num_points == 1120
    assert (tr.cfg.model.max_gaussians, tr.cfg.schedule.iterations) == (plan.max_gaussians, plan.iterations) == (2240, 139)
    # a sized schedule scales its learning rates (sqrt(1500 / 139)); the caller's config keeps its own
    scale = sizing.lr_scale(139)
    for k in sizing.LR_SCALED:
        assert getattr(tr.cfg.optim, k) == pytest.approx(getattr(cfg.optim, k) * scale, rel=1e-12)
    assert tr.cfg.optim.color == pytest.approx(0.01 * 3.28502, rel=1e-5) and cfg.optim.color == 0.01
    assert (tr.cfg.optim.m, tr.cfg.optim.sigma) == (cfg.optim.m, cfg.optim.sigma)
    # explicit values win
    cfg2 = default_config("fast", "cpu", iterations=7, max_gaussians=500)
    cfg2.model.num_points = 100
    c2 = Trainer(frames, cfg2).cfg
    assert (c2.model.num_points, c2.model.max_gaussians, c2.schedule.iterations) == (100, 500, 7)
    assert c2.optim.color == 0.01                                       # explicit iterations: rates as given


def test_sizing_fills_the_trainers_copy_not_the_callers_config():
    """One config reused for two volumes: each run is sized from its own frames."""
    import torch

    from MedGSLib.config import resolve_config
    from MedGSLib.train import Trainer
    cfg = resolve_config("fast", "cpu", ["loss.ibfr_target='linear'"])
    small = Trainer(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)), cfg)
    large = Trainer(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)), cfg)
    assert (cfg.model.num_points, cfg.model.max_gaussians, cfg.schedule.iterations) == (0, 0, 0)
    assert small.cfg.model.num_points < large.cfg.model.num_points
    assert small.model.n == small.cfg.model.num_points and large.model.n == large.cfg.model.num_points
