"""config.py: presets, the one resolve_config path, strict overrides, the recorded adjustments."""
from __future__ import annotations

import pytest

from MedGSLib import worker
from MedGSLib.config import TrainConfig, apply_overrides, preset, resolve_config
from MedGSLib.errors import InputError


def test_overrides_set_typed_values():
    cfg = apply_overrides(preset("fast"), ["loss.ibfr=2", "schedule.iterations=40",
                                           "loss.ibfr_target=linear", "loss.ibfr_alpha=(0.1, 0.9)"])
    assert cfg.loss.ibfr == 2.0 and isinstance(cfg.loss.ibfr, float)
    assert cfg.schedule.iterations == 40
    assert cfg.loss.ibfr_target == "linear"
    assert cfg.loss.ibfr_alpha == (0.1, 0.9)


@pytest.mark.parametrize("item, message", [
    ("loss.nope=1", "unknown option 'loss.nope'"),
    ("nosection.ibfr=1", "SECTION.NAME=VALUE"),
    ("loss.ibfr", "SECTION.NAME=VALUE"),
    ("schedule.iterations=1.5", "takes a int"),
    ("schedule.window=1", "takes a bool"),
])
def test_bad_overrides_name_the_problem(item, message):
    with pytest.raises(InputError, match=message):
        apply_overrides(preset("fast"), [item])


def test_presets_use_flow_targets_and_paper_keeps_the_released_defaults():
    assert preset("fast").loss.ibfr_target == "flow" and preset("fast").loss.seg_dice == 1.0
    assert preset("quality").loss.ibfr_target == "flow"
    paper = preset("paper")
    assert paper.loss.ibfr_target == "linear" and paper.loss.seg_dice == 0.0
    assert paper.schedule.iterations == 30_000


@pytest.mark.parametrize("bad, message", [
    ({"loss": {"ibrf": 7.0}}, "unknown option 'loss.ibrf'"),
    ({"losses": {"ibfr": 7.0}}, "unknown config section 'losses'"),
    ({"loss": {"ibfr": "high"}}, "'loss.ibfr' takes a float"),
    ({"loss": 1.0}, "section 'loss' must be an object"),
])
def test_from_dict_and_dict_overrides_are_strict(bad, message):
    with pytest.raises(InputError, match=message):
        TrainConfig.from_dict(bad)
    with pytest.raises(InputError, match=message):
        resolve_config("fast", "cpu", bad)


def test_to_dict_round_trips_with_flow_and_adjustments():
    cfg = resolve_config("quality", "cpu", ["flow.levels=2"], iterations=7, seed=5)
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.flow.levels == 2 and again.adjustments == cfg.adjustments


def test_cpu_variant_survives_iterations_and_is_recorded():
    cfg = resolve_config("fast", "cpu", iterations=12)
    assert (cfg.schedule.iterations, cfg.schedule.frames_per_step, cfg.model.num_points,
            cfg.model.max_gaussians) == (12, 4, 0, 0)   # 0 = sized from the data by sizing.py
    assert cfg.preset == "fast+cpu+overrides"
    assert [a["what"] for a in cfg.adjustments] == [
        "schedule.iterations = 0 (was 0)", "schedule.frames_per_step = 4 (was 48)",
        "model.num_points = 0 (was 0)", "model.max_gaussians = 0 (was 300000)", "loss.seg_channels = 8 (was 32)",
        "schedule.iterations = 12 (was 0)"]
    assert all(a["why"].startswith("CPU variant") for a in cfg.adjustments[:5])
    # "auto" follows the machine; the paper preset has no CPU variant
    assert resolve_config("fast", "auto", cuda_available=True).schedule.iterations == 0   # sized by sizing.py
    assert resolve_config("fast", "auto", cuda_available=False).schedule.iterations == 0   # sized by sizing.py
    paper = resolve_config("paper", "cpu")
    assert paper.preset == "paper" and paper.adjustments == [] and paper.schedule.iterations == 30_000


def test_flow_options_reach_the_config_from_set_and_dicts():
    assert resolve_config("fast", "cpu", ["flow.iterations=5"]).flow.iterations == 5
    assert resolve_config("fast", "cpu", {"flow": {"stride": 8}}).flow.stride == 8
    assert resolve_config("fast", "cpu", ["seed=9"]).seed == 9


def test_every_entry_point_builds_the_same_config():
    """CLI (--iterations, --set), worker (job.json) and API (default_config) agree field for field."""
    from MedGSLib.api import default_config
    from MedGSLib.cli import build_parser

    args = build_parser().parse_args(["run", "in.nii", "-o", "out", "--factor", "2", "--device", "cpu",
                                      "--iterations", "12", "--seed", "4", "--set", "loss.ibfr=0.0"])
    cli = resolve_config(args.preset, args.device, args.overrides, seed=args.seed, iterations=args.iterations,
                         max_gaussians=args.max_gaussians, renderer=args.renderer)
    job = worker.build_config({"options": {"preset": "fast", "device": "cpu", "seed": 4}, "iterations": 12,
                               "config": {"loss": {"ibfr": 0.0}}})
    api = apply_overrides(default_config("fast", "cpu", iterations=12, seed=4), ["loss.ibfr=0.0"])

    def fields(c):
        d = c.to_dict()
        d.pop("adjustments")
        return d
    assert fields(cli) == fields(job) == fields(api)
    assert cli.schedule.frames_per_step == 4 and cli.loss.ibfr == 0.0 and cli.preset == "fast+cpu+overrides"


def test_unknown_entry_point_option():
    with pytest.raises(InputError, match="unknown option 'iters'"):
        resolve_config("fast", "cpu", iters=3)
    with pytest.raises(InputError, match="unknown preset"):
        resolve_config("slow", "cpu")
