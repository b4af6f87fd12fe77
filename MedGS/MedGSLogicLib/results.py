"""Turn the worker's output files into scene nodes, all or nothing.

Every file is read into nodes that are not yet in the scene. Only when all of them were read
and checked are they added, grouped in one subject-hierarchy folder next to the input volume;
if adding fails half-way, `SceneGuard` removes what was added. The scene never holds half a
result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from MedGSLib.errors import MedGSError

from .export import LabelEntry, SceneGuard, ijk_to_ras


class ResultError(MedGSError):
    """The worker's outputs are missing, unreadable or do not fit the input."""


@dataclass
class LoadedResults:
    volume: object | None = None          # vtkMRMLScalarVolumeNode
    labels: object | None = None          # vtkMRMLSegmentationNode or vtkMRMLLabelMapVolumeNode
    models: list = field(default_factory=list)  # vtkMRMLModelNode, one per label
    folder_item: int = 0                  # subject-hierarchy folder holding them

    def nodes(self) -> list:
        return [n for n in [self.volume, self.labels, *self.models] if n is not None]


def _resolve(path: str, out_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else out_dir / p


def _read_volume(path: Path, class_name: str):
    import slicer

    if not path.is_file():
        raise ResultError(f"the worker reported {path.name} but the file does not exist")
    node = getattr(slicer, class_name)()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if class_name == "vtkMRMLLabelMapVolumeNode":
        storage.SetCenterImage(False)
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise ResultError(f"{path.name} could not be read as a volume")
    return node


def _read_model(path: Path):
    import slicer

    if not path.is_file():
        raise ResultError(f"the worker reported {path.name} but the file does not exist")
    node = slicer.vtkMRMLModelNode()
    storage = slicer.vtkMRMLModelStorageNode()
    storage.SetFileName(str(path))
    # MedGSLib writes meshes in LPS with Slicer's header (as Slicer itself does); the storage
    # node honours the header and converts to RAS.
    if not storage.ReadData(node) or node.GetPolyData() is None:
        raise ResultError(f"{path.name} could not be read as a surface model")
    return node


def _check_orientation(input_node, output_node, what: str) -> None:
    a, b = ijk_to_ras(input_node), ijk_to_ras(output_node)
    da = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)
    db = b[:3, :3] / np.linalg.norm(b[:3, :3], axis=0)
    if not np.allclose(da, db, atol=1e-4):
        raise ResultError(f"the {what} came back with a different orientation than the input; it was not loaded")
    if not np.allclose(a[:3, 3], b[:3, 3], atol=1e-2 * float(np.min(np.linalg.norm(a[:3, :3], axis=0)))):
        raise ResultError(f"the {what} came back with a different origin than the input; it was not loaded")


def _binary_of(image, value: int):
    """vtkOrientedImageData (0/1, uint8) of the voxels equal to `value`, same geometry as `image`."""
    import slicer
    import vtk

    threshold = vtk.vtkImageThreshold()
    threshold.SetInputData(image)
    threshold.ThresholdBetween(value, value)
    threshold.SetInValue(1)
    threshold.SetOutValue(0)
    threshold.SetOutputScalarTypeToUnsignedChar()
    threshold.Update()
    binary = slicer.vtkOrientedImageData()
    binary.ShallowCopy(threshold.GetOutput())
    binary.CopyDirections(image)
    return binary


def _labels_to_segmentation(labelmap, entries: dict[int, LabelEntry], name: str, source=None):
    """A segmentation with one segment per entry, built without a scene.

    Segments that came from an input segment (`source`) keep its ID, name, colour and tags
    (terminology); the reference geometry is the label map's, so the segmentation has one
    even when no volume is output. Built segment by segment (no ImportLabelmapToSegmentationNode:
    on a node not yet in the scene it tries to make display nodes and logs an error).
    """
    import slicer

    seg = slicer.vtkMRMLSegmentationNode()
    seg.SetName(name)
    seg.SetReferenceImageGeometryParameterFromVolumeNode(labelmap)
    image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(labelmap)
    if image is None:
        raise ResultError("the label output could not be turned into a segmentation")
    from vtk.util.numpy_support import vtk_to_numpy

    present = set(np.unique(vtk_to_numpy(image.GetPointData().GetScalars())).tolist()) - {0}
    source_segmentation = source.GetSegmentation() if source is not None else None
    binary_name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    segmentation = seg.GetSegmentation()
    for value in sorted(set(entries) | present):
        entry = entries.get(value, LabelEntry(f"Label {value}", (0.8, 0.8, 0.2)))
        segment = slicer.vtkSegment()
        original = (source_segmentation.GetSegment(entry.segment_id)
                    if source_segmentation is not None and entry.segment_id else None)
        if original is not None:
            segment.DeepCopyMetadata(original)
        else:
            segment.SetName(entry.name)
            segment.SetColor(*entry.color)
        segment.SetLabelValue(1)
        segment.AddRepresentation(binary_name, _binary_of(image, int(value)))
        segment_id = entry.segment_id if original is not None else ""
        segmentation.AddSegment(segment, segment_id)
    return seg


