"""Check the input nodes and write them into a job folder for the worker.

The volume and the labels go out as NRRD written by Slicer's own storage node, so the
IJK-to-RAS geometry is exactly what the scene has (files are LPS, as Slicer and ITK expect).
A segmentation is first turned into a label map on the input volume's grid. Nothing is left
behind in the scene: temporary nodes are removed with `SceneGuard`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from MedGSLib.errors import InputError

VOLUME_FILE = "input/volume.nrrd"
LABELS_FILE = "input/labels.nrrd"

_AXIS_WORDS = {0: ("sagittal", "left-right"), 1: ("coronal", "anterior-posterior"), 2: ("axial", "inferior-superior")}


@dataclass
class LabelEntry:
    name: str
    color: tuple[float, float, float]
    segment_id: str | None = None  # the input segment this label value came from (its ID, terminology)


@dataclass
class ExportedInputs:
    job_dir: Path
    volume_path: Path
    labels_path: Path | None
    labels: dict[int, LabelEntry] = field(default_factory=dict)  # label value -> name, colour
    ijk_to_ras: np.ndarray = field(default_factory=lambda: np.eye(4))
    warnings: list[str] = field(default_factory=list)
    labels_array: np.ndarray | None = None  # the exported label map (k, j, i), for the sparse checks


class SceneGuard:
    """Remembers the scene's nodes; `rollback()` removes every node added since.

    Used around anything that may add helper nodes (exports, result loading) so that a
    failure, or a finished export, leaves the scene exactly as it was.
    """

    def __init__(self, scene):
        self.scene = scene
        self._before = set(_node_ids(scene))
        self._sh_before = set(_sh_items(scene))

    def added_node_ids(self) -> list[str]:
        return [i for i in _node_ids(self.scene) if i not in self._before]

    def rollback(self) -> None:
        sh = _sh_node(self.scene)
        if sh is not None:
            for item in _sh_items(self.scene):
                if item not in self._sh_before and not sh.GetItemDataNode(item):
                    sh.RemoveItem(item, False, False)  # folders we made; data items go with their nodes
        # Display and storage nodes of an added node are added too: remove dependants first
        # by walking backwards through the order of addition.
        for node_id in reversed(self.added_node_ids()):
            node = self.scene.GetNodeByID(node_id)
            if node is not None:
                self.scene.RemoveNode(node)


def _node_ids(scene) -> list[str]:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]


def _sh_node(scene):
    import slicer

    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def _sh_items(scene) -> list[int]:
    import vtk

    sh = _sh_node(scene)
    if sh is None:
        return []
    ids = vtk.vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), ids, True)
    return [ids.GetId(i) for i in range(ids.GetNumberOfIds())]


def ijk_to_ras(volume_node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def anatomical_axis_names(volume_node) -> dict[str, str]:
    """{"I": "I: sagittal slices (left-right, 0.78 mm)", ...} from the node's directions."""
    a = ijk_to_ras(volume_node)[:3, :3]
    spacing = np.linalg.norm(a, axis=0)
    names = {}
    for axis, letter in enumerate("IJK"):
        dominant = int(np.argmax(np.abs(a[:, axis])))
        plane, words = _AXIS_WORDS[dominant]
        oblique = "" if np.abs(a[dominant, axis]) / spacing[axis] > 0.95 else ", oblique"
        names[letter] = f"{letter}: {plane} slices ({words}{oblique}, {spacing[axis]:.3g} mm)"
    return names


def auto_axis(volume_node) -> str:
    """The axis the engine picks for "auto" (MedGSLib.frames.auto_axis: largest spacing, ties -> K)."""
    from MedGSLib.frames import auto_axis   # numpy only: cheap inside Slicer
    return "IJK"[auto_axis(np.linalg.norm(ijk_to_ras(volume_node)[:3, :3], axis=0))]


def check_volume(volume_node) -> None:
    """InputError unless the node is a 3D scalar volume with at least 2 slices on every axis."""
    if volume_node is None:
        raise InputError("no input volume selected")
    name = volume_node.GetName()
    image = volume_node.GetImageData()
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode") or volume_node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(f"'{name}' is a label map; choose the intensity volume as input and the labels below it")
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"volume '{name}' is empty (it has no voxels)")
    dims = image.GetDimensions()
    if min(dims) < 2:
        raise InputError(f"volume '{name}' is 2D ({dims[0]} x {dims[1]} x {dims[2]} voxels); "
                         "MedGS needs a 3D volume with at least 2 slices")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"volume '{name}' has {image.GetNumberOfScalarComponents()} components per voxel "
                         "(colour or vector image); MedGS needs a scalar volume")


