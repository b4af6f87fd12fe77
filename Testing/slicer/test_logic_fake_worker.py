"""MedGSLogic on real MRML nodes with fake workers: loading results, crash, error, cancel.

The fake worker (fake_worker.py) speaks the real protocol; these tests check what the Logic
does with it: nodes and geometry on success, and on every failure an unchanged scene (same
node ids, same subject-hierarchy items), one clear message, and the job folder handled as
asked.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import slicer

import MedGS
from MedGSLogicLib import jobs, process

FAKE = Path(__file__).with_name("fake_worker.py")
CROP_LABELS = {2: "kidney_right", 3: "kidney_left", 30: "vertebrae_L2"}  # as in conftest.CROP_LABELS


def fake_runner(mode: str, started: list | None = None):
    def runner(args, env, cwd):
        assert args[1:3] == ["-m", "MedGSLib.worker"]  # the Logic asked for the real worker
        popen = process.subprocess_runner([sys.executable, str(FAKE), mode, args[-1]], env, cwd)
        if started is not None:
            started.append(popen)
        return popen

    return runner


def ras_matrix(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


@pytest.fixture
def case(mrml, abdomen_crop, crop_labels):
    assert crop_labels == CROP_LABELS
    img, lab, a = abdomen_crop
    volume = mrml.add_volume(img, a, "abdomen")
    labels = mrml.add_volume(lab, a, "abdomen labels", labelmap=True)
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "abdomen segmentation")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labels, seg)
    segmentation = seg.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        s = segmentation.GetSegment(segmentation.GetNthSegmentID(i))
        s.SetName(CROP_LABELS[s.GetLabelValue()])
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    sh.CreateItem(sh.GetSceneItemID(), seg)
    return volume, labels, seg


def snapshot(mrml):
    return mrml.node_ids(), mrml.sh_item_count()


def test_success_loads_every_output_with_input_geometry(mrml, case, tmp_path):
    volume, _labels, seg = case
    logic = MedGS.MedGSLogic(runner=fake_runner("success"), jobRoot=tmp_path)
    events = []
    res = logic.process(volume, labels=seg, factor=2, device="cpu", onEvent=events.append, timeout=60)

    a = ras_matrix(volume)
    b = ras_matrix(res.volume)
    assert res.volume.GetImageData().GetDimensions() == (48, 48, 23)  # (12 - 1) * 2 + 1 slices along K
    np.testing.assert_allclose(b[:3, 3], a[:3, 3], atol=1e-4)           # first slice stays where it was
    np.testing.assert_allclose(b[:3, :2], a[:3, :2], atol=1e-5)         # I and J columns unchanged
    np.testing.assert_allclose(b[:3, 2], a[:3, 2] / 2, atol=1e-5)       # K: same direction, half the step
    # The last slice ends at the same physical place as the input's last slice.
    last_in = a @ np.array([0, 0, 11, 1.0])
    last_out = b @ np.array([0, 0, 22, 1.0])
    np.testing.assert_allclose(last_out, last_in, atol=1e-4)

    assert res.labels.IsA("vtkMRMLSegmentationNode")
    segmentation = res.labels.GetSegmentation()
    names = {segmentation.GetSegment(segmentation.GetNthSegmentID(i)).GetName()
             for i in range(segmentation.GetNumberOfSegments())}
    assert names == set(CROP_LABELS.values())  # the user's names, not the engine's "engine-name-N"
    src = seg.GetSegmentation()
    for i in range(src.GetNumberOfSegments()):
        s = src.GetSegment(src.GetNthSegmentID(i))
        out = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(s.GetName()))
        np.testing.assert_allclose(out.GetColor(), s.GetColor(), atol=1e-6)

    assert len(res.models) == 3
    for model in res.models:
        assert model.GetDisplayNode() is not None
        name = model.GetName().replace("abdomen MedGS ", "")
        assert name in CROP_LABELS.values()
        # The box mesh is written in LPS; in the scene it must be RAS and lie on the label's voxels.
        value = {v: k for k, v in CROP_LABELS.items()}[name]
        pts = slicer.util.arrayFromModelPoints(model)
        k, j, i = np.nonzero(slicer.util.arrayFromVolume(_labels) == value)
        ijk = np.array([[i.min(), j.min(), k.min(), 1], [i.max(), j.max(), k.max(), 1]], float)
        ras = (a @ ijk.T).T[:, :3]
        np.testing.assert_allclose(pts.min(axis=0), ras.min(axis=0), atol=1e-3)
        np.testing.assert_allclose(pts.max(axis=0), ras.max(axis=0), atol=1e-3)

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    folder = res.folder_item
    assert sh.GetItemName(folder) == "MedGS abdomen"
    assert sh.GetItemParent(folder) == sh.GetItemParent(sh.GetItemByDataNode(volume))
    for node in res.nodes():
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == folder

    progress = [e for e in events if e.get("event") == "progress"]
    assert [e["iteration"] for e in progress] == [1, 2, 3]
    assert logic.activeJob.progress.text() == "train, 3/3, loss 0.1667, PSNR 23.00 dB, ETA 0 s"
    assert not any(tmp_path.iterdir())  # job folder removed after success


def test_labelmap_output_keeps_label_values_and_names(mrml, case, tmp_path):
    volume, labels, _seg = case
    table = mrml.scene.AddNewNodeByClass("vtkMRMLColorTableNode", "crop colors")
    table.SetTypeToUser()
    table.SetNumberOfColors(31)
    for value, name in CROP_LABELS.items():
        table.SetColor(value, name, 0.2, 0.4, value / 31, 1.0)
    labels.GetDisplayNode().SetAndObserveColorNodeID(table.GetID())
    logic = MedGS.MedGSLogic(runner=fake_runner("success"), jobRoot=tmp_path)
    res = logic.process(volume, labels=labels, factor=2, labelOutputType="labelmap",
                        outputs=("volume", "labels"), timeout=60)
    assert res.labels.IsA("vtkMRMLLabelMapVolumeNode")
    assert res.models == []
    values = set(np.unique(slicer.util.arrayFromVolume(res.labels)).tolist())
    assert values == {0, *CROP_LABELS}
    colors = res.labels.GetDisplayNode().GetColorNode()
    assert {colors.GetColorName(v) for v in CROP_LABELS} == set(CROP_LABELS.values())
    np.testing.assert_allclose(ras_matrix(res.labels), ras_matrix(res.volume), atol=1e-5)


def test_crash_leaves_scene_unchanged_and_keeps_only_the_log(mrml, case, tmp_path):
    volume, _labels, seg = case
    before = snapshot(mrml)
    logic = MedGS.MedGSLogic(runner=fake_runner("crash"), jobRoot=tmp_path)
    with pytest.raises(MedGS.MedGSRunError) as info:
        logic.process(volume, labels=seg, timeout=60)
    assert info.value.kind == "crash"
    assert "stopped unexpectedly (exit code 139)" in str(info.value)
    assert "Segmentation fault" in str(info.value)  # the last raw output is quoted
    assert snapshot(mrml) == before
    (job_dir,) = list(tmp_path.iterdir())
    assert sorted(p.name for p in job_dir.iterdir()) == ["job.json", "worker.log"]  # inputs removed
    assert "Segmentation fault" in (job_dir / "worker.log").read_text()  # raw output saved for the log
    assert str(job_dir) in str(info.value)


def test_error_event_gives_one_clear_message_and_removes_folder_when_asked(mrml, case, tmp_path):
    volume, _labels, seg = case
    before = snapshot(mrml)
    logic = MedGS.MedGSLogic(runner=fake_runner("oom"), jobRoot=tmp_path)
    with pytest.raises(MedGS.MedGSRunError) as info:
        logic.process(volume, labels=seg, keepLogOnFailure=False, timeout=60)
    assert info.value.kind == "out_of_memory"
    assert str(info.value).startswith("MedGS ran out of memory: CUDA out of memory while rendering.")
    assert snapshot(mrml) == before
    assert list(tmp_path.iterdir()) == []


def test_results_that_cannot_be_loaded_leave_no_half_result(mrml, case, tmp_path):
    volume, _labels, seg = case
    before = snapshot(mrml)
    logic = MedGS.MedGSLogic(runner=fake_runner("broken-mesh"), jobRoot=tmp_path)
    with pytest.raises(MedGS.MedGSRunError) as info:
        logic.process(volume, labels=seg, timeout=60)
    assert "could not be loaded" in str(info.value) and "does not exist" in str(info.value)
    assert snapshot(mrml) == before  # the volume and segmentation read fine, yet none was added


def test_cancel_kills_the_process_tree_and_leaves_scene_unchanged(mrml, case, tmp_path):
    volume, _labels, seg = case
    before = snapshot(mrml)
    started = []
    logic = MedGS.MedGSLogic(runner=fake_runner("hang", started), jobRoot=tmp_path)
    job = logic.process(volume, labels=seg, wait=False)
    assert job.state is jobs.JobState.RUNNING
    deadline = time.monotonic() + 30
    while job.progress.iteration < 3 and time.monotonic() < deadline:  # the GUI timer would do this
        job.poll()
        time.sleep(0.02)
    assert job.progress.iteration >= 3
    child_pid = int((job.job_dir / "child.pid").read_text())
    worker_pid = started[0].pid
    assert psutil.pid_exists(child_pid)

    logic.cancel()

    assert job.state is jobs.JobState.CANCELLED
    assert job.error_message == "MedGS was cancelled; the scene is unchanged."
    for pid in (worker_pid, child_pid):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert snapshot(mrml) == before
    assert list(tmp_path.iterdir()) == []  # cancelled: nothing to keep


def test_bad_input_is_refused_before_anything_starts(mrml, case, tmp_path):
    volume, labels, _seg = case
    started = []
    logic = MedGS.MedGSLogic(runner=fake_runner("success", started), jobRoot=tmp_path)
    flat = mrml.add_volume(np.zeros((1, 20, 20), np.int16), np.eye(4), "flat")
    wrong = mrml.add_volume(np.zeros((12, 48, 40), np.uint8), ras_matrix(volume), "wrong grid", labelmap=True)
    shifted_matrix = ras_matrix(volume)
    shifted_matrix[0, 3] += 5.0
    shifted = mrml.add_volume(slicer.util.arrayFromVolume(labels).copy(), shifted_matrix, "shifted", labelmap=True)
    empty_seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    before = snapshot(mrml)

    cases = [
        (dict(inputVolume=flat), "is 2D (20 x 20 x 1 voxels)"),
        (dict(inputVolume=volume, labels=wrong), "does not have the geometry of volume 'abdomen' (size 40x48x12"),
        (dict(inputVolume=volume, labels=shifted), "origin"),
        (dict(inputVolume=volume, labels=empty_seg), "has no segments"),
        (dict(inputVolume=labels), "is a label map"),
        (dict(inputVolume=volume, factor=1.0), "factor must be above 1"),
        (dict(inputVolume=volume, outputs=("models",)), "need a label map or segmentation"),
    ]
    for kwargs, text in cases:
        with pytest.raises(MedGS.InputError) as info:
            logic.process(**kwargs)
        assert text in str(info.value), (kwargs, str(info.value))
        assert snapshot(mrml) == before
    assert started == []                 # no worker was started for bad input
    assert list(tmp_path.iterdir()) == []  # and no job folder left behind


def test_job_json_carries_options_iterations_and_label_names(mrml, case, tmp_path):
    volume, _labels, seg = case
    seen = {}

    def runner(args, env, cwd):
        seen["job"] = json.loads((Path(args[-1]) / "job.json").read_text())
        seen["cwd"], seen["env"] = cwd, env
        return process.subprocess_runner([sys.executable, str(FAKE), "success", args[-1]], env, cwd)

    logic = MedGS.MedGSLogic(runner=runner, jobRoot=tmp_path)
    logic.process(volume, labels=seg, spacing=1.5, axis="K", preset="paper", device="cpu", iterations=7, seed=3,
                  keepEvery=2, timeout=60)
    job = seen["job"]
    assert job["iterations"] == 7
    assert job["options"] == {"factor": None, "spacing": 1.5, "axis": 2, "keep_every": 2, "preset": "paper",
                              "device": "cpu", "seed": 3, "outputs": ["volume", "labels", "meshes"],
                              "mesh_format": "vtk"}
    assert {v["name"] for v in job["label_info"].values()} == set(CROP_LABELS.values())
    assert (Path(seen["cwd"]) / "MedGSLib" / "worker.py").is_file()  # `-m MedGSLib.worker` resolves from cwd


def test_gui_cancel_does_not_block_and_kills_a_worker_that_ignores_sigterm(mrml, case, tmp_path):
    volume, _labels, seg = case
    before = snapshot(mrml)
    started = []
    logic = MedGS.MedGSLogic(runner=fake_runner("stubborn", started), jobRoot=tmp_path)
    job = logic.process(volume, labels=seg, wait=False)
    deadline = time.monotonic() + 30
    while job.progress.iteration < 1 and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.02)
    t0 = time.monotonic()
    job.cancel(wait=False)
    assert time.monotonic() - t0 < 0.5  # the GUI thread is not held up
    assert job.running
    while job.poll():  # what the GUI timer does
        assert time.monotonic() - t0 < 15
        time.sleep(0.05)
    assert job.state is jobs.JobState.CANCELLED
    assert time.monotonic() - t0 >= process.TERMINATE_GRACE_S - 0.5  # SIGTERM first, SIGKILL after the grace
    pid = started[0].pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert snapshot(mrml) == before
