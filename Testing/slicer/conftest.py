"""Headless test bed for the MedGS Slicer module: real MRML from the slicer-core wheel, stubs
for the Qt/application parts it lacks (qt, ctk, slicer.i18n, slicer.ScriptedLoadableModule).

The stubs are the minimum MedGS.py needs at import time and for its Logic; the Widget is not
exercised here (it needs the Slicer application).
"""
from __future__ import annotations

import sys
import types
import unittest
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
for p in (REPO / "MedGS", REPO):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def _import_slicer_core():
    """Import slicer-core's `slicer` meta-package without adopting this folder into it.

    The meta-package extends its __path__ with every `slicer` folder on sys.path and imports
    each module there as a jump pad. With Testing/ on sys.path (Testing/conftest.py puts it
    there) that would be this folder, and it would import our test files as slicer.*.
    """
    if "slicer" in sys.modules:
        return sys.modules["slicer"]
    here = Path(__file__).resolve().parent
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() / "slicer" != here]
    try:
        import slicer
    finally:
        sys.path[:] = saved
    return slicer


try:
    slicer = _import_slicer_core()
    import slicer.util  # noqa: E402,F811 (the package object _import_slicer_core returned)
    import vtk  # noqa: E402
except ImportError as err:     # no slicer-core wheel: these tests cannot run here, which is no failure
    pytest.skip(f"the Slicer tests need the slicer-core wheel (pip install -e '.[test]'): {err}",
                allow_module_level=True)


def _install_stubs() -> None:
    if "qt" not in sys.modules:
        qt = types.ModuleType("qt")

        class QTimer:  # only what MedGS.py touches outside the Widget
            @staticmethod
            def singleShot(_msec, callback):
                callback()

        qt.QTimer = QTimer
        sys.modules["qt"] = qt
    if "ctk" not in sys.modules:
        sys.modules["ctk"] = types.ModuleType("ctk")

    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda _context, text: text
    sys.modules["slicer.i18n"] = i18n
    slicer.i18n = i18n

    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent
            self.moduleName = type(self).__name__

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent
            self.moduleName = type(self).__name__[: -len("Widget")]

        def setup(self):
            pass

    class ScriptedLoadableModuleLogic:
        """Same parameter-node behaviour as Slicer's: one singleton node per module."""

        def __init__(self, parent=None):
            self.moduleName = type(self).__name__[: -len("Logic")]

        def setDefaultParameters(self, parameterNode):
            pass

        def getParameterNode(self):
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is not None:
                return node
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            node.SetAttribute("ModuleName", self.moduleName)
            self.setDefaultParameters(node)
            return slicer.mrmlScene.AddNode(node)

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, requestedDelay=None, msec=None):
            pass

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(slm, cls.__name__, cls)
    sys.modules["slicer.ScriptedLoadableModule"] = slm
    slicer.ScriptedLoadableModule = slm


_install_stubs()


class Mrml:
    """A scene with the module logics MedGS uses registered, as the Slicer app would have them."""

    def __init__(self):
        self.scene = slicer.vtkMRMLScene()
        self.app = slicer.vtkSlicerApplicationLogic()
        self.app.SetMRMLScene(self.scene)
        self.app.GetColorLogic().SetMRMLScene(self.scene)
        self.app.GetColorLogic().AddDefaultColorNodes()
        self.segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
        self.segmentations.SetMRMLScene(self.scene)  # registers the closed-surface converter rules
        self.segmentations.SetMRMLApplicationLogic(self.app)
        self.volumes = slicer.vtkSlicerVolumesLogic()
        self.volumes.SetMRMLScene(self.scene)
        self.volumes.SetMRMLApplicationLogic(self.app)
        self.models = slicer.vtkSlicerModelsLogic()
        self.models.SetMRMLScene(self.scene)
        self.subject_hierarchy = slicer.vtkSlicerSubjectHierarchyModuleLogic()
        self.subject_hierarchy.SetMRMLScene(self.scene)
        slicer.mrmlScene = self.scene
        slicer.modules = types.SimpleNamespace(
            segmentations=types.SimpleNamespace(logic=lambda: self.segmentations),
            volumes=types.SimpleNamespace(logic=lambda: self.volumes),
            models=types.SimpleNamespace(logic=lambda: self.models),
        )

    def node_ids(self) -> list[str]:
        return [self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())]

    def sh_item_count(self) -> int:
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        ids = vtk.vtkIdList()
        sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
        return ids.GetNumberOfIds()

    def add_volume(self, array_kji: np.ndarray, ijk_to_ras: np.ndarray, name: str, labelmap: bool = False):
        cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = slicer.util.addVolumeFromArray(np.ascontiguousarray(array_kji), ijkToRAS=ijk_to_ras, name=name,
                                              nodeClassName=cls)
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        if not sh.GetItemByDataNode(node):  # the Slicer app's SH plugins would do this
            sh.CreateItem(sh.GetSceneItemID(), node)
        return node


@pytest.fixture
def mrml() -> Mrml:
    return Mrml()


# The 48 x 48 x 12 (i, j, k) crop of ct_abdomen3mm used by the end-to-end test, and three of
# its labels (TotalSegmentator ids) with their names.
CROP_IJK = (32, 24, 0)
CROP_SIZE = (48, 48, 12)
CROP_LABELS = {2: "kidney_right", 3: "kidney_left", 30: "vertebrae_L2"}