def _check_same_grid(volume_node, labels_node) -> None:
    vd, ld = volume_node.GetImageData().GetDimensions(), labels_node.GetImageData().GetDimensions()
    a, b = ijk_to_ras(volume_node), ijk_to_ras(labels_node)
    problems = []
    if vd != ld:
        problems.append(f"size {ld[0]}x{ld[1]}x{ld[2]} vs {vd[0]}x{vd[1]}x{vd[2]}")
    if not np.allclose(a[:3, :3], b[:3, :3], rtol=1e-5, atol=1e-4):
        problems.append("spacing or orientation differ")
    if not np.allclose(a[:3, 3], b[:3, 3], rtol=1e-5, atol=1e-3):
        problems.append(f"origin {np.round(b[:3, 3], 3).tolist()} vs {np.round(a[:3, 3], 3).tolist()}")
    if volume_node.GetTransformNodeID() != labels_node.GetTransformNodeID():
        problems.append("they sit under different transforms")
    if problems:
        raise InputError(f"label map '{labels_node.GetName()}' does not have the geometry of volume "
                         f"'{volume_node.GetName()}' ({'; '.join(problems)}); resample it onto the volume first "
                         "(Resample Image (BRAINS) or Crop Volume), or use a segmentation")


def _write_volume(node, path: Path) -> None:
    import slicer

    path.parent.mkdir(parents=True, exist_ok=True)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    # Uncompressed: the worker reads it once, and gzip would cost more than the disk write.
    storage.SetUseCompression(False)
    if not storage.WriteData(node) or not path.is_file():
        raise InputError(f"could not write '{node.GetName()}' to {path}")


def _labelmap_entries(labels_node, values) -> dict[int, LabelEntry]:
    color_node = labels_node.GetDisplayNode().GetColorNode() if labels_node.GetDisplayNode() else None
    entries = {}
    for v in values:
        name, color = f"Label {v}", _fallback_color(v)
        if color_node is not None and v < color_node.GetNumberOfColors():
            cname = color_node.GetColorName(int(v))
            if cname and cname not in ("(none)", "invalid"):
                name = cname
            rgba = [0.0, 0.0, 0.0, 0.0]
            if color_node.GetColor(int(v), rgba):
                color = tuple(float(c) for c in rgba[:3])
        entries[int(v)] = LabelEntry(name, color)
    return entries


def _fallback_color(v: int) -> tuple[float, float, float]:
    # the engine's default colour (one owner: MedGSLib.labels), so the CLI and Slicer agree
    from MedGSLib.labels import default_color   # numpy only at import: cheap inside Slicer

    return default_color(v)


def _export_labelmap(scene, seg_node, volume_node, segment_ids):
    """The segments as one label map node (values 1..N in the order given) on the volume's grid.

    The caller removes the node (it is made inside the caller's SceneGuard).
    """
    import slicer
    import vtk

    id_array = vtk.vtkStringArray()
    for sid in segment_ids:
        id_array.InsertNextValue(sid)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "MedGS export")
    ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg_node, id_array, labelmap, volume_node)
    if not ok or labelmap.GetImageData() is None:
        raise InputError(f"segmentation '{seg_node.GetName()}' could not be turned into a label map on the grid of "
                         f"'{volume_node.GetName()}'")
    return labelmap


def segment_arrays(scene, seg_node, volume_node, segment_ids) -> dict[str, np.ndarray]:
    """Each segment as a boolean (k, j, i) array on the volume's grid; the scene is left as it was."""
    guard = SceneGuard(scene)
    try:
        out = {}
        for sid in segment_ids:
            labelmap = _export_labelmap(scene, seg_node, volume_node, [sid])
            dims = labelmap.GetImageData().GetDimensions()
            out[sid] = _voxels(labelmap).reshape(dims[2], dims[1], dims[0]) != 0
            scene.RemoveNode(labelmap)
        return out
    finally:
        guard.rollback()


def overlap_warning(seg_node, arrays: dict[str, np.ndarray]) -> str | None:
    """A sentence naming the overlapping segments, or None: MedGS gives each voxel one label."""
    if len(arrays) < 2:
        return None
    count = np.zeros(next(iter(arrays.values())).shape, np.uint8)
    for a in arrays.values():
        count += a
    shared = int(np.count_nonzero(count > 1))
    if not shared:
        return None
    segmentation = seg_node.GetSegmentation()
    names = [segmentation.GetSegment(sid).GetName() for sid, a in arrays.items() if np.any(a & (count > 1))]
    return (f"segments {', '.join(repr(n) for n in names)} overlap in {shared} voxels; MedGS gives each voxel one "
            "label, the later segment in the list wins there")


