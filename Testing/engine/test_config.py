"""config.py: presets and SECTION.NAME=VALUE overrides."""
from __future__ import annotations

import pytest

from MedGSLib.config import apply_overrides, preset
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
