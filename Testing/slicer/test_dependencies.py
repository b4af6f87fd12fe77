"""Dependency installation: consent first, torch only through the PyTorch extension, never
numpy/scipy/SimpleITK/vtk, gsplat optional."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from MedGSLogicLib import dependencies

REQUIREMENTS_TXT = Path(__file__).resolve().parents[2] / "MedGS" / "Resources" / "requirements.txt"


class FakeTorchLogic:
    def __init__(self, installed=False):
        self.installed = installed
        self.calls = []

    def torchInstalled(self):
        return self.installed

    def installTorch(self, **kwargs):
        self.calls.append(kwargs)
        return object()


def pretend_missing(monkeypatch, missing: set[str]):
    real = dependencies._has_module
    monkeypatch.setattr(dependencies, "_has_module", lambda name: name not in missing and real(name))


def test_nothing_missing_asks_nothing(monkeypatch):
    pretend_missing(monkeypatch, set())
    asked = []
    report = dependencies.ensure_dependencies(asked.append, want_gpu=False, pip_install=pytest.fail)
    assert asked == [] and report.installed == []


def test_refusal_installs_nothing(monkeypatch):
    pretend_missing(monkeypatch, {"torch", "skimage"})
    torch_logic = FakeTorchLogic()
    installs = []
    with pytest.raises(dependencies.DependencyError, match="installation declined"):
        dependencies.ensure_dependencies(lambda text: False, want_gpu=False, pip_install=installs.append,
                                         torch_logic_factory=lambda: torch_logic)
    assert installs == [] and torch_logic.calls == []


def test_consent_installs_torch_via_extension_and_the_rest_via_pip(monkeypatch):
    missing = {"torch", "skimage", "psutil", "gsplat"}
    pretend_missing(monkeypatch, missing)
    torch_logic = FakeTorchLogic()
    installs, questions = [], []

    def pip_install(reqs):
        installs.append(list(reqs))
        if any(r.startswith("gsplat") for r in reqs):
            raise RuntimeError("no wheel for this Python, and no CUDA toolkit to build it")
        missing.difference_update({"skimage", "psutil"})

    report = dependencies.ensure_dependencies(lambda text: questions.append(text) or True, want_gpu=True,
                                              cuda_check=lambda: True,
                                              pip_install=pip_install, torch_logic_factory=lambda: torch_logic)
    assert len(questions) == 1
    assert "PyTorch (through the PyTorch extension)" in questions[0] and "scikit-image>=0.22" in questions[0]
    assert torch_logic.calls == [{"askConfirmation": False, "torchVersionRequirement": ">=2.1"}]
    assert installs == [["scikit-image>=0.22", "psutil>=5.9"], ["gsplat==1.5.3"]]
    assert report.missing_optional == ["gsplat==1.5.3"]  # the engine falls back to its torch renderer
    for reqs in installs:
        for r in reqs:
            assert not r.lower().startswith(("numpy", "scipy", "simpleitk", "vtk", "torch"))


def test_missing_pytorch_extension_is_a_clear_error_naming_the_extension(monkeypatch):
    pretend_missing(monkeypatch, {"torch"})
    # The real factory: PyTorchUtils (the extension's module) cannot be imported outside Slicer.
    with pytest.raises(dependencies.DependencyError, match="needs the PyTorch extension") as info:
        dependencies.ensure_dependencies(lambda text: True, want_gpu=False)
    assert info.value.missing_extension == "PyTorch"  # the panel offers to install it


def test_constraints_pin_slicers_own_packages():
    text = dependencies.constraints_text()
    assert f"numpy=={importlib.metadata.version('numpy')}" in text.splitlines()
    assert f"scipy=={importlib.metadata.version('scipy')}" in text.splitlines()
    assert "torch" not in text


def test_requirements_txt_matches_and_never_lists_bundled_packages():
    lines = [l.strip() for l in REQUIREMENTS_TXT.read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines == list(dependencies.REQUIRED)
    for line in lines:
        assert not line.lower().startswith(("numpy", "scipy", "simpleitk", "vtk", "torch"))


def test_gsplat_is_pinned_and_offered_only_with_cuda(monkeypatch):
    """The on-demand pin is pyproject's, and a machine without a CUDA GPU is never offered gsplat."""
    import re
    from pathlib import Path

    from MedGSLib.render.gsplat_renderer import GSPLAT_REQUIREMENT
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'"{GSPLAT_REQUIREMENT}"' in re.search(r"^gpu = \[.*\]$", pyproject, re.M).group(0)
    monkeypatch.setattr(dependencies, "_has_module", lambda name: name != "gsplat")
    installs = []
    report = dependencies.ensure_dependencies(pytest.fail, want_gpu=True, pip_install=installs.append,
                                              cuda_check=lambda: False)
    assert installs == [] and report.installed == [] and report.missing_optional == []
