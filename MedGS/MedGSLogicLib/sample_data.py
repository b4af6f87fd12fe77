"""The bundled example (Resources/Examples) as a Sample Data module entry.

`sample_data_source()` gives the keyword arguments of
`SampleData.SampleDataLogic.registerCustomSampleDataSource` (present since Slicer 4.x with
these names); `register()` calls it. The files are local, so the URIs are file:// URLs and the
checksums let Sample Data check its cached copy.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .paths import module_dir

CATEGORY = "MedGS"
SAMPLE_NAME = "MedGS abdomen CT 3 mm"
IMAGE_FILE = "ct_abdomen3mm_image.nii.gz"
LABELS_FILE = "ct_abdomen3mm_labels.nii.gz"
NODE_NAMES = ("MedGS abdomen CT", "MedGS abdomen segmentation")


def examples_dir() -> Path:
    """Installed: Resources/Examples beside MedGS.py; source tree: the repository's Resources/Examples."""
    for base in (module_dir(), module_dir().parent):
        folder = base / "Resources" / "Examples"
        if (folder / IMAGE_FILE).is_file():
            return folder
    raise FileNotFoundError(f"the MedGS example files ({IMAGE_FILE}) were found neither in {module_dir()} "
                            f"nor in {module_dir().parent} (Resources/Examples)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"SHA256:{digest.hexdigest()}"


def sample_data_source() -> dict:
    folder = examples_dir()
    files = [folder / IMAGE_FILE, folder / LABELS_FILE]
    return {
        "category": CATEGORY,
        "sampleName": SAMPLE_NAME,
        "thumbnailFileName": str(module_dir() / "Resources" / "Icons" / "MedGS.png"),
        "uris": [p.resolve().as_uri() for p in files],
        "fileNames": [p.name for p in files],
        "nodeNames": list(NODE_NAMES),
        "checksums": [_sha256(p) for p in files],
        # The label map comes in as a segmentation: the panel's label input and the effect's.
        "loadFileType": ["VolumeFile", "SegmentationFile"],
    }


def register(sample_data_logic) -> dict:
    """Register with `SampleData.SampleDataLogic` (passed in: the module needs the Slicer app)."""
    source = sample_data_source()
    sample_data_logic.registerCustomSampleDataSource(**source)
    return source
