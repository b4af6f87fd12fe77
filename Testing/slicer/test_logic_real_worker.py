"""End to end: MedGSLogic on real MRML nodes, the real worker (`python -m MedGSLib.worker`)
trained for a few iterations on the CPU on a 48 x 48 x 12 crop of the real ct_abdomen3mm
case with three of its labels as a named segmentation.

Needs the engine (MedGSLib.api.run_to_files) and torch; every output node is checked in RAS
against the input.
"""
from __future__ import annotations

import numpy as np
import slicer
import vtk

import MedGS
from MedGSLogicLib import export

ITERATIONS = 6   # plumbing: the kept slices are pasted back, so few steps check the same


def ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def test_real_worker_on_a_real_crop(mrml, abdomen_crop, crop_labels, tmp_path):
    img, lab, a = abdomen_crop
    volume = mrml.add_volume(img, a, "abdomen")
    labelmap = mrml.add_volume(lab, a, "abdomen labels", labelmap=True)
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "abdomen segmentation")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, seg)
    segmentation = seg.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        s = segmentation.GetSegment(segmentation.GetNthSegmentID(i))
        s.SetName(crop_labels[s.GetLabelValue()])
    before = set(mrml.node_ids())

    events = []
    logic = MedGS.MedGSLogic(jobRoot=tmp_path)
    try:
        res = logic.process(volume, labels=seg, factor=2, device="cpu", iterations=ITERATIONS,
                            onEvent=events.append, timeout=240)
    except MedGS.MedGSRunError as err:
        raise AssertionError(f"{err}\n--- worker output ---\n" + "\n".join(err.job.log_lines)) from err

    # Volume: same orientation and first-slice origin, half the spacing along K, 2 * 12 - 1 slices.
    b = ras(res.volume)
    assert res.volume.GetImageData().GetDimensions() == (48, 48, 23)
    np.testing.assert_allclose(b[:3, :2], a[:3, :2], atol=1e-4)
    np.testing.assert_allclose(b[:3, 2], a[:3, 2] / 2, atol=1e-4)
    np.testing.assert_allclose(b[:3, 3], a[:3, 3], atol=1e-3)
    out = slicer.util.arrayFromVolume(res.volume).astype(np.float64)
    for k in (0, 5, 11):  # output slice 2k lies on input slice k: trained there, so it must resemble it
        r = np.corrcoef(out[2 * k].ravel(), img[k].astype(np.float64).ravel())[0, 1]
        assert r > 0.5, (k, r)

    # Segmentation: the user's segment names, on the output volume's grid.
    assert res.labels.IsA("vtkMRMLSegmentationNode")
    out_seg = res.labels.GetSegmentation()
    names = {out_seg.GetSegment(out_seg.GetNthSegmentID(i)).GetName() for i in range(out_seg.GetNumberOfSegments())}
    assert names <= set(crop_labels.values()) and len(names) >= 2

    # Models: in RAS, where the labels are (an LPS/RAS mix-up would move them by > 100 mm).
    assert 2 <= len(res.models) <= 3
    for model in res.models:
        name = model.GetName().replace("abdomen MedGS ", "")
        value = {v: k for k, v in crop_labels.items()}[name]
        k, j, i = np.nonzero(lab == value)
        centre = (a @ np.array([i.mean(), j.mean(), k.mean(), 1.0]))[:3]
        pts = slicer.util.arrayFromModelPoints(model)
        assert len(pts) > 20
        assert np.linalg.norm(pts.mean(axis=0) - centre) < 12.0, (name, pts.mean(axis=0), centre)

    # Grouped next to the input, and nothing but the results was added.
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    for node in res.nodes():
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == res.folder_item
    added = set(mrml.node_ids()) - before
    result_ids = {n.GetID() for n in res.nodes()}
    assert result_ids <= added
    assert all(mrml.scene.GetNodeByID(i).IsA("vtkMRMLDisplayNode") or mrml.scene.GetNodeByID(i).IsA(
        "vtkMRMLStorageNode") or mrml.scene.GetNodeByID(i).IsA("vtkMRMLColorNode") or i in result_ids for i in added)

    progress = [e for e in events if e.get("event") == "progress"]
    assert progress and any(e.get("stage") == "train" for e in progress)
    assert logic.activeJob.job_dir is not None and not logic.activeJob.job_dir.exists()  # cleaned up
    assert export.auto_axis(volume) == "K"
