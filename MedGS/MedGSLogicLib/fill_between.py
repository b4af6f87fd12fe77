"""The logic of the Segment Editor effect "MedGS fill between slices", without Qt.

With segments painted on some slices of a source volume:
1. `plan()` finds, per segment, the painted slices (any voxel of that segment) along the
   engine's slice axis, and the union of them: the slices the user has looked at.
2. `start()` runs the engine through the panel's own job (MedGSJob: job.json, the background
   worker, progress, cancel) at factor 1 with `annotated_slices` = that union, so the image
   guides the labels between the painted slices.
3. `masks()` turns the worker's label map into one mask per segment: painted slices exactly
   as painted, the engine's labels between a segment's first and last painted slice, nothing
   outside that range (filling *between* slices never extends a segment).
4. `showPreview()` / `removePreview()` show them in a separate segmentation node.
5. `apply()` saves the Segment Editor's undo state, then replaces each segment's labelmap in
   the same segmentation node: IDs, names, colours and terminology stay as they were.

Nothing here changes the scene before `showPreview()` or `apply()`; a cancelled or failed
run leaves it as it was.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from MedGSLib.errors import InputError

from . import export, jobs, sparse
from .parameters import MedGSParameters


@dataclass
class SegmentSlices:
    segment_id: str
    name: str
    painted: list[int] = field(default_factory=list)

    @property
    def fillable(self) -> bool:
        """Two painted slices or more with empty ones between: something to fill."""
        return len(self.painted) >= 2 and bool(sparse.gaps(self.painted))

    def text(self) -> str:
        if not self.painted:
            return f"{self.name}: not painted"
        if not self.fillable:
            return f"{self.name}: slices {sparse.format_slices(self.painted)} (nothing to fill)"
        return f"{self.name}: painted on slices {sparse.format_slices(self.painted)}"


@dataclass
class FillPlan:
    axis: int                                   # image axis the slices are cut along (0, 1, 2 = I, J, K)
    segments: list[SegmentSlices]
    annotated: list[int]                        # union of the painted slices of the filled segments
    warnings: list[str] = field(default_factory=list)
    arrays: dict = field(default_factory=dict, repr=False)  # segment id -> painted mask (k, j, i), bool

    @property
    def fill_ids(self) -> list[str]:
        return [s.segment_id for s in self.segments if s.fillable]

    def text(self) -> str:
        lines = [f"Slices along {'IJK'[self.axis]}:"] + [f"  {s.text()}" for s in self.segments]
        return "\n".join(lines + [f"Warning: {w}" for w in self.warnings])


def _oriented_image(array_kji: np.ndarray, ijk_to_ras: np.ndarray):
    """A uint8 vtkOrientedImageData holding `array_kji` on the grid of `ijk_to_ras`."""
    import slicer
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    arr = np.ascontiguousarray(array_kji, dtype=np.uint8)
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(arr.shape[2], arr.shape[1], arr.shape[0])
    image.GetPointData().SetScalars(numpy_to_vtk(arr.ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(ijk_to_ras[r, c]))
    image.SetImageToWorldMatrix(m)
    return image


def _along(axis: int, indices, shape_kji) -> tuple:
    """Index tuple selecting slices `indices` along image axis `axis` of a (k, j, i) array."""
    sel = [slice(None)] * 3
    sel[2 - axis] = np.asarray(list(indices), dtype=int)
    return tuple(sel)


class FillBetweenSlicesLogic:
    """Headless: everything the effect does, given the scene and the nodes."""

    def __init__(self, scene, runner=None, python=None, job_root=None):
        self.scene = scene
        self.runner = runner
        self.python = python
        self.job_root = Path(job_root) if job_root else None
        self.job: jobs.MedGSJob | None = None
        self.preview = None            # the preview segmentation node while one is shown
        self._preview_guard = None     # removes it with its display node(s)
        self._hidden_display = None    # (display node, its visibility) of the hidden original

    # -- 1. which slices are painted -----------------------------------------------------

    def plan(self, seg_node, volume_node, segment_ids=None, axis: str = "auto") -> FillPlan:
        if seg_node is None or not seg_node.IsA("vtkMRMLSegmentationNode"):
            raise InputError("select a segmentation")
        export.check_volume(volume_node)
        segmentation = seg_node.GetSegmentation()
        all_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        ids = [s for s in (segment_ids if segment_ids is not None else all_ids) if s in all_ids]
        if not ids:
            raise InputError(f"segmentation '{seg_node.GetName()}' has no segments to fill")
        image_axis = sparse.slice_axis(volume_node, axis)
        arrays = export.segment_arrays(self.scene, seg_node, volume_node, ids)
        segments = [SegmentSlices(sid, segmentation.GetSegment(sid).GetName(),
                                  sparse.painted_slices(arrays[sid], image_axis)) for sid in ids]
        fill = [s for s in segments if s.fillable]
        annotated = sorted({i for s in fill for i in s.painted})
        plan = FillPlan(image_axis, segments, annotated, arrays=arrays)
        if not fill:
            raise InputError("no segment is painted on two slices or more with empty slices between them; "
                             "paint a segment on a few slices (e.g. every 4th) first")
        overlap = export.overlap_warning(seg_node, {s.segment_id: arrays[s.segment_id] for s in fill})
        if overlap:
            plan.warnings.append(overlap)
        return plan

    # -- 2. the run ------------------------------------------------------------------------

    def start(self, seg_node, volume_node, plan: FillPlan, *, preset: str = "fast", device: str = "auto",
              iterations: int = 0, seed: int = 0, on_event=None, config_overrides: dict | None = None,
              keep_log_on_failure: bool = True) -> jobs.MedGSJob:
        """Start the worker (returns at once); drive it with job.poll() (GUI timer) or job.wait()."""
        if self.job is not None and self.job.running:
            raise InputError("a MedGS run is already in progress; cancel it or wait for it to finish")
        params = MedGSParameters(axis="IJK"[plan.axis], resampleMode="factor", factor=1.0, preset=preset,
                                 device=device, outputVolume=False, outputLabels=True, outputModels=False,
                                 labelOutputType="labelmap", sparse=True, iterations=iterations, seed=seed,
                                 keepLogOnFailure=keep_log_on_failure)
        job = jobs.MedGSJob(self.scene, volume_node, seg_node, params, runner=self.runner, python=self.python,
                            job_root=self.job_root, on_event=on_event, segment_ids=plan.fill_ids,
                            add_to_scene=False, config_overrides=config_overrides)
        job.start()
        if job.annotated_slices != plan.annotated:  # the export and the plan read the same segments
            job.cancel()
            raise InputError(f"the painted slices changed while starting ({job.annotated_slices} vs "
                             f"{plan.annotated}); try again")
        self.job = job
        return job

    # -- 3. the result as one mask per segment ---------------------------------------------

    def masks(self, job: jobs.MedGSJob, plan: FillPlan) -> dict[str, np.ndarray]:
        if job.state is not jobs.JobState.COMPLETED or job.results is None or job.results.labels is None:
            raise InputError(job.error_message or "the MedGS run gave no label map")
        from vtk.util.numpy_support import vtk_to_numpy

        image = job.results.labels.GetImageData()
        dims = image.GetDimensions()
        labels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
        painted = next(iter(plan.arrays.values()))
        if labels.shape != painted.shape:
            raise InputError(f"the MedGS label map has {labels.shape} voxels, the segments {painted.shape}")
        value_of = {e.segment_id: v for v, e in job.exported.labels.items()}
        out = {}
        for seg in plan.segments:
            if not seg.fillable:
                continue
            mask = labels == value_of.get(seg.segment_id, -1)
            known = _along(plan.axis, plan.annotated, mask.shape)
            mask[known] = plan.arrays[seg.segment_id][known]      # the user's slices, exactly as painted
            outside = [i for i in range(mask.shape[2 - plan.axis]) if i < seg.painted[0] or i > seg.painted[-1]]
            if outside:
                mask[_along(plan.axis, outside, mask.shape)] = False  # between slices only, never beyond
            out[seg.segment_id] = mask
        return out

    # -- 4. preview --------------------------------------------------------------------------

    def showPreview(self, seg_node, volume_node, masks: dict[str, np.ndarray]):
        """A separate segmentation node with the filled segments; the original is hidden meanwhile."""
        import slicer

        self.removePreview()
        self._preview_guard = export.SceneGuard(self.scene)
        preview = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{seg_node.GetName()} MedGS preview")
        preview.CreateDefaultDisplayNodes()
        preview.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        preview.SetAttribute("MedGS.Preview", "1")
        source = seg_node.GetSegmentation()
        for sid in masks:
            segment = slicer.vtkSegment()
            segment.DeepCopyMetadata(source.GetSegment(sid))
            preview.GetSegmentation().AddSegment(segment, sid)
        self._write(preview, volume_node, masks)
        display = seg_node.GetDisplayNode()
        if display is not None:
            self._hidden_display = (display, display.GetVisibility())
            display.SetVisibility(False)
        self.preview = preview
        return preview

    def removePreview(self) -> None:
        if self._preview_guard is not None:
            self._preview_guard.rollback()
        self.preview = self._preview_guard = None
        if self._hidden_display is not None:
            display, visible = self._hidden_display
            display.SetVisibility(visible)
            self._hidden_display = None

    # -- 5. apply ------------------------------------------------------------------------------

    def apply(self, seg_node, volume_node, masks: dict[str, np.ndarray], saveStateForUndo=None) -> list[str]:
        """Write the masks into the same segments (undo state saved first); returns the IDs written."""
        segmentation = seg_node.GetSegmentation()
        missing = [sid for sid in masks if segmentation.GetSegment(sid) is None]
        if missing:
            raise InputError(f"segment(s) {missing} were deleted meanwhile; run again")
        self.removePreview()
        if saveStateForUndo is not None:
            saveStateForUndo()
        self._write(seg_node, volume_node, masks)
        return list(masks)

    def _write(self, seg_node, volume_node, masks: dict[str, np.ndarray]) -> None:
        import slicer

        logic = slicer.vtkSlicerSegmentationsModuleLogic
        matrix = export.ijk_to_ras(volume_node)
        for sid, mask in masks.items():
            image = _oriented_image(mask, matrix)
            if not logic.SetBinaryLabelmapToSegment(image, seg_node, sid, logic.MODE_REPLACE):
                raise InputError(f"segment '{sid}' could not be updated")

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
        self.removePreview()
