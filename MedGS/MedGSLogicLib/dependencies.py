"""Python packages the worker needs inside Slicer, installed only with the user's consent.

- torch comes from the PyTorch extension (PyTorchUtils), which picks the CUDA build that fits
  the driver; we never pip-install torch ourselves.
- nibabel, scikit-image, psutil (and gsplat for the GPU renderer) are pip-installed on demand.
- numpy, scipy, SimpleITK and vtk are Slicer's own builds and are never installed or upgraded:
  they are skipped, and a constraints file pins them to the installed versions so that a
  dependency of ours cannot pull in a different one.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable

from MedGSLib.errors import MedGSError
from MedGSLib.render.gsplat_renderer import GSPLAT_REQUIREMENT

# pip requirement -> module to import to check it is there
REQUIRED = {"nibabel>=5.0": "nibabel", "scikit-image>=0.22": "skimage", "psutil>=5.9": "psutil"}
# pinned: gsplat JIT-builds CUDA code against the torch it finds; only the tested version is offered
GPU_OPTIONAL = {GSPLAT_REQUIREMENT: "gsplat"}
MINIMUM_TORCH = ">=2.1"
# Slicer bundles these; pip must never replace them (Slicer/Slicer#6711, #7661, #7230).
NEVER_INSTALL = ("numpy", "scipy", "SimpleITK", "vtk", "torch")


class DependencyError(MedGSError):
    """A required package is missing and was not (or could not be) installed."""

    def __init__(self, message: str, restart_required: bool = False, missing_extension: str | None = None):
        super().__init__(message)
        self.restart_required = restart_required
        self.missing_extension = missing_extension  # a Slicer extension to offer to install


@dataclass
class DependencyReport:
    installed: list[str] = field(default_factory=list)
    missing_optional: list[str] = field(default_factory=list)
    restart_required: bool = False


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_requirements(include_gpu: bool = False) -> list[str]:
    wanted = dict(REQUIRED)
    if include_gpu:
        wanted.update(GPU_OPTIONAL)
    return [req for req, module in wanted.items() if not _has_module(module)]


def constraints_text() -> str:
    """pip constraints that pin Slicer's bundled packages to what is installed now."""
    lines = []
    for dist in NEVER_INSTALL:
        if dist == "torch":
            continue  # torch may be absent; the PyTorch extension owns it
        try:
            lines.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return "\n".join(lines) + "\n"


def _slicer_pip_install(requirements: list[str]) -> None:
    import slicer

    constraints = tempfile.NamedTemporaryFile("w", suffix="-medgs-constraints.txt", delete=False)
    try:
        constraints.write(constraints_text())
        constraints.close()
        install = slicer.util.pip_install
        try:
            from slicer.packaging import pip_install as install  # Slicer >= 5.12
        except ImportError:
            pass
        try:
            accepted = inspect.signature(install).parameters
        except (TypeError, ValueError):
            accepted = {}
        if "constraints" in accepted:
            kwargs = {"constraints": constraints.name}
            if "skip_packages" in accepted:
                kwargs["skip_packages"] = list(NEVER_INSTALL)
            if "requester" in accepted:
                kwargs["requester"] = "MedGS"
            install(list(requirements), **kwargs)
        else:  # Slicer 5.8/5.10: one pip argument string
            install(" ".join(requirements) + f' -c "{constraints.name}"')
    finally:
        os.unlink(constraints.name)


def cuda_available() -> bool:
    """True when torch is importable and sees a CUDA GPU (False before torch is installed)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _torch_logic():
    try:
        import PyTorchUtils
    except ImportError:
        raise DependencyError("MedGS needs the PyTorch extension: install 'PyTorch' from the Extensions Manager "
                              "and restart Slicer", missing_extension="PyTorch") from None
    return PyTorchUtils.PyTorchUtilsLogic()


def ensure_dependencies(confirm: Callable[[str], bool], *, want_gpu: bool,
                        pip_install: Callable[[list[str]], None] | None = None,
                        torch_logic_factory: Callable[[], object] | None = None,
                        cuda_check: Callable[[], bool] | None = None) -> DependencyReport:
    """Install what is missing after one confirmation; raise DependencyError when refused.

    `pip_install` and `torch_logic_factory` are injectable for tests; inside Slicer they
    default to Slicer's pip and the PyTorch extension's logic.
    """
    report = DependencyReport()
    torch_missing = not _has_module("torch")
    torch_logic = None
    if torch_missing:
        torch_logic = (torch_logic_factory or _torch_logic)()
        torch_missing = not torch_logic.torchInstalled()
    required = missing_requirements(include_gpu=False)
    # gsplat only where it can run: a CUDA GPU that torch sees (never on CPU-only or Apple machines)
    want_gpu = want_gpu and (cuda_available() if cuda_check is None else cuda_check())
    optional = [req for req, module in GPU_OPTIONAL.items() if not _has_module(module)] if want_gpu else []
    if not (torch_missing or required or optional):
        return report
    names = (["PyTorch (through the PyTorch extension)"] if torch_missing else []) + required + optional
    if not confirm("MedGS needs these Python packages, which will be downloaded and installed into Slicer:\n  "
                   + "\n  ".join(names) + "\nThis can take several minutes. Install them now?"):
        raise DependencyError("MedGS cannot run without: " + ", ".join(names) + " (installation declined)")
    if torch_missing:
        torch = torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=MINIMUM_TORCH)
        if torch is None:
            raise DependencyError("PyTorch could not be installed; see the Python console for the reason")
        report.installed.append("torch")
        report.restart_required = getattr(torch_logic, "needsRestart", False) is True
    install = pip_install or _slicer_pip_install
    if required:
        install(required)
        report.installed += required
        still = missing_requirements(include_gpu=False)
        if still:
            raise DependencyError("these packages are still missing after installation: " + ", ".join(still))
    if optional:
        try:
            install(optional)
            report.installed += optional
        except Exception:
            # gsplat builds CUDA code on first use and may have no wheel for this Python: the engine
            # then uses its pure-torch renderer, slower but correct.
            report.missing_optional += optional
    return report


def install_extension(name: str) -> None:
    """Install a Slicer extension from the Extensions Manager server (Slicer must restart after)."""
    import slicer

    manager = slicer.app.extensionsManagerModel()
    if manager.isExtensionInstalled(name):
        return
    manager.interactive = False  # we already asked the user
    if not manager.installExtensionFromServer(name):
        raise DependencyError(f"the {name} extension could not be installed; install it from the Extensions Manager")
