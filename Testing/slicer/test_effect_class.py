"""The Segment Editor effect class (SegmentEditorMedGSLib/SegmentEditorEffect.py) driven without
the Slicer application: stand-ins for its Qt widgets, the scripted-effect host and the Segment
Editor node; real MRML nodes and the fake worker behind them. The options panel itself
(setupOptionsFrame) needs Qt and is not built here.
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest
import slicer

from conftest import SPARSE_LABELS, painted_segmentation
from MedGSLogicLib import export, process

FAKE = Path(__file__).with_name("fake_worker.py")


class Widget(types.SimpleNamespace):
    def setRange(self, *a):
        pass

    def setValue(self, v):
        self.value = v

    def setVisible(self, v):
        self.visible = v


class Combo:
    def __init__(self, value):
        self.currentData = value


class Timer:
    def __init__(self):
        self.active = False

    def setInterval(self, ms):
        pass

    def connect(self, signal, slot):
        self.slot = slot

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


@pytest.fixture
def effect_module(monkeypatch):
    qt = types.ModuleType("qt")
    qt.QTimer = Timer
    monkeypatch.setitem(sys.modules, "qt", qt)
    base = types.ModuleType("SegmentEditorEffects")

    class AbstractScriptedSegmentEditorEffect:
        def __init__(self, scriptedEffect):
            self.scriptedEffect = scriptedEffect

    base.AbstractScriptedSegmentEditorEffect = AbstractScriptedSegmentEditorEffect
    monkeypatch.setitem(sys.modules, "SegmentEditorEffects", base)
    messages = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: messages.append(text))
    monkeypatch.setattr(slicer.util, "showStatusMessage", lambda text, *a: messages.append(text), raising=False)
    sys.modules.pop("SegmentEditorMedGSLib.SegmentEditorEffect", None)
    module = importlib.import_module("SegmentEditorMedGSLib.SegmentEditorEffect")
    module.messages = messages
    return module


def make_effect(module, seg, volume, mode, tmp_path):
    undo = []
    editor = types.SimpleNamespace(GetSegmentationNode=lambda: seg, GetSourceVolumeNode=lambda: volume)
    host = types.SimpleNamespace(parameterSetNode=lambda: editor, saveStateForUndo=lambda: undo.append(1))
    effect = module.SegmentEditorEffect(host)
    assert host.name == "MedGS fill between slices" and host.requireSegments and not host.perSegment

    def runner(args, env, cwd):
        return process.subprocess_runner([sys.executable, str(FAKE), mode, args[-1]], env, cwd)

    effect.logic.runner, effect.logic.job_root = runner, tmp_path
    for name in ("slicesLabel", "progressBar", "statusLabel", "initializeButton", "applyButton", "cancelButton"):
        setattr(effect, name, Widget(text="", enabled=False))
    effect.presetCombo, effect.deviceCombo = Combo("fast"), Combo("cpu")
    return effect, undo


def run_to_end(effect):
    assert effect.timer.active
    while effect.timer.active:
        effect.logic.job.worker.wait(0.05)
        effect.onPoll()


def test_effect_initialize_preview_apply(mrml, sparse_crop, effect_module, tmp_path, vtk_log, monkeypatch):
    img, lab, a = sparse_crop
    volume = mrml.add_volume(img, a, "abdomen")
    seg, sparse_lab = painted_segmentation(mrml, lab, a, SPARSE_LABELS)
    from MedGSLogicLib import dependencies

    monkeypatch.setattr(dependencies, "ensure_dependencies", lambda confirm, want_gpu: None)
    effect, undo = make_effect(effect_module, seg, volume, "success", tmp_path)
    effect.activate()
    assert "kidney_right: painted on slices 0, 4, 8, 12, 16" in effect.slicesLabel.text
    assert effect.initializeButton.enabled and not effect.applyButton.enabled
    effect.onInitialize()
    run_to_end(effect)
    assert effect.statusLabel.text.startswith("Preview shown"), effect_module.messages
    assert effect.logic.preview is not None and effect.applyButton.enabled
    effect.onApply()
    assert undo == [1] and effect.logic.preview is None
    # the fake worker returns the painted labels unchanged: the segments are as they were
    s = seg.GetSegmentation()
    ids = [s.GetNthSegmentID(i) for i in range(s.GetNumberOfSegments())]
    arrays = export.segment_arrays(mrml.scene, seg, volume, ids)
    for value, sid in zip((2, 3, 52), ids):
        assert (arrays[sid] == (sparse_lab == value)).all()
    assert vtk_log.errors() == []


def test_effect_failure_shows_a_dialog_and_changes_nothing(mrml, sparse_crop, effect_module, tmp_path, monkeypatch):
    img, lab, a = sparse_crop
    volume = mrml.add_volume(img, a, "abdomen")
    seg, _ = painted_segmentation(mrml, lab, a, SPARSE_LABELS)
    from MedGSLogicLib import dependencies

    def broken(confirm, want_gpu):
        raise OSError("[WinError 126] error loading torch_cpu.dll")  # a torch DLL that does not load

    monkeypatch.setattr(dependencies, "ensure_dependencies", broken)
    effect, undo = make_effect(effect_module, seg, volume, "oom", tmp_path)
    nodes = mrml.node_ids()
    effect.onInitialize()
    assert effect_module.messages == ["MedGS could not start: [WinError 126] error loading torch_cpu.dll"]
    monkeypatch.setattr(dependencies, "ensure_dependencies", lambda confirm, want_gpu: None)
    effect.onInitialize()
    run_to_end(effect)
    assert effect_module.messages[-1] == "MedGS: Failed."
    assert any(m.startswith("MedGS ran out of memory") for m in effect_module.messages)
    assert mrml.node_ids() == nodes and undo == []