def read_node_arrays(path: Path):
    """(array k,j,i, IJK-to-RAS) of a file, read by Slicer's own storage node."""
    node = slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node), path
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVolume(node).copy(), slicer.util.arrayFromVTKMatrix(m)


@pytest.fixture(scope="session")
def crop_labels() -> dict[int, str]:
    return dict(CROP_LABELS)


@pytest.fixture(scope="session")
def abdomen_crop(shared_data):
    """(image k,j,i int16, labels k,j,i uint8 with CROP_LABELS only, IJK-to-RAS of the crop)."""
    image, a = read_node_arrays(shared_data / "ct_abdomen3mm_image.nii.gz")
    labels, b = read_node_arrays(shared_data / "ct_abdomen3mm_labels.nii.gz")
    assert np.allclose(a, b)
    i0, j0, k0 = CROP_IJK
    ni, nj, nk = CROP_SIZE
    sl = (slice(k0, k0 + nk), slice(j0, j0 + nj), slice(i0, i0 + ni))
    img = image[sl].astype(np.int16)
    lab = np.where(np.isin(labels[sl], list(CROP_LABELS)), labels[sl], 0).astype(np.uint8)
    crop = a.copy()
    crop[:3, 3] = a[:3, :3] @ np.array([i0, j0, k0], float) + a[:3, 3]  # origin of voxel (i0, j0, k0)
    return img, lab, crop


class VtkLog:
    """Everything VTK/MRML print through vtkOutputWindow (errors, warnings) while installed."""

    def __init__(self):
        self.window = vtk.vtkStringOutputWindow()
        self._previous = vtk.vtkOutputWindow.GetInstance()
        self._previous.Register(None)  # keep it alive while ours is the instance
        vtk.vtkOutputWindow.SetInstance(self.window)

    def text(self) -> str:
        return self.window.GetOutput()

    def errors(self) -> list[str]:
        return [line for line in self.text().splitlines() if "ERROR" in line.upper()]

    def close(self) -> None:
        vtk.vtkOutputWindow.SetInstance(self._previous)
        self._previous.UnRegister(None)


@pytest.fixture
def vtk_log():
    log = VtkLog()
    yield log
    log.close()


# A 48 x 48 x 17 crop of ct_abdomen3mm whose labels span all 17 slices, painted on every 4th
# (0, 4, 8, 12, 16) for the fill-between-slices tests.
SPARSE_CROP_IJK = (32, 24, 0)
SPARSE_CROP_SIZE = (48, 48, 17)
SPARSE_LABELS = {2: "kidney_right", 3: "kidney_left", 52: "aorta"}
PAINT_EVERY = 4


@pytest.fixture(scope="session")
def sparse_crop(shared_data):
    """(image k,j,i int16, full labels k,j,i uint8 (SPARSE_LABELS only), IJK-to-RAS of the crop)."""
    image, a = read_node_arrays(shared_data / "ct_abdomen3mm_image.nii.gz")
    labels, b = read_node_arrays(shared_data / "ct_abdomen3mm_labels.nii.gz")
    assert np.allclose(a, b)
    i0, j0, k0 = SPARSE_CROP_IJK
    ni, nj, nk = SPARSE_CROP_SIZE
    sl = (slice(k0, k0 + nk), slice(j0, j0 + nj), slice(i0, i0 + ni))
    lab = np.where(np.isin(labels[sl], list(SPARSE_LABELS)), labels[sl], 0).astype(np.uint8)
    crop = a.copy()
    crop[:3, 3] = a[:3, :3] @ np.array([i0, j0, k0], float) + a[:3, 3]
    return image[sl].astype(np.int16), lab, crop


def painted_segmentation(mrml, labels_kji: np.ndarray, ijk_to_ras: np.ndarray, names: dict[int, str],
                         every: int = PAINT_EVERY, name: str = "painted"):
    """A segmentation (in the scene, with an SH item) holding `labels_kji` on every `every`-th k slice only,
    one segment per value with the given name and a terminology entry."""
    sparse_labels = np.zeros_like(labels_kji)
    sparse_labels[::every] = labels_kji[::every]
    # A helper node without a subject-hierarchy item: removing a node whose item the test bed made
    # by hand leaves a stale entry in the SH node's data-node cache (an error on a later lookup).
    labelmap = slicer.util.addVolumeFromArray(np.ascontiguousarray(sparse_labels), ijkToRAS=ijk_to_ras,
                                              name=f"{name} labelmap", nodeClassName="vtkMRMLLabelMapVolumeNode")
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    seg.CreateDefaultDisplayNodes()
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, seg)
    mrml.scene.RemoveNode(labelmap)
    segmentation = seg.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        s = segmentation.GetSegment(segmentation.GetNthSegmentID(i))
        label = names[s.GetLabelValue()]
        s.SetName(label)
        s.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology(label))
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    if not sh.GetItemByDataNode(seg):
        sh.CreateItem(sh.GetSceneItemID(), seg)
    return seg, sparse_labels


def terminology(name: str) -> str:
    """A terminology entry string as Slicer stores it (the type is made unique per name)."""
    return ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
            f"~SCT^{100000 + sum(map(ord, name))}^{name}~^^~Anatomic codes - DICOM master list~^^~^^")
