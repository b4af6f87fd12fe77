"""The panel's sparse mode ("labels are drawn on some slices only") and the output defects of
issue 12, on real MRML nodes: the 48 x 48 x 17 ct_abdomen3mm crop painted on every 4th slice.

Job contents and what comes back are checked with the fake worker (fast); one run uses the
real CPU worker for a few iterations through MedGSLogic.process(sparse=True, factor=1).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import slicer

import MedGS
from conftest import SPARSE_LABELS, painted_segmentation
from MedGSLib.errors import InputError
from MedGSLogicLib import export, jobs, parameters, process, sparse

FAKE = Path(__file__).with_name("fake_worker.py")
PAINTED = [0, 4, 8, 12, 16]
GAPS = [k for k in range(17) if k not in PAINTED]


def fake_runner(mode):
    def runner(args, env, cwd):
        return process.subprocess_runner([sys.executable, str(FAKE), mode, args[-1]], env, cwd)
    return runner


def metadata(seg):
    s = seg.GetSegmentation()
    out = []
    for i in range(s.GetNumberOfSegments()):
        sid = s.GetNthSegmentID(i)
        segment = s.GetSegment(sid)
        out.append((sid, segment.GetName(), tuple(round(c, 6) for c in segment.GetColor()), segment.GetTerminology()))
    return out


def reference_geometry(seg) -> str:
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    return seg.GetSegmentation().GetConversionParameter(name)


@pytest.fixture
def painted(mrml, sparse_crop):
    img, lab, a = sparse_crop
    volume = mrml.add_volume(img, a, "abdomen")
    seg, sparse_lab = painted_segmentation(mrml, lab, a, SPARSE_LABELS)
    return volume, seg, lab, sparse_lab, a


def test_factor_one_only_in_sparse_mode():
    p = parameters.MedGSParameters(factor=1.0)
    with pytest.raises(InputError, match="1 only with 'labels are drawn on some slices only'"):
        p.validate()
    p.sparse = True
    p.validate()
    assert p.engine_options(has_labels=True, annotated_slices=[0, 4])["annotated_slices"] == [0, 4]
    assert p.engine_options(has_labels=True)["annotated_slices"] == "auto"
    assert "annotated_slices" not in parameters.MedGSParameters().engine_options(has_labels=True)
    with pytest.raises(InputError, match="needs a label map or segmentation"):
        p.engine_options(has_labels=False)


def test_sparse_mode_is_stored_on_the_parameter_node(mrml):
    logic = MedGS.MedGSLogic()
    params = logic.getParameters()
    assert params.sparse is False
    params.sparse, params.factor = True, 1.0
    logic.setParameters(params)
    assert (logic.getParameters().sparse, logic.getParameters().factor) == (True, 1.0)


def test_sparse_report_for_segmentation_and_labelmap(mrml, painted):
    volume, seg, _, sparse_lab, a = painted
    before = mrml.node_ids()
    rep = MedGS.MedGSLogic().sparseReport(volume, seg)
    assert mrml.node_ids() == before
    assert (rep.axis, rep.painted, rep.empty_between, rep.sparse) == (2, PAINTED, GAPS, True)
    assert rep.text() == "labels drawn on 5 slices along K (0, 4, 8, 12, 16); 12 empty slices between them"
    labelmap = mrml.add_volume(sparse_lab, a, "painted labelmap", labelmap=True)
    assert MedGS.MedGSLogic().sparseReport(volume, labelmap).painted == PAINTED
    dense = mrml.add_volume(np.ones_like(sparse_lab), a, "dense", labelmap=True)
    assert not MedGS.MedGSLogic().sparseReport(volume, dense).sparse
    assert sparse.painted_slices(sparse_lab, 0) == sorted(set(np.nonzero(sparse_lab)[2].tolist()))


def run_fake(mrml, volume, labels, tmp_path, mode="success", **changes):
    params = parameters.MedGSParameters(device="cpu", keepJobFolder=True, outputModels=False, **changes)
    events = []
    logic = MedGS.MedGSLogic(runner=fake_runner(mode), jobRoot=tmp_path)
    job = logic.startJob(volume, labels, params, onEvent=events.append)
    spec = json.loads((job.job_dir / "job.json").read_text())
    assert job.wait(60)
    return job, spec, events


def test_sparse_mode_job_and_output_segmentation(mrml, painted, tmp_path, vtk_log):
    volume, seg, _, _, a = painted
    job, spec, events = run_fake(mrml, volume, seg, tmp_path, sparse=True, factor=1.0, outputVolume=False)
    assert job.state is jobs.JobState.COMPLETED, job.error_message
    assert spec["options"]["annotated_slices"] == PAINTED
    assert spec["options"]["factor"] == 1.0
    assert spec["options"]["outputs"] == ["labels"]
    assert job.warnings == []
    out = job.results.labels
    assert out.IsA("vtkMRMLSegmentationNode") and job.results.volume is None
    assert metadata(out) == metadata(seg)  # segment IDs, names, colours, terminology
    assert reference_geometry(out) != ""   # a geometry although no volume was output
    expected = slicer.vtkMRMLSegmentationNode()
    expected.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    got, want = ([float(v) for v in reference_geometry(n).strip(";").split(";")] for n in (out, expected))
    np.testing.assert_allclose(got, want, atol=1e-6)  # the input volume's grid (factor 1)
    assert vtk_log.errors() == [], vtk_log.text()  # no "CreateDefaultDisplayNodes failed: Scene is invalid"


def test_sparse_input_with_the_mode_off_is_warned(mrml, painted, tmp_path):
    volume, seg, _, _, _ = painted
    job, spec, events = run_fake(mrml, volume, seg, tmp_path)
    assert "annotated_slices" not in spec["options"]
    assert len(job.warnings) == 1 and job.warnings[0].startswith("The labels are drawn on some slices only (labels "
                                                                 "drawn on 5 slices along K (0, 4, 8, 12, 16)")
    warned = [e for e in events if e.get("event") == "log" and e.get("level") == "warning"]
    assert [e["message"] for e in warned] == job.warnings


def test_overlapping_segments_are_warned_by_the_panel(mrml, painted, tmp_path):
    volume, seg, _, _, _ = painted
    s = seg.GetSegmentation()
    ids = [s.GetNthSegmentID(i) for i in range(s.GetNumberOfSegments())]
    arrays = export.segment_arrays(mrml.scene, seg, volume, ids)
    slicer.util.updateSegmentBinaryLabelmapFromArray((arrays[ids[2]] | arrays[ids[0]]).astype(np.uint8), seg,
                                                     ids[2], volume)
    job, _, events = run_fake(mrml, volume, seg, tmp_path, sparse=True, factor=2.0)
    overlap = [w for w in job.warnings if "overlap" in w]
    assert overlap == [f"segments 'kidney_right', 'aorta' overlap in {int(arrays[ids[0]].sum())} voxels; MedGS gives "
                       "each voxel one label, the later segment in the list wins there"]


def test_each_engine_log_line_is_shown_once(mrml, painted, tmp_path):
    volume, seg, _, _, _ = painted
    job, _, events = run_fake(mrml, volume, seg, tmp_path, mode="twice-logged", sparse=True, factor=2.0)
    assert job.state is jobs.JobState.COMPLETED
    shown = [e["message"] for e in events if e.get("event") == "log"]
    assert shown.count("step 100: densify") == 1
    assert job.log_lines.count("step 100: densify") == 1


def test_labelmap_output_keeps_names_and_is_a_labelmap(mrml, painted, tmp_path):
    volume, seg, _, _, _ = painted
    job, _, _ = run_fake(mrml, volume, seg, tmp_path, sparse=True, factor=1.0, labelOutputType="labelmap",
                         outputVolume=False)
    out = job.results.labels
    assert out.IsA("vtkMRMLLabelMapVolumeNode")
    colors = out.GetDisplayNode().GetColorNode()
    assert [colors.GetColorName(v) for v in (1, 2, 3)] == ["kidney_right", "kidney_left", "aorta"]


def test_panel_sparse_mode_with_the_real_worker(mrml, painted, tmp_path, vtk_log):
    volume, seg, lab, sparse_lab, _ = painted
    try:
        res = MedGS.MedGSLogic(jobRoot=tmp_path).process(
            volume, labels=seg, factor=1, sparse=True, outputs=("labels",), device="cpu", iterations=20,
            timeout=300)
    except MedGS.MedGSRunError as err:
        raise AssertionError(f"{err}\n" + "\n".join(err.job.log_lines)) from err
    out = res.labels
    assert metadata(out) == metadata(seg)
    s = out.GetSegmentation()
    ids = [s.GetNthSegmentID(i) for i in range(s.GetNumberOfSegments())]
    arrays = export.segment_arrays(mrml.scene, out, volume, ids)
    flat = np.zeros(sparse_lab.shape, np.uint8)
    for value, sid in zip((2, 3, 52), ids):
        flat[arrays[sid]] = value
    # trained on the painted slices with their labels: they come back as painted, almost exactly
    agree = np.mean(flat[PAINTED] == sparse_lab[PAINTED])
    assert agree > 0.9, agree  # 20 iterations: 0.943 here
    assert np.count_nonzero(flat[GAPS]) > 0  # and the empty slices between them get labels
    assert vtk_log.errors() == [], vtk_log.text()


@pytest.mark.parametrize("value, ok", [("auto", True), ([0, 4, 8], True), (None, True), ("every 4th", False),
                                       ([0, 1.5], False), ([-1, 3], False), ([True, 2], False)])
def test_worker_reads_annotated_slices(tmp_path, value, ok):
    from MedGSLib import worker

    (tmp_path / "job.json").write_text(json.dumps({"version": 1, "input": "input/volume.nrrd",
                                                   "options": {"factor": 1.0, "annotated_slices": value}}))
    if ok:
        assert worker.read_job(tmp_path)["options"]["annotated_slices"] == value
    else:
        with pytest.raises(worker.JobError, match="'annotated_slices' must be \"auto\", a list of slice"):
            worker.read_job(tmp_path)


def test_panel_line_of_the_self_check():
    from MedGSLogicLib.jobs import self_check_text
    assert self_check_text({"event": "result"}) == ""
    ev = {"self_check": {"gain_db": 0.4321, "dice_gain": 0.0123, "frames": [3, 9], "choice": "model_0.5",
                         "estimate_frames": 7}}
    assert self_check_text(ev) == ("Estimated gain over linear +0.43 dB, Dice +0.012 (self-check on 2 held-out "
                                   "kept slices and 7 kept slices at twice the gap).")
    ev = {"self_check": {"gain_db": 0.0, "frames": [4], "choice": "linear"}}
    assert self_check_text(ev).endswith("so linear interpolation was delivered.")
    ev = {"self_check": {"gain_db": 1.25, "frames": [4, 10], "choice": "lanczos"}}
    assert self_check_text(ev) == ("Estimated gain over linear +1.25 dB (self-check on 2 held-out kept slices). "
                                   "MedGS measured worse than Lanczos here, so Lanczos interpolation was delivered.")


def test_panel_line_names_the_labels_delivered_and_a_better_linear():
    from MedGSLogicLib.jobs import self_check_text
    ev = {"self_check": {"gain_db": 0.2, "frames": [3], "choice": "blend", "label_choice": "blend",
                         "label_measured_best": "linear", "label_dice": {"blend": 0.61, "linear": 0.65}}}
    assert self_check_text(ev) == ("Estimated gain over linear +0.20 dB (self-check on 1 held-out kept slices). "
                                   "Labels: MedGS's in-between labels (measured better than the label heads alone). "
                                   "Linear label interpolation measured Dice 0.040 better on these slices (Python "
                                   "console: schedule.deliver_labels='linear' gives it).")
    ev["self_check"].update(label_choice="model_1", label_measured_best="model_1")
    assert self_check_text(ev) == "Estimated gain over linear +0.20 dB (self-check on 1 held-out kept slices)."


def test_panel_line_when_medgs_is_kept_against_the_held_out_slices():
    from MedGSLogicLib.jobs import self_check_text
    ev = {"self_check": {"gain_db": -0.31, "frames": [3], "choice": "model_0.5", "measured_best": "linear"}}
    assert self_check_text(ev) == ("Estimated gain over linear -0.31 dB (self-check on 1 held-out kept slices). linear "
                                   "measured better on these slices, not significantly over the kept slices: MedGS "
                                   "was delivered (Python console: schedule.deliver='linear' gives linear).")
