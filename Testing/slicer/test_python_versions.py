"""Slicer 5.8 ships Python 3.9 (5.10: 3.12). The module (MedGS/) runs in Slicer's Python and so
does the worker (python -m MedGSLib.worker, the whole engine): both must stay 3.9-compatible.
Checked with vermin (pip install vermin), annotations evaluated too for MedGS/.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("folder, extra", [("MedGS", ["--eval-annotations"]), ("MedGSLib", ["--eval-annotations"])])
def test_python_39_compatible(folder, extra):
    pytest.importorskip("vermin")
    exe = shutil.which("vermin")
    if exe is None:
        pytest.skip("the vermin command is not on PATH")
    proc = subprocess.run([exe, "--target=3.9-", "--no-tips", "--violations", *extra,
                           str(REPO / folder)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _python39():
    """A Python 3.9 interpreter, if this machine has one (pyenv keeps them under versions/3.9.*)."""
    for exe in [shutil.which("python3.9"), *sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python"))]:
        if exe:
            proc = subprocess.run([str(exe), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                  text=True)
            if proc.returncode == 0 and proc.stdout.strip() == "(3, 9)":
                return str(exe)
    return None


def test_every_file_compiles_under_python_39():
    exe = _python39()
    if exe is None:
        pytest.skip("no Python 3.9 interpreter here")
    files = [str(p) for folder in ("MedGS", "MedGSLib") for p in sorted((REPO / folder).rglob("*.py"))]
    code = ("import sys\nbad = []\nfor f in sys.argv[1:]:\n    try:\n        compile(open(f, encoding='utf-8').read(), "
            "f, 'exec')\n    except SyntaxError as e:\n        bad.append(f'{f}: {e}')\nprint('\\n'.join(bad))\n"
            "sys.exit(1 if bad else 0)")
    proc = subprocess.run([exe, "-c", code, *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
