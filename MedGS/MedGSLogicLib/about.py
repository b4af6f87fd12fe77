"""Who made MedGS and where it lives: the one place the module's texts take them from.

CMakeLists.txt, MedGS.s4ext and MedGS.json must state the same repository (the Extensions
Index reads them without running Python); Testing/slicer/test_extension_index.py checks that
they agree with REPOSITORY_URL.
"""
from __future__ import annotations

REPOSITORY_URL = "https://github.com/MedGS-Slicer/SlicerMedGS"
README_URL = f"{REPOSITORY_URL}#readme"
ISSUES_URL = f"{REPOSITORY_URL}/issues"
CONTRIBUTORS = ["MedGS team"]
PAPER = "MedGS: Gaussian Splatting for Multi-Modal 3D Medical Imaging (arXiv 2509.16806)"


def raw_url(path: str, revision: str = "main") -> str:
    """A file of the repository as the Extensions Index fetches it (icon, screenshots)."""
    owner_repo = REPOSITORY_URL.split("github.com/", 1)[1]
    return f"https://raw.githubusercontent.com/{owner_repo}/{revision}/{path}"
