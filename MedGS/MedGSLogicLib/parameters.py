"""The module's parameters and how they live in a vtkMRMLScriptedModuleNode.

Stored as plain string parameters and node references on the module's singleton
parameter node, so they are saved with the scene (.mrml) and come back on reload. The
Widget syncs its controls with this; scripts use `MedGSParameters` directly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

from MedGSLib.errors import InputError

AXES = ("auto", "I", "J", "K")
PRESETS = ("fast", "quality", "paper")
DEVICES = ("auto", "cuda", "cpu")
RESAMPLE_MODES = ("factor", "spacing")
LABEL_OUTPUT_TYPES = ("segmentation", "labelmap")

INPUT_VOLUME_REF = "InputVolume"
INPUT_LABELS_REF = "InputLabels"


@dataclass
class MedGSParameters:
    """Everything the panel sets, with the defaults a fresh scene gets."""

    axis: str = "auto"               # auto, or the image axis I, J or K
    resampleMode: str = "factor"     # "factor": factor x more slices; "spacing": target spacing in mm
    factor: float = 2.0
    spacing: float = 1.0
    preset: str = "fast"
    device: str = "auto"
    outputVolume: bool = True
    outputLabels: bool = True
    outputModels: bool = True
    labelOutputType: str = "segmentation"
    keepEvery: int = 1               # train on every k-th slice only (1 = all)
    sparse: bool = False             # "labels are drawn on some slices only": the painted slices are sent
                                     # as annotated_slices, and factor 1 (fill the labels in place) is allowed
    iterations: int = 0              # 0 = the preset's own number
    seed: int = 0
    keepLogOnFailure: bool = True
    keepJobFolder: bool = False      # keep everything, also on success (debugging)
    extra: dict = field(default_factory=dict, repr=False)  # unknown keys read back, kept as they are

    def validate(self) -> None:
        """Raise InputError naming the first impossible choice."""
        for name, allowed in (("axis", AXES), ("preset", PRESETS), ("device", DEVICES),
                              ("resampleMode", RESAMPLE_MODES), ("labelOutputType", LABEL_OUTPUT_TYPES)):
            if getattr(self, name) not in allowed:
                raise InputError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.resampleMode == "factor" and self.sparse and not self.factor >= 1.0:
            raise InputError(f"the up-sampling factor must be 1 or more, got {self.factor}")
        if self.resampleMode == "factor" and not self.sparse and not self.factor > 1.0:
            raise InputError(f"the up-sampling factor must be above 1 (1 only with 'labels are drawn on some "
                             f"slices only'), got {self.factor}")
        if self.resampleMode == "spacing" and not self.spacing > 0.0:
            raise InputError(f"the target spacing must be positive, got {self.spacing} mm")
        if self.keepEvery < 1:
            raise InputError(f"keep every k-th slice needs k >= 1, got {self.keepEvery}")
        if self.iterations < 0:
            raise InputError(f"iterations must be 0 (preset default) or positive, got {self.iterations}")
        if not (self.outputVolume or self.outputLabels or self.outputModels):
            raise InputError("no output selected: tick the volume, the segmentation or the models")

    def engine_options(self, has_labels: bool, annotated_slices=None) -> dict:
        """The `options` object of job.json (keys of MedGSLib.api.run_to_files).

        `annotated_slices` (the painted slices, found by the job at export) is sent in sparse
        mode only; without labels sparse mode means nothing.
        """
        outputs = []
        if self.outputVolume:
            outputs.append("volume")
        if has_labels and self.outputLabels:
            outputs.append("labels")
        if has_labels and self.outputModels:
            outputs.append("meshes")
        if not outputs:
            raise InputError("the selected outputs need a label map or segmentation; choose one or tick the volume")
        if self.sparse and not has_labels:
            raise InputError("'labels are drawn on some slices only' needs a label map or segmentation")
        options = {
            "factor": float(self.factor) if self.resampleMode == "factor" else None,
            "spacing": float(self.spacing) if self.resampleMode == "spacing" else None,
            "axis": "auto" if self.axis == "auto" else AXES.index(self.axis) - 1,
            "keep_every": int(self.keepEvery),
            "preset": self.preset,
            "device": self.device,
            "seed": int(self.seed),
            "outputs": outputs,
            "mesh_format": "vtk",
        }
        if self.sparse:
            options["annotated_slices"] = "auto" if annotated_slices is None else [int(i) for i in annotated_slices]
        return options


def _to_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _from_text(text: str, default):
    if isinstance(default, bool):
        return text.strip().lower() in ("true", "1", "yes")
    if isinstance(default, int):
        return int(float(text))
    if isinstance(default, float):
        return float(text)
    return text


def write_parameters(node, params: MedGSParameters) -> None:
    """Store every field on a vtkMRMLScriptedModuleNode (one Modified event at the end)."""
    was = node.StartModify()
    try:
        for f in fields(params):
            if f.name == "extra":
                continue
            node.SetParameter(f.name, _to_text(getattr(params, f.name)))
    finally:
        node.EndModify(was)


def read_parameters(node) -> MedGSParameters:
    """Fields found on the node, defaults for the rest; unreadable values fall back to defaults."""
    params = MedGSParameters()
    for f in fields(params):
        if f.name == "extra":
            continue
        text = node.GetParameter(f.name)
        if not text:
            continue
        try:
            setattr(params, f.name, _from_text(text, getattr(params, f.name)))
        except ValueError:
            pass  # a hand-edited scene file must not stop the module from opening
    return params


def set_default_parameters(node) -> None:
    """Fill in missing fields only, so a reloaded scene keeps what the user chose."""
    defaults = MedGSParameters()
    for f in fields(defaults):
        if f.name != "extra" and not node.GetParameter(f.name):
            node.SetParameter(f.name, _to_text(getattr(defaults, f.name)))


def set_inputs(node, volume_node=None, labels_node=None) -> None:
    node.SetNodeReferenceID(INPUT_VOLUME_REF, volume_node.GetID() if volume_node else None)
    node.SetNodeReferenceID(INPUT_LABELS_REF, labels_node.GetID() if labels_node else None)


def get_inputs(node):
    """(input volume node or None, labels node or None) referenced by the parameter node."""
    return node.GetNodeReference(INPUT_VOLUME_REF), node.GetNodeReference(INPUT_LABELS_REF)


def replace(params: MedGSParameters, **changes) -> MedGSParameters:
    return dataclasses.replace(params, **changes)