def label_entries(outputs: dict, known: dict[int, LabelEntry]) -> dict[int, LabelEntry]:
    """Names/colours we sent win (they are the user's); the engine's fill the gaps."""
    entries = dict(known)
    for key, info in (outputs.get("meshes") or {}).items():
        value = int(key)
        if value not in entries and isinstance(info, dict):
            color = info.get("color") or (0.8, 0.8, 0.2)
            entries[value] = LabelEntry(str(info.get("name") or f"Label {value}"), tuple(float(c) for c in color[:3]))
    return entries


def read_results(outputs: dict, out_dir: Path, input_volume, known_labels: dict[int, LabelEntry], *,
                 label_output_type: str = "segmentation", base_name: str | None = None,
                 source_segmentation=None) -> LoadedResults:
    """Read every reported output into detached nodes (the scene is not touched).

    `source_segmentation`: the input segmentation, whose segment IDs and terminology the
    output segmentation keeps.
    """
    base = base_name or f"{input_volume.GetName()} MedGS"
    out_dir = Path(out_dir)
    entries = label_entries(outputs, known_labels)
    res = LoadedResults()
    if outputs.get("volume"):
        res.volume = _read_volume(_resolve(outputs["volume"], out_dir), "vtkMRMLScalarVolumeNode")
        res.volume.SetName(base)
        _check_orientation(input_volume, res.volume, "volume")
    if outputs.get("labels"):
        labelmap = _read_volume(_resolve(outputs["labels"], out_dir), "vtkMRMLLabelMapVolumeNode")
        _check_orientation(input_volume, labelmap, "label map")
        if label_output_type == "segmentation":
            res.labels = _labels_to_segmentation(labelmap, entries, f"{base} segmentation", source_segmentation)
        else:
            labelmap.SetName(f"{base} labels")
            res.labels = labelmap
    for key, info in sorted((outputs.get("meshes") or {}).items(), key=lambda kv: int(kv[0])):
        value = int(key)
        path = info.get("path") if isinstance(info, dict) else info
        model = _read_model(_resolve(path, out_dir))
        entry = entries.get(value, LabelEntry(f"Label {value}", (0.8, 0.8, 0.2)))
        model.SetName(f"{base} {entry.name}")
        model.SetAttribute("MedGS.LabelValue", str(value))
        model.SetAttribute("MedGS.Color", " ".join(f"{c:.4f}" for c in entry.color))
        res.models.append(model)
    if not res.nodes():
        raise ResultError("the worker finished but reported no outputs")
    return res


def add_results_to_scene(scene, res: LoadedResults, input_volume, label_entries: dict[int, LabelEntry] | None = None,
                         folder_name: str | None = None) -> LoadedResults:
    """Add the detached nodes with display nodes, transform and subject-hierarchy folder."""
    import slicer

    guard = SceneGuard(scene)
    try:
        transform_id = input_volume.GetTransformNodeID()
        for node in res.nodes():
            scene.AddNode(node)
            node.CreateDefaultDisplayNodes()
            if transform_id:
                node.SetAndObserveTransformNodeID(transform_id)
        if isinstance(res.labels, slicer.vtkMRMLSegmentationNode) and res.volume is not None:
            res.labels.SetReferenceImageGeometryParameterFromVolumeNode(res.volume)
        if isinstance(res.labels, slicer.vtkMRMLLabelMapVolumeNode) and res.labels.GetDisplayNode() is not None:
            color = _label_color_table(scene, res.labels.GetName(), label_entries or {})
            if color is not None:
                res.labels.GetDisplayNode().SetAndObserveColorNodeID(color.GetID())
        for model in res.models:
            text = model.GetAttribute("MedGS.Color")
            if text and model.GetDisplayNode() is not None:
                model.GetDisplayNode().SetColor(*[float(c) for c in text.split()])
        res.folder_item = _group_in_subject_hierarchy(scene, res, input_volume, folder_name)
        return res
    except Exception:
        guard.rollback()
        raise


def _label_color_table(scene, name: str, entries: dict[int, LabelEntry]):
    if not entries:
        return None
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", f"{name} colors")
    table.SetTypeToUser()
    table.SetNumberOfColors(max(entries) + 1)
    table.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for value, entry in entries.items():
        table.SetColor(value, entry.name, *entry.color, 1.0)
    return table


def _group_in_subject_hierarchy(scene, res: LoadedResults, input_volume, folder_name: str | None) -> int:
    """One folder, in the same place (patient/study) as the input volume, holding every output."""
    import slicer

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is None:
        return 0
    input_item = sh.GetItemByDataNode(input_volume)
    parent = sh.GetItemParent(input_item) if input_item else sh.GetSceneItemID()
    folder = sh.CreateFolderItem(parent or sh.GetSceneItemID(), folder_name or f"MedGS {input_volume.GetName()}")
    for node in res.nodes():
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, folder)
        else:  # outside the Slicer app nothing creates items automatically
            sh.CreateItem(folder, node)
    return folder
