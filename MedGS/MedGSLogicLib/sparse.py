"""Labels drawn on some slices only: which slices are painted, and is the input sparse at all.

A slice is *annotated* (painted) when it holds any non-zero voxel. An input is *sparse* when
there are empty slices between its first and last painted slice: trained as it is, those
slices would teach MedGS "background here", so the panel offers sparse mode, and the Segment
Editor effect passes the painted slices to the engine as `annotated_slices`.

Arrays are Slicer's (k, j, i) numpy order; slice indices are along the image axis the engine
cuts (0 = I, 1 = J, 2 = K), whose "auto" rule is the engine's own (`MedGSLib.frames.choose_axis`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from MedGSLib.frames import choose_axis
from MedGSLib.geometry import Geometry

from .export import ijk_to_ras


def slice_axis(volume_node, axis: str = "auto") -> int:
    """The image axis (0, 1, 2 = I, J, K) the engine will cut this volume along."""
    spacing = np.linalg.norm(ijk_to_ras(volume_node)[:3, :3], axis=0)
    return choose_axis(Geometry(tuple(float(s) for s in spacing)), "auto" if axis == "auto" else "IJK".index(axis))


def painted_slices(array_kji: np.ndarray, image_axis: int) -> list[int]:
    """Indices along `image_axis` of the slices with any non-zero voxel."""
    arr = np.asarray(array_kji)
    numpy_axis = 2 - int(image_axis)  # (k, j, i): image axis I is numpy axis 2
    other = tuple(a for a in range(3) if a != numpy_axis)
    return [int(i) for i in np.flatnonzero(np.any(arr != 0, axis=other))]


def gaps(painted: list[int]) -> list[int]:
    """Empty slices between the first and the last painted one."""
    if len(painted) < 2:
        return []
    have = set(painted)
    return [i for i in range(painted[0], painted[-1] + 1) if i not in have]


def format_slices(indices: list[int], limit: int = 12) -> str:
    """"0, 4, 8, ... 40 (11 slices)": short enough for a label in the panel."""
    if not indices:
        return "none"
    if len(indices) <= limit:
        return ", ".join(str(i) for i in indices)
    head = ", ".join(str(i) for i in indices[: limit - 1])
    return f"{head}, ... {indices[-1]} ({len(indices)} slices)"


@dataclass
class SparseReport:
    """What the panel shows about a label input: painted slices, empty slices between them."""

    axis: int
    painted: list[int] = field(default_factory=list)
    empty_between: list[int] = field(default_factory=list)

    @property
    def sparse(self) -> bool:
        return bool(self.empty_between)

    def text(self) -> str:
        letter = "IJK"[self.axis]
        if not self.sparse:
            return f"labels on every slice along {letter} between {self.painted[0]} and {self.painted[-1]}" \
                if self.painted else "no painted slice"
        return (f"labels drawn on {len(self.painted)} slices along {letter} ({format_slices(self.painted)}); "
                f"{len(self.empty_between)} empty slices between them")


def report(array_kji: np.ndarray, image_axis: int) -> SparseReport:
    painted = painted_slices(array_kji, image_axis)
    return SparseReport(int(image_axis), painted, gaps(painted))


def sparse_warning(rep: SparseReport) -> str:
    """The warning for a sparse input trained with sparse mode off."""
    return (f"The labels are drawn on some slices only ({rep.text()}). With 'labels are drawn on some slices "
            "only' off, MedGS learns background on the empty slices and the labels come out eroded; turn it on.")


def label_report(scene, volume_node, labels_node, axis: str = "auto") -> SparseReport | None:
    """The report for the panel's label input, or None when it cannot be read (the run says why)."""
    from MedGSLib.errors import InputError

    from . import export

    if volume_node is None or labels_node is None or volume_node.GetImageData() is None:
        return None
    try:
        if labels_node.IsA("vtkMRMLSegmentationNode"):
            segmentation = labels_node.GetSegmentation()
            ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
            if not ids:
                return None
            guard = export.SceneGuard(scene)
            try:
                labelmap = export._export_labelmap(scene, labels_node, volume_node, ids)
                dims = labelmap.GetImageData().GetDimensions()
                array = export._voxels(labelmap).reshape(dims[2], dims[1], dims[0]).copy()
            finally:
                guard.rollback()
        else:
            image = labels_node.GetImageData()
            if image is None or image.GetDimensions() != volume_node.GetImageData().GetDimensions():
                return None
            dims = image.GetDimensions()
            array = export._voxels(labels_node).reshape(dims[2], dims[1], dims[0])
        return report(array, slice_axis(volume_node, axis))
    except InputError:
        return None
