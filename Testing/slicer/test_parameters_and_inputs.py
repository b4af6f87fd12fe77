"""Parameter node (saved with the scene and read back), option mapping, axis names, and the
Module class under the stubbed application."""
from __future__ import annotations

import types

import numpy as np
import pytest
import slicer

import MedGS
from MedGSLogicLib import export, parameters
from MedGSLogicLib.parameters import MedGSParameters


def test_parameters_survive_scene_save_and_reload(mrml, tmp_path):
    volume = mrml.add_volume(np.zeros((4, 5, 6), np.int16), np.diag([1, 1, 3, 1.0]), "ct")
    labels = mrml.add_volume(np.zeros((4, 5, 6), np.uint8), np.diag([1, 1, 3, 1.0]), "ct labels", labelmap=True)
    logic = MedGS.MedGSLogic(jobRoot=tmp_path)
    node = logic.getParameterNode()
    assert logic.getParameterNode() is node  # a singleton, like Slicer's
    assert logic.getParameters() == MedGSParameters()  # defaults filled in on creation
    chosen = MedGSParameters(axis="J", resampleMode="spacing", factor=3.0, spacing=0.75, preset="paper",
                             device="cpu", outputModels=False, labelOutputType="labelmap", keepEvery=2,
                             iterations=500, seed=9, keepLogOnFailure=False)
    logic.setParameters(chosen)
    parameters.set_inputs(node, volume, labels)

    mrml.scene.SetRootDirectory(str(tmp_path))
    mrml.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert mrml.scene.Commit()

    reloaded = slicer.vtkMRMLScene()
    reloaded.SetURL(str(tmp_path / "scene.mrml"))
    assert reloaded.Import()
    again = reloaded.GetSingletonNode("MedGS", "vtkMRMLScriptedModuleNode")
    assert again is not None
    assert parameters.read_parameters(again) == chosen
    v, lab = parameters.get_inputs(again)
    assert (v.GetName(), lab.GetName()) == ("ct", "ct labels")

    # set_default_parameters must not overwrite what a reloaded scene holds.
    parameters.set_default_parameters(again)
    assert parameters.read_parameters(again) == chosen


def test_unreadable_parameter_falls_back_to_default(mrml):
    node = mrml.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    node.SetParameter("factor", "two")
    node.SetParameter("outputModels", "false")
    p = parameters.read_parameters(node)
    assert p.factor == 2.0 and p.outputModels is False


def test_engine_options_mapping():
    p = MedGSParameters(axis="I", factor=3.0, outputLabels=False)
    assert p.engine_options(has_labels=True) == {
        "factor": 3.0, "spacing": None, "axis": 0, "keep_every": 1, "preset": "fast", "device": "auto",
        "seed": 0, "outputs": ["volume", "meshes"], "mesh_format": "vtk"}
    assert p.engine_options(has_labels=False)["outputs"] == ["volume"]  # no labels: no label outputs
    assert MedGSParameters(resampleMode="spacing", spacing=0.5).engine_options(False)["spacing"] == 0.5
    with pytest.raises(MedGS.InputError, match="no output selected"):
        MedGSParameters(outputVolume=False, outputLabels=False, outputModels=False).validate()
    with pytest.raises(MedGS.InputError, match="device must be one of"):
        MedGSParameters(device="tpu").validate()


def test_axis_names_in_anatomical_words(mrml):
    # I runs inferior-superior, J anterior-posterior (flipped), K left-right: a sagittal stack.
    m = np.zeros((4, 4))
    m[2, 0], m[1, 1], m[0, 2], m[3, 3] = 0.8, -0.8, 5.0, 1.0
    node = mrml.add_volume(np.zeros((8, 9, 10), np.int16), m, "sagittal")
    names = export.anatomical_axis_names(node)
    assert names == {"I": "I: axial slices (inferior-superior, 0.8 mm)",
                     "J": "J: coronal slices (anterior-posterior, 0.8 mm)",
                     "K": "K: sagittal slices (left-right, 5 mm)"}
    assert export.auto_axis(node) == "K"
    iso = mrml.add_volume(np.zeros((3, 3, 3), np.int16), np.eye(4), "iso")
    assert export.auto_axis(iso) == "K"  # ties go to K, as in the engine


def test_module_class_metadata():
    parent = types.SimpleNamespace()
    MedGS.MedGS(parent)
    assert parent.title == "MedGS"
    assert parent.categories == ["Surface Models"]
    assert parent.contributors and "arXiv 2509.16806" in parent.acknowledgementText


def test_in_slicer_self_test_quick_parts_pass_here(mrml):
    """MedGSTest (what ctest runs inside Slicer) must at least pass its quick tests on real MRML."""
    case = MedGS.MedGSTest("test_MedGSInputChecks")
    case.setUp()
    case.test_MedGSInputChecks()
    case.setUp()
    case.test_MedGSParameterNode()
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1
