"""The package-level Python API (`import MedGSLib`): callable any number of times."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import MedGSLib
from MedGSLib import Geometry, Volume


def test_no_submodule_shadows_a_package_function():
    """Importing MedGSLib/<name>.py sets the package attribute <name>, replacing a function of that name."""
    pkg = Path(MedGSLib.__file__).parent
    public = [n for n in ("read_volume", "write_volume", "interpolate", "run") if callable(getattr(MedGSLib, n))]
    assert public == ["read_volume", "write_volume", "interpolate", "run"]
    clashes = [n for n in public if (pkg / f"{n}.py").exists() or (pkg / n).is_dir()]
    assert clashes == []


def test_interpolate_called_twice(monkeypatch):
    """README's API: MedGSLib.interpolate(vol, factor=2) twice (it raised TypeError on the second call)."""
    from MedGSLib import config
    vol = Volume(np.linspace(0, 1, 4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5), Geometry((1.0, 1.0, 2.0)))
    cfg = config.resolve_config("fast", "cpu", ["model.num_points=60"], iterations=2, max_gaussians=200)
    shapes = []
    for _ in range(2):
        out = MedGSLib.interpolate(vol, factor=2, config=cfg)
        shapes.append((out.shape, out.geometry.spacing))
        assert callable(MedGSLib.interpolate)
    assert shapes == [((7, 6, 5), (1.0, 1.0, 1.0))] * 2


def test_one_environment_record_for_run_json_and_eval_reports():
    import platform
    import sys
    from MedGSLib import api
    from MedGSLib.evaluation import run as eval_run
    env = api.environment()
    assert env == eval_run._environment()
    assert env["python"] == platform.python_version() and env["numpy"] == np.__version__
    assert ("torch" in env) == ("torch" in sys.modules)


def test_slicer_and_engine_default_label_colours_agree():
    """One owner (labels.default_color): the Slicer module's fallback colour is the engine's."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "MedGS"))
    try:
        from MedGSLogicLib import export
    finally:
        sys.path.pop(0)
    from MedGSLib.labels import default_color
    assert [export._fallback_color(v) for v in (1, 2, 7, 255)] == [default_color(v) for v in (1, 2, 7, 255)]


def test_one_extension_rule_for_output_case_and_mesh_names():
    from MedGSLib.cli.mesh import _strip_ext
    from MedGSLib.evaluation.command import case_name
    from MedGSLib.io import volume_stem
    for name, stem in [("ct.nii.gz", "ct"), ("a.seg.nrrd", "a"), ("B.NII.GZ", "B"), ("c.nhdr", "c"),
                       ("d.mha", "d"), ("e.mhd", "e"), ("f.nii", "f"), ("g.nrrd", "g")]:
        assert volume_stem(name) == case_name(name) == _strip_ext(name) == stem


def test_one_list_of_eval_method_names():
    from MedGSLib.cli.eval import _INTENSITY, _LABELS
    from MedGSLib.evaluation import command, methods, run
    from MedGSLib.evaluation.baselines_intensity import INTENSITY_BASELINES
    from MedGSLib.evaluation.baselines_labels import LABEL_BASELINES
    assert _INTENSITY is methods.INTENSITY_METHODS is command.DEFAULT_METHODS is run.INTENSITY_METHODS
    assert _LABELS is methods.LABEL_METHODS is command.DEFAULT_LABEL_METHODS is run.LABEL_METHODS
    assert set(INTENSITY_BASELINES) == set(methods.CLASSICAL_INTENSITY)
    assert set(LABEL_BASELINES) == set(methods.CLASSICAL_LABELS)


def test_one_whole_numbers_check_and_label_dtype():
    import pytest
    from MedGSLib import io
    from MedGSLib.errors import InputError
    from MedGSLib.evaluation import baselines_labels
    from MedGSLib.label_arrays import as_label_array, check_whole_numbers, label_dtype
    soft = np.array([[[0.0, 1.0], [2.5, np.nan]]] * 2)
    for call, what in [(lambda: check_whole_numbers(soft, "x"), "x"), (lambda: io._as_label_array(soft, "f.nii"), "f.nii"),
                       (lambda: baselines_labels._check(soft, 2), "the kept label slices")]:
        with pytest.raises(InputError) as err:
            call()
        assert str(err.value) == f"{what} is not a label map: it has 4 non-integer values (e.g. 2.5)"
    assert [label_dtype(lo, hi) for lo, hi in [(1, 255), (-3, 2), (0, 256), (0, 70000), (-1, 40000)]] == [
        np.uint8, np.int8, np.uint16, np.uint32, np.int32]
    assert io.smallest_label_dtype(np.array([3.0, 300.0])) == np.uint16
    assert as_label_array(np.array([1.0, 2.0])).dtype == np.uint8
