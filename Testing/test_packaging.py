"""Static checks of the Slicer extension packaging (no Slicer needed).

Slicer packages only the files CMake lists, so an unlisted .py silently goes missing from
the Extensions Manager build. These tests also keep MedGS.s4ext and CMakeLists.txt in step
and check the things the Extensions Index checks (project name, one-line quoted URLs,
128x128 PNG icon, licence file).
"""
from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP_CMAKE = REPO / "CMakeLists.txt"
MODULE_CMAKE = REPO / "MedGS" / "CMakeLists.txt"
S4EXT = REPO / "MedGS.s4ext"


def cmake_set(text: str, name: str) -> list[str]:
    """Items of `set(NAME item item ...)` (comments stripped, quotes removed)."""
    text = re.sub(r"#[^\n]*", "", text)
    m = re.search(rf"set\(\s*{name}\s+(.*?)\)", text, re.S)
    assert m, f"set({name} ...) not found"
    return [t.strip('"') for t in m.group(1).split()]


def cmake_value(text: str, name: str) -> str:
    m = re.search(rf'set\({name}\s+"([^"]*)"\s*\)', text)
    assert m, f'set({name} "...") not found on one line'
    return m.group(1)


def python_files(folder: Path, base: Path) -> set[str]:
    return {p.relative_to(base).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


def s4ext_fields() -> dict[str, str]:
    fields = {}
    for line in S4EXT.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            fields[key] = value.strip()
    return fields


def test_every_module_python_file_is_listed():
    listed = set(cmake_set(MODULE_CMAKE.read_text(), "MODULE_PYTHON_SCRIPTS"))
    present = python_files(REPO / "MedGS", REPO / "MedGS")
    assert present - listed == set(), f"add to MODULE_PYTHON_SCRIPTS in MedGS/CMakeLists.txt: {sorted(present - listed)}"
    assert listed - present == set(), f"listed but missing (CMake configure would fail): {sorted(listed - present)}"


def test_every_engine_python_file_is_listed():
    listed = set(cmake_set(TOP_CMAKE.read_text(), "MEDGSLIB_PYTHON_SCRIPTS"))
    present = python_files(REPO / "MedGSLib", REPO)
    missing = sorted(present - listed)
    assert not missing, ("add to MEDGSLIB_PYTHON_SCRIPTS in CMakeLists.txt "
                         "(or run: python Testing/test_packaging.py --relist):\n" + "\n".join(f"  {m}" for m in missing))
    assert listed - present == set(), f"listed but missing: {sorted(listed - present)}"


def test_module_resources_exist():
    text = MODULE_CMAKE.read_text().replace("${MODULE_NAME}", "MedGS")
    for item in cmake_set(text, "MODULE_PYTHON_RESOURCES"):
        assert (REPO / "MedGS" / item).is_file(), item


def test_top_level_cmake_follows_the_extension_template():
    text = TOP_CMAKE.read_text()
    assert re.search(r"project\s*\(\s*MedGS\s*\)", text)
    for needed in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(MedGS)",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})",
                   "ctkMacroCompilePythonScript("):
        assert needed in text, needed
    # The Extensions Index greps these exact forms (one line, double quotes, no space before ")").
    assert re.search(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', text)
    assert re.search(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text)
    assert cmake_value(text, "EXTENSION_DEPENDS") == "PyTorch"
    for name in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in cmake_value(text, name).split():
            assert url.startswith("https://raw.githubusercontent.com/"), url
    icon_path = cmake_value(text, "EXTENSION_ICONURL").split("/main/", 1)[1]
    assert (REPO / icon_path).is_file(), f"the icon URL points at {icon_path}, which is not in the repository"


def test_s4ext_agrees_with_cmake():
    text = TOP_CMAKE.read_text()
    f = s4ext_fields()
    assert f["depends"] == cmake_value(text, "EXTENSION_DEPENDS")
    assert f["category"] == cmake_value(text, "EXTENSION_CATEGORY")
    assert f["homepage"] == cmake_value(text, "EXTENSION_HOMEPAGE")
    assert f["contributors"] == cmake_value(text, "EXTENSION_CONTRIBUTORS")
    assert f["description"] == cmake_value(text, "EXTENSION_DESCRIPTION")
    assert f["iconurl"] == cmake_value(text, "EXTENSION_ICONURL")
    assert f["screenshoturls"] == cmake_value(text, "EXTENSION_SCREENSHOTURLS")
    assert f["scm"] == "git" and f["scmurl"].startswith("https://") and f["scmurl"].endswith("SlicerMedGS.git")
    assert f["homepage"].startswith(f["scmurl"][: -len(".git")])  # same repository
    assert f["enabled"] in ("0", "1")


def test_category_is_accepted_by_the_extensions_index():
    accepted = {"Segmentation", "Surface Models", "Rendering", "Image Synthesis", "Quantification", "Utilities",
                "Tomographic Reconstruction", "Filtering"}
    assert cmake_value(TOP_CMAKE.read_text(), "EXTENSION_CATEGORY") in accepted


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("icon", ["MedGS/Resources/Icons/MedGS.png", "Resources/Icons/MedGS.png"])
def test_icons_are_128_png_with_content(icon):
    path = REPO / icon
    assert png_size(path) == (128, 128)
    from PIL import Image

    pixels = Image.open(path).convert("RGB").getcolors(maxcolors=1 << 16)
    assert pixels is None or len(pixels) > 50  # a drawn icon, not a flat placeholder


def test_ui_file_is_valid_designer_xml():
    root = ET.parse(REPO / "MedGS" / "Resources" / "UI" / "MedGS.ui").getroot()
    assert root.tag == "ui" and root.find("class").text == "MedGS"
    names = {w.get("name"): w.get("class") for w in root.iter("widget")}
    # Every control MedGS.py's Widget reads through self.ui.<name>.
    source = (REPO / "MedGS" / "MedGS.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used - set(names) == set(), f"used in MedGS.py but not in the .ui: {sorted(used - set(names))}"
    assert names["inputVolumeSelector"] == "qMRMLNodeComboBox"
    assert names["inputLabelsSelector"] == "qMRMLNodeComboBox"
    custom = {c.find("class").text for c in root.iter("customwidget")}
    assert {cls for cls in names.values() if cls.startswith(("ctk", "qMRML"))} <= custom
    receivers = {c.find("receiver").text for c in root.iter("connection")
                 if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert receivers == {"inputVolumeSelector", "inputLabelsSelector"}


def test_license_is_apache_2():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 10000  # the full text, not a stub


def test_module_file_has_the_four_classes():
    source = (REPO / "MedGS" / "MedGS.py").read_text()
    for cls in ("class MedGS(ScriptedLoadableModule)", "class MedGSWidget(ScriptedLoadableModuleWidget",
                "class MedGSLogic(ScriptedLoadableModuleLogic)", "class MedGSTest(ScriptedLoadableModuleTest)"):
        assert cls in source, cls


def test_worker_protocol_document_names_every_exit_code():
    from MedGSLib import worker

    doc = (REPO / "MedGSLib" / "worker_protocol.md").read_text()
    for code in (worker.EXIT_OK, worker.EXIT_ERROR, worker.EXIT_BAD_JOB, worker.EXIT_INTERNAL, worker.EXIT_CANCELLED):
        assert f"| {code} |" in doc
    for kind in ("input", "device", "out_of_memory", "job", "internal", "cancelled"):
        assert f"| `{kind}` |" in doc


def relist_engine_files() -> list[str]:
    """Rewrite MEDGSLIB_PYTHON_SCRIPTS in CMakeLists.txt from the .py files present."""
    files = sorted(python_files(REPO / "MedGSLib", REPO))
    text = TOP_CMAKE.read_text()
    block = "set(MEDGSLIB_PYTHON_SCRIPTS\n" + "".join(f"  {f}\n" for f in files) + "  )"
    new, count = re.subn(r"set\(MEDGSLIB_PYTHON_SCRIPTS\n.*?\n  \)", lambda _m: block, text, flags=re.S)
    assert count == 1, "MEDGSLIB_PYTHON_SCRIPTS block not found"
    TOP_CMAKE.write_text(new)
    return files


if __name__ == "__main__":
    # `python Testing/test_packaging.py --relist`: after adding or removing engine files.
    import sys

    if sys.argv[1:] == ["--relist"]:
        print(f"{len(relist_engine_files())} files listed in {TOP_CMAKE}")
    else:
        sys.exit("usage: python Testing/test_packaging.py --relist")