def _export_segmentation(scene, seg_node, volume_node, path: Path, segment_ids=None):
    """Write the segments as one label map; returns (entries by label value, warnings, array k,j,i)."""
    segmentation = seg_node.GetSegmentation()
    all_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    ids = [s for s in (segment_ids or all_ids) if s in all_ids]
    if not ids:
        raise InputError(f"segmentation '{seg_node.GetName()}' has no segments")
    if seg_node.GetTransformNodeID() != volume_node.GetTransformNodeID():
        raise InputError(f"segmentation '{seg_node.GetName()}' and volume '{volume_node.GetName()}' sit under "
                         "different transforms; harden or remove the transforms first")
    warnings = []
    # Segments that share a labelmap layer cannot overlap; only several layers need the check.
    layers = {segmentation.GetLayerIndex(sid) for sid in ids} if hasattr(segmentation, "GetLayerIndex") else {0, 1}
    if len(ids) > 1 and len(layers) > 1:
        overlap = overlap_warning(seg_node, segment_arrays(scene, seg_node, volume_node, ids))
        if overlap:
            warnings.append(overlap)
    guard = SceneGuard(scene)  # the export needs a labelmap node in the scene; it goes again below
    try:
        labelmap = _export_labelmap(scene, seg_node, volume_node, ids)
        # Without a colour table the export numbers segments 1..N in the order given.
        entries = {}
        for value, sid in enumerate(ids, start=1):
            seg = segmentation.GetSegment(sid)
            entries[value] = LabelEntry(seg.GetName(), tuple(float(c) for c in seg.GetColor()), sid)
        dims = labelmap.GetImageData().GetDimensions()
        array = _voxels(labelmap).reshape(dims[2], dims[1], dims[0]).copy()
        present = set(np.unique(array).tolist()) - {0}
        if not present:
            raise InputError(f"segmentation '{seg_node.GetName()}' is empty inside volume '{volume_node.GetName()}'")
        _write_volume(labelmap, path)
        return {v: e for v, e in entries.items() if v in present}, warnings, array
    finally:
        guard.rollback()


def _voxels(volume_node) -> np.ndarray:
    from vtk.util.numpy_support import vtk_to_numpy

    image = volume_node.GetImageData()
    return vtk_to_numpy(image.GetPointData().GetScalars())


def export_inputs(scene, volume_node, labels_node, job_dir: Path, segment_ids=None) -> ExportedInputs:
    """Check the inputs and write input/volume.nrrd (+ input/labels.nrrd) under job_dir.

    `segment_ids`: of a segmentation, only these segments (default: all, in their order).
    """
    check_volume(volume_node)
    job_dir = Path(job_dir)
    volume_path = job_dir / VOLUME_FILE
    _write_volume(volume_node, volume_path)
    labels_path, entries, warnings, array = None, {}, [], None
    if labels_node is not None:
        labels_path = job_dir / LABELS_FILE
        if labels_node.IsA("vtkMRMLSegmentationNode"):
            entries, warnings, array = _export_segmentation(scene, labels_node, volume_node, labels_path,
                                                            segment_ids)
        elif labels_node.IsA("vtkMRMLLabelMapVolumeNode") or labels_node.IsA("vtkMRMLScalarVolumeNode"):
            if labels_node.GetImageData() is None or labels_node.GetImageData().GetNumberOfPoints() == 0:
                raise InputError(f"label map '{labels_node.GetName()}' is empty (it has no voxels)")
            _check_same_grid(volume_node, labels_node)
            array = _voxels(labels_node)
            from MedGSLib.label_arrays import check_whole_numbers   # numpy only: cheap inside Slicer
            check_whole_numbers(array, f"label map '{labels_node.GetName()}'")
            values = sorted(int(v) for v in np.unique(array) if v != 0)
            if not values:
                raise InputError(f"label map '{labels_node.GetName()}' is empty (all voxels are 0)")
            if values[0] < 0:
                raise InputError(f"label map '{labels_node.GetName()}' has negative label values")
            entries = _labelmap_entries(labels_node, values)
            dims = labels_node.GetImageData().GetDimensions()
            array = array.reshape(dims[2], dims[1], dims[0])
            _write_volume(labels_node, labels_path)
        else:
            raise InputError(f"'{labels_node.GetName()}' is neither a label map nor a segmentation")
    return ExportedInputs(job_dir, volume_path, labels_path, entries, ijk_to_ras(volume_node), warnings, array)


def write_job(exported: ExportedInputs, options: dict, *, iterations: int | None = None,
              extra: dict | None = None) -> Path:
    """Write job.json (atomically: the worker may be started right after)."""
    job = {
        "version": 1,
        "input": VOLUME_FILE,
        "labels": LABELS_FILE if exported.labels_path else None,
        "output_dir": "output",
        "options": options,
        "iterations": iterations,
        "label_info": {str(v): {"name": e.name, "color": list(e.color)} for v, e in exported.labels.items()},
    }
    if extra:
        job.update(extra)
    path = exported.job_dir / "job.json"
    tmp = path.with_name(f"job.tmp-{os.getpid()}.json")
    tmp.write_text(json.dumps(job, indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path
