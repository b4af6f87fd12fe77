"""Shared pytest fixtures for the MedGS test suite."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_TESTING = Path(__file__).resolve().parent
_REPO_ROOT = _TESTING.parent

# pytest ("prepend" import mode) puts this folder on sys.path to import this file. It must not
# stay there: slicer-core's `slicer` meta-package imports every module of every `slicer/`
# folder found on sys.path, so `import slicer` would import Testing/slicer/*.py (our Slicer
# tests) as `slicer.*` submodules and copy their names into the `slicer` namespace.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _TESTING]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding MedGSLib/ and Testing/)."""
    return _REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real test cases: $MEDGS_SHARED_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("MEDGS_SHARED_DATA")
    path = Path(env).expanduser() if env else _REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path} (set MEDGS_SHARED_DATA to its folder)")
    return path
