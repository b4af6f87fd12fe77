"""Extensions Index readiness: MedGS.json, one repository URL everywhere, contributors, help
text, the Sample Data entry of the bundled example and the startup registrations.

The Slicer application is not installable here, so the registration glue in MedGS.py runs
against recording stand-ins for slicer.app, SampleData and the Segment Editor effect factory;
the Sample Data keyword names are checked against Slicer's own signature (5.8 to 5.12).
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import types
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
import slicer

import MedGS
from MedGSLogicLib import about, sample_data

REPO = Path(__file__).resolve().parents[2]
# additionalProperties is false in the catalog schema (v1.0.1 / v1.0.2): only these keys exist
SCHEMA_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
# SampleData.SampleDataLogic.registerCustomSampleDataSource parameters, Slicer 5.8 to 5.12
SAMPLE_DATA_PARAMETERS = {"category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader",
                          "thumbnailFileName", "loadFileType", "loadFiles", "loadFileProperties", "checksums"}


def cmake_value(name: str) -> str:
    m = re.search(rf'set\({name}\s+"([^"]*)"\s*\)', (REPO / "CMakeLists.txt").read_text())
    assert m, name
    return m.group(1)


def s4ext() -> dict:
    out = {}
    for line in (REPO / "MedGS.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value.strip()
    return out


def test_catalog_entry():
    raw = (REPO / "MedGS.json").read_bytes()
    assert b"\r" not in raw  # LF only (the Index checks it)
    entry = json.loads(raw)
    assert set(entry) <= SCHEMA_KEYS
    assert {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
                                       "slicer-extension-catalog-entry-schema-v1.0.")
    assert entry["scm_url"] == about.REPOSITORY_URL
    assert entry["category"] == cmake_value("EXTENSION_CATEGORY")
    assert entry["build_dependencies"] == cmake_value("EXTENSION_DEPENDS").split()
    assert entry["build_subdirectory"] == "."
    assert entry["tier"] in range(1, 6)
    # the catalog file name is the CMake project name
    assert re.search(r"project\s*\(\s*MedGS\s*\)", (REPO / "CMakeLists.txt").read_text())


def test_one_repository_url_everywhere():
    assert cmake_value("EXTENSION_HOMEPAGE") == about.README_URL == s4ext()["homepage"]
    assert s4ext()["scmurl"] == about.REPOSITORY_URL + ".git"
    assert cmake_value("EXTENSION_ICONURL") == about.raw_url("Resources/Icons/MedGS.png") == s4ext()["iconurl"]
    assert cmake_value("EXTENSION_SCREENSHOTURLS") == about.raw_url("Resources/Screenshots/MedGS-1.png")
    for path in ("Resources/Icons/MedGS.png", "Resources/Screenshots/MedGS-1.png"):
        assert (REPO / path).is_file(), path
    # no other spelling of the repository in the module's code
    for py in (REPO / "MedGS").rglob("*.py"):
        for url in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", py.read_text()):
            assert py.name == "about.py" and url == about.REPOSITORY_URL, (py, url)


def test_contributors_and_help_text():
    assert cmake_value("EXTENSION_CONTRIBUTORS") == ", ".join(about.CONTRIBUTORS) == s4ext()["contributors"]
    assert "developers" not in s4ext()["contributors"]
    module = MedGS.MedGS(types.SimpleNamespace())
    assert module.parent.contributors == ["MedGS team"]
    assert f'<a href="{about.README_URL}">' in module.parent.helpText
    assert "MedGS fill between slices" in module.parent.helpText
    assert about.PAPER in module.parent.acknowledgementText


def test_sample_data_source_of_the_bundled_example():
    source = sample_data.sample_data_source()
    assert set(source) <= SAMPLE_DATA_PARAMETERS
    assert source["category"] == "MedGS" and source["sampleName"] == "MedGS abdomen CT 3 mm"
    assert source["fileNames"] == ["ct_abdomen3mm_image.nii.gz", "ct_abdomen3mm_labels.nii.gz"]
    assert source["loadFileType"] == ["VolumeFile", "SegmentationFile"]
    assert len(source["nodeNames"]) == len(source["uris"]) == len(source["checksums"]) == 2
    assert Path(source["thumbnailFileName"]).is_file()
    for uri, name, checksum in zip(source["uris"], source["fileNames"], source["checksums"]):
        parsed = urlparse(uri)
        path = Path(url2pathname(parsed.path))
        assert parsed.scheme == "file" and path == REPO / "Resources" / "Examples" / name
        assert checksum == "SHA256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_startup_registers_the_effect_and_the_sample_data(monkeypatch):
    connected, registered, sources = [], [], []

    class App:
        def connect(self, signal, slot):
            connected.append((signal, slot))

    class Effect:
        def __init__(self, parent):
            self.source = None

        def setPythonSource(self, path):
            self.source = path

        def self(self):
            return types.SimpleNamespace(register=lambda: registered.append(self.source))

    class SampleDataLogic:
        @staticmethod
        def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,
                                           nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                           loadFileType="VolumeFile", loadFiles=None, loadFileProperties=None,
                                           checksums=None):
            sources.append((category, sampleName, fileNames))

    monkeypatch.setattr(slicer, "app", App(), raising=False)
    monkeypatch.setitem(sys.modules, "qSlicerSegmentationsEditorEffectsPythonQt",
                        types.SimpleNamespace(qSlicerSegmentEditorScriptedEffect=Effect))
    monkeypatch.setitem(sys.modules, "SampleData", types.SimpleNamespace(SampleDataLogic=SampleDataLogic))
    MedGS.MedGS(types.SimpleNamespace())
    assert connected == [("startupCompleted()", MedGS.onStartupCompleted)]
    MedGS.onStartupCompleted()
    assert len(registered) == 1 and Path(registered[0]).is_file()
    assert registered[0].endswith("MedGS/SegmentEditorMedGSLib/SegmentEditorEffect.py")
    assert sources == [("MedGS", "MedGS abdomen CT 3 mm",
                        ["ct_abdomen3mm_image.nii.gz", "ct_abdomen3mm_labels.nii.gz"])]


def test_a_failing_registration_does_not_stop_startup(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "qSlicerSegmentationsEditorEffectsPythonQt", None)  # import fails
    monkeypatch.setitem(sys.modules, "SampleData", None)
    MedGS.onStartupCompleted()
    assert "the Segment Editor effect could not be registered" in caplog.text
    assert "could not be registered with Sample Data" in caplog.text


@pytest.mark.parametrize("name", ["SegmentEditorMedGSLib/SegmentEditorEffect.py", "SegmentEditorMedGSLib/__init__.py"])
def test_effect_files_are_packaged(name):
    assert name in (REPO / "MedGS" / "CMakeLists.txt").read_text()
