"""MedGS: fill in missing slices of a CT/MRI volume (and its labels) with Folded Gaussians.

Module, Widget, Logic and Test of the Slicer module. The heavy work runs in a separate
worker process (MedGSLib.worker); the Qt-free plumbing (parameters, export, process, results,
dependencies) lives in MedGSLogicLib so that it can be tested without the Slicer application.
"""
from __future__ import annotations

import logging
import os
import tempfile
import traceback
from pathlib import Path

import ctk  # noqa: F401  (registers the ctk widgets the .ui uses)
import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MedGSLogicLib import about, dependencies, export, jobs, parameters, sparse  # noqa: E402 (also puts MedGSLib on sys.path)
from MedGSLogicLib.parameters import MedGSParameters

from MedGSLib.errors import InputError, MedGSError  # noqa: E402

# A CPU run on more voxels than this takes long enough that the user should agree to it first.
CPU_VOXEL_WARNING = 128 * 128 * 64
POLL_INTERVAL_MS = 200
STARTING_TEXT = "Starting the worker (a first GPU run may compile gsplat, which takes a few minutes)..."


#
# MedGS
#


class MedGS(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedGS")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Surface Models")]
        self.parent.dependencies = []
        self.parent.contributors = list(about.CONTRIBUTORS)
        self.parent.helpText = _(
            "Fills in the missing slices of a sparsely sliced volume (CT, MRI, ultrasound sweep) and of its "
            "label map or segmentation by fitting Folded Gaussians to the known slices, and builds a surface "
            "model per label. The work runs in a background process; Apply turns into Cancel while it runs. "
            "Labels painted on some slices only: tick 'labels are drawn on some slices only' here, or use the "
            "Segment Editor effect 'MedGS fill between slices'."
        ) + f' <a href="{about.README_URL}">{_("Documentation (README)")}</a>'
        self.parent.acknowledgementText = _(
            "MedGS method: '{paper}'. The extension runs the method with its own engine (MedGSLib)."
        ).format(paper=about.PAPER)
        app = getattr(slicer, "app", None)
        if app is not None and hasattr(app, "connect"):
            app.connect("startupCompleted()", onStartupCompleted)


def onStartupCompleted() -> None:
    """Register the Segment Editor effect and the Sample Data entry (as the extension template does)."""
    try:
        registerSegmentEditorEffect()
    except Exception:  # a broken registration must not stop Slicer from starting
        logging.exception("MedGS: the Segment Editor effect could not be registered")
    try:
        import SampleData

        from MedGSLogicLib import sample_data

        sample_data.register(SampleData.SampleDataLogic)
    except Exception:
        logging.exception("MedGS: the example could not be registered with Sample Data")


def registerSegmentEditorEffect() -> None:
    import qSlicerSegmentationsEditorEffectsPythonQt as effects

    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "SegmentEditorMedGSLib", "SegmentEditorEffect.py")
    instance.setPythonSource(path.replace("\\", "/"))
    instance.self().register()


#
# MedGSLogic
#


class MedGSRunError(MedGSError):
    """A MedGS run ended without results; `kind` is the protocol's error kind."""

    def __init__(self, message: str, kind: str = "error", job=None):
        super().__init__(message)
        self.kind = kind
        self.job = job


class MedGSLogic(ScriptedLoadableModuleLogic):
    """Batch-capable logic: everything the panel does, without the panel.

    `runner` (how the worker process is started), `python` (which interpreter runs it) and
    `jobRoot` (where job folders go) can be injected; the defaults suit the Slicer app.
    """

    def __init__(self, runner=None, python: str | None = None, jobRoot: str | os.PathLike | None = None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.runner = runner
        self.python = python
        self.jobRoot = Path(jobRoot) if jobRoot else self._defaultJobRoot()
        self.activeJob: jobs.MedGSJob | None = None

    @staticmethod
    def _defaultJobRoot() -> Path:
        app = getattr(slicer, "app", None)
        if app is not None and hasattr(app, "temporaryPath"):
            return Path(app.temporaryPath) / "MedGS"
        return Path(tempfile.gettempdir()) / "MedGS"

    # -- parameters ------------------------------------------------------------------

    def setDefaultParameters(self, parameterNode) -> None:
        parameters.set_default_parameters(parameterNode)

    def getParameters(self, parameterNode=None) -> MedGSParameters:
        return parameters.read_parameters(parameterNode or self.getParameterNode())

    def setParameters(self, params: MedGSParameters, parameterNode=None) -> None:
        parameters.write_parameters(parameterNode or self.getParameterNode(), params)

    # -- running ---------------------------------------------------------------------

    def startJob(self, inputVolume, labels=None, params: MedGSParameters | None = None, onEvent=None,
                 scene=None) -> jobs.MedGSJob:
        """Export and launch the worker; returns at once. Drive it with `job.poll()` or `job.wait()`."""
        if self.activeJob is not None and self.activeJob.running:
            raise MedGSRunError("a MedGS run is already in progress; cancel it or wait for it to finish", "busy")
        job = jobs.MedGSJob(scene or slicer.mrmlScene, inputVolume, labels, params or MedGSParameters(),
                            runner=self.runner, python=self.python, job_root=self.jobRoot, on_event=onEvent)
        job.start()
        self.activeJob = job
        return job

    def cancel(self) -> None:
        if self.activeJob is not None:
            self.activeJob.cancel()

    def sparseReport(self, inputVolume, labels, axis: str = "auto"):
        """Painted slices of the label input and the empty ones between them (None if unreadable)."""
        return sparse.label_report(slicer.mrmlScene, inputVolume, labels, axis)

    def process(self, inputVolume, labels=None, factor: float | None = 2.0, spacing: float | None = None,
                axis: str = "auto", preset: str = "fast", device: str = "auto",
                outputs=("volume", "labels", "models"), labelOutputType: str = "segmentation",
                keepEvery: int = 1, iterations: int = 0, seed: int = 0, keepLogOnFailure: bool = True,
                wait: bool = True, onEvent=None, timeout: float | None = None, sparse: bool = False):
        """Console/batch API. wait=True blocks and returns the new nodes (LoadedResults:
        .volume, .labels, .models); wait=False returns the running MedGSJob.

        sparse=True: the labels are drawn on some slices only; the painted slices are sent as
        annotated_slices and factor 1 (labels filled on the input's own slices) is allowed.

        Failures raise MedGSRunError (InputError for bad input) and leave the scene as it was.
        """
        params = MedGSParameters(
            axis=axis, resampleMode="spacing" if spacing else "factor", factor=float(factor or 2.0),
            spacing=float(spacing or 1.0), preset=preset, device=device,
            outputVolume="volume" in outputs, outputLabels="labels" in outputs, outputModels="models" in outputs,
            labelOutputType=labelOutputType, keepEvery=keepEvery, iterations=iterations, seed=seed,
            keepLogOnFailure=keepLogOnFailure, sparse=sparse,
        )
        job = self.startJob(inputVolume, labels, params, onEvent)
        if not wait:
            return job
        try:
            if not job.wait(timeout):
                job.cancel()
                raise MedGSRunError(f"MedGS did not finish within {timeout} s and was cancelled", "timeout", job)
        except KeyboardInterrupt:
            job.cancel()
            raise
        if job.state is not jobs.JobState.COMPLETED:
            raise MedGSRunError(job.error_message or "MedGS failed", job.error_kind or "error", job)
        return job.results


#
# MedGSWidget
#


class MedGSWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. State lives in the parameter node; the run lives in a MedGSJob polled by a timer."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUI = False
        self._job = None
        self._pollTimer = None
        self._sparseCheckedFor = None  # the label node whose sparseness was last detected

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedGS.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedGSLogic()

        for value, text in (("fast", _("fast (seconds on a GPU, for previews and most cases)")),
                            ("quality", _("quality (about twice as long; +0.15 dB on CT, not on MRI)")),
                            ("paper", _("paper (30 000 iterations, as published)"))):
            self.ui.presetComboBox.addItem(text, value)
        for value, text in (("auto", _("auto (GPU if available)")), ("cuda", _("GPU (CUDA)")), ("cpu", _("CPU"))):
            self.ui.deviceComboBox.addItem(text, value)
        for value, text in (("segmentation", _("segmentation")), ("labelmap", _("label map volume"))):
            self.ui.labelOutputTypeComboBox.addItem(text, value)
        self._fillAxisComboBox(None)

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        self.ui.inputLabelsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        for combo in (self.ui.axisComboBox, self.ui.presetComboBox, self.ui.deviceComboBox,
                      self.ui.labelOutputTypeComboBox):
            combo.connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        for spin in (self.ui.factorSpinBox, self.ui.spacingSpinBox):
            spin.connect("valueChanged(double)", self.updateParameterNodeFromGUI)
        for spin in (self.ui.keepEverySpinBox, self.ui.iterationsSpinBox, self.ui.seedSpinBox):
            spin.connect("valueChanged(int)", self.updateParameterNodeFromGUI)
        for check in (self.ui.factorRadioButton, self.ui.spacingRadioButton, self.ui.outputVolumeCheckBox,
                      self.ui.outputLabelsCheckBox, self.ui.outputModelsCheckBox, self.ui.keepLogCheckBox,
                      self.ui.sparseCheckBox):
            check.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        self.ui.progressBar.setVisible(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Module unloaded or Slicer closing: a running worker must not outlive the GUI."""
        if self._job is not None and self._job.running:
            self._job.cancel()
        if self._pollTimer is not None:
            self._pollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None and self._job.running:
            self._job.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node <-> GUI --------------------------------------------------------

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        volume, _labels = parameters.get_inputs(self._parameterNode)
        if volume is None:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first is not None and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                parameters.set_inputs(self._parameterNode, first, _labels)

    def setParameterNode(self, node) -> None:
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def _fillAxisComboBox(self, volume) -> None:
        combo = self.ui.axisComboBox
        wasBlocked = combo.blockSignals(True)
        current = combo.currentData if combo.count else "auto"
        combo.clear()
        if volume is not None and volume.GetImageData() is not None:
            names = export.anatomical_axis_names(volume)
            auto = export.auto_axis(volume)
            combo.addItem(_("auto ({axis})").format(axis=names[auto]), "auto")
            for letter in "IJK":
                combo.addItem(names[letter], letter)
        else:
            combo.addItem(_("auto (largest spacing)"), "auto")
            for letter in "IJK":
                combo.addItem(letter, letter)
        index = combo.findData(current)
        combo.setCurrentIndex(max(index, 0))
        combo.blockSignals(wasBlocked)

    @staticmethod
    def _selectData(combo, value) -> None:
        index = combo.findData(value)
        if index >= 0:
            combo.setCurrentIndex(index)

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        if self._parameterNode is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            p = parameters.read_parameters(self._parameterNode)
            volume, labels = parameters.get_inputs(self._parameterNode)
            self.ui.inputVolumeSelector.setCurrentNode(volume)
            self.ui.inputLabelsSelector.setCurrentNode(labels)
            self._fillAxisComboBox(volume)
            self._selectData(self.ui.axisComboBox, p.axis)
            self.ui.factorRadioButton.setChecked(p.resampleMode == "factor")
            self.ui.spacingRadioButton.setChecked(p.resampleMode == "spacing")
            self.ui.factorSpinBox.value = p.factor
            self.ui.spacingSpinBox.value = p.spacing
            self.ui.factorSpinBox.setEnabled(p.resampleMode == "factor")
            self.ui.spacingSpinBox.setEnabled(p.resampleMode == "spacing")
            self._selectData(self.ui.presetComboBox, p.preset)
            self._selectData(self.ui.deviceComboBox, p.device)
            self._selectData(self.ui.labelOutputTypeComboBox, p.labelOutputType)
            self.ui.outputVolumeCheckBox.checked = p.outputVolume
            self.ui.outputLabelsCheckBox.checked = p.outputLabels
            self.ui.outputModelsCheckBox.checked = p.outputModels
            self.ui.outputLabelsCheckBox.setEnabled(labels is not None)
            self.ui.outputModelsCheckBox.setEnabled(labels is not None)
            self.ui.labelOutputTypeComboBox.setEnabled(labels is not None and p.outputLabels)
            self.ui.keepEverySpinBox.value = p.keepEvery
            self.ui.iterationsSpinBox.value = p.iterations
            self.ui.seedSpinBox.value = p.seed
            self.ui.keepLogCheckBox.checked = p.keepLogOnFailure
            self.ui.sparseCheckBox.checked = p.sparse
            self.ui.sparseCheckBox.setEnabled(labels is not None)
            self._updateApplyButton(volume, labels, p)
        finally:
            self._updatingGUI = False

    def updateParameterNodeFromGUI(self, *args) -> None:
        if self._parameterNode is None or self._updatingGUI:
            return
        p = parameters.read_parameters(self._parameterNode)
        p.axis = self.ui.axisComboBox.currentData or "auto"
        p.resampleMode = "spacing" if self.ui.spacingRadioButton.checked else "factor"
        p.factor = float(self.ui.factorSpinBox.value)
        p.spacing = float(self.ui.spacingSpinBox.value)
        p.preset = self.ui.presetComboBox.currentData or "fast"
        p.device = self.ui.deviceComboBox.currentData or "auto"
        p.labelOutputType = self.ui.labelOutputTypeComboBox.currentData or "segmentation"
        p.outputVolume = bool(self.ui.outputVolumeCheckBox.checked)
        p.outputLabels = bool(self.ui.outputLabelsCheckBox.checked)
        p.outputModels = bool(self.ui.outputModelsCheckBox.checked)
        p.keepEvery = int(self.ui.keepEverySpinBox.value)
        p.iterations = int(self.ui.iterationsSpinBox.value)
        p.seed = int(self.ui.seedSpinBox.value)
        p.keepLogOnFailure = bool(self.ui.keepLogCheckBox.checked)
        p.sparse = bool(self.ui.sparseCheckBox.checked)
        volume, labels = self.ui.inputVolumeSelector.currentNode(), self.ui.inputLabelsSelector.currentNode()
        labelsId = labels.GetID() if labels is not None else None
        if labelsId != self._sparseCheckedFor:  # a new label input: detect and offer sparse mode
            self._sparseCheckedFor = labelsId
            report = self.logic.sparseReport(volume, labels, p.axis) if labels is not None else None
            self.ui.sparseInfoLabel.text = (_("Detected: {text}.").format(text=report.text())
                                            if report is not None and report.painted else "")
            p.sparse = bool(report is not None and report.sparse)
        wasModifying = self._parameterNode.StartModify()
        parameters.write_parameters(self._parameterNode, p)
        parameters.set_inputs(self._parameterNode, volume, labels)
        self._parameterNode.EndModify(wasModifying)

    def _updateApplyButton(self, volume, labels, p) -> None:
        if self._job is not None and self._job.running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the run; the scene stays as it was")
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Apply")
        try:
            jobs.check_inputs(volume, labels, p)
        except InputError as err:
            self.ui.applyButton.toolTip = str(err)
            self.ui.applyButton.enabled = False
            return
        self.ui.applyButton.toolTip = _("Train MedGS on the known slices and add the results to the scene")
        self.ui.applyButton.enabled = True

    # -- running ---------------------------------------------------------------------

    def onApplyButton(self) -> None:
        if self._job is not None and self._job.running:
            self.ui.statusLabel.text = _("Cancelling...")
            self._job.cancel(wait=False)  # the poll timer finishes the job once the process is gone
            return
        self.updateParameterNodeFromGUI()
        p = parameters.read_parameters(self._parameterNode)
        volume, labels = parameters.get_inputs(self._parameterNode)
        try:
            jobs.check_inputs(volume, labels, p)
            if not self._confirmSparse(volume, labels, p):
                return
            if not self._ensureDependencies(p) or not self._confirmDevice(volume, p):
                return
            self.ui.logTextEdit.clear()
            self._job = self.logic.startJob(volume, labels, p, onEvent=self.onJobEvent)
        except dependencies.DependencyError as err:
            if err.missing_extension and slicer.util.confirmOkCancelDisplay(
                    _("MedGS needs the {name} extension. Install it now? Slicer restarts afterwards.").format(
                        name=err.missing_extension), windowTitle=_("MedGS")):
                try:
                    dependencies.install_extension(err.missing_extension)
                except dependencies.DependencyError as installErr:
                    slicer.util.errorDisplay(str(installErr))
                    return
                slicer.util.restart()
            elif err.restart_required and slicer.util.confirmYesNoDisplay(
                    _("{message}\n\nRestart Slicer now?").format(message=str(err))):
                slicer.util.restart()
            else:
                slicer.util.errorDisplay(str(err))
            return
        except MedGSError as err:
            slicer.util.errorDisplay(str(err))
            return
        except Exception as err:  # e.g. torch's DLL failing to load: a dialog, not only a traceback
            slicer.util.errorDisplay(_("MedGS could not start: {err}").format(err=err), windowTitle=_("MedGS"),
                                     detailedText=traceback.format_exc())
            return
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.setRange(0, 0)  # busy until the first progress event
        self.ui.statusLabel.text = _(STARTING_TEXT)
        slicer.util.showStatusMessage(_("MedGS: ") + _(STARTING_TEXT))
        self._pollTimer.start()
        self.updateGUIFromParameterNode()

    def _confirmSparse(self, volume, labels, p) -> bool:
        """Labels with empty slices between painted ones, trained densely, come out eroded: say so."""
        if labels is None or p.sparse:
            return True
        report = self.logic.sparseReport(volume, labels, p.axis)
        if report is None or not report.sparse:
            return True
        return slicer.util.confirmOkCancelDisplay(
            sparse.sparse_warning(report) + "\n\n" + _("Continue with it off anyway?"), windowTitle=_("MedGS"))

    def _ensureDependencies(self, p) -> bool:
        """Offer to install what is missing; False (with the reason shown) if MedGS cannot run."""
        slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            report = dependencies.ensure_dependencies(
                lambda text: slicer.util.confirmOkCancelDisplay(text, windowTitle=_("MedGS")),
                want_gpu=p.device != "cpu")
        except dependencies.DependencyError:
            raise
        except Exception as err:  # pip or the PyTorch extension failed: say so in one message
            raise dependencies.DependencyError(
                _("Installing the Python packages MedGS needs failed: {err}").format(err=err)) from err
        finally:
            slicer.app.restoreOverrideCursor()
        if report.missing_optional:
            self.appendLog(_("gsplat is not available; training uses the slower pure-PyTorch renderer."))
        if report.restart_required:
            raise dependencies.DependencyError(
                _("PyTorch was installed; Slicer must restart before MedGS can use it."), restart_required=True)
        return True

    def _confirmDevice(self, volume, p) -> bool:
        """A big volume on the CPU takes long: say so and let the user choose."""
        dims = volume.GetImageData().GetDimensions()
        voxels = dims[0] * dims[1] * dims[2]
        try:
            import torch

            hasCuda = bool(torch.cuda.is_available())
        except ImportError:
            hasCuda = False
        if p.device == "cuda" and not hasCuda:
            slicer.util.errorDisplay(
                _("Device 'GPU' was chosen, but PyTorch sees no CUDA GPU (no NVIDIA GPU, or a CPU-only PyTorch "
                  "build: reinstall it from the PyTorch extension). Choose 'auto' or 'CPU'; the CPU is practical "
                  "for small volumes."), windowTitle=_("MedGS"))
            return False
        onCpu = p.device == "cpu" or not hasCuda
        if onCpu and voxels > CPU_VOXEL_WARNING:
            return slicer.util.confirmOkCancelDisplay(
                _("No GPU will be used and the volume has {n:,} voxels: training on the CPU may take a long time. "
                  "Crop the volume (Crop Volume module) for a quick result, or continue anyway?").format(n=voxels),
                windowTitle=_("MedGS"))
        return True

    def onPollTimer(self) -> None:
        if self._job is None:
            self._pollTimer.stop()
            return
        if not self._job.poll():
            self._pollTimer.stop()

    def appendLog(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def onJobEvent(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            progress = self._job.progress if self._job is not None else None
            if progress is not None and progress.total:
                self.ui.progressBar.setRange(0, 1000)
                self.ui.progressBar.setValue(int(1000 * progress.fraction))
            if progress is not None:
                self.ui.statusLabel.text = progress.text()
                slicer.util.showStatusMessage(_("MedGS: ") + progress.text())
        elif kind == "log":
            # MedGSJob already drops the second copy of each trainer message (logger + progress)
            level = event.get("level")
            prefix = _("Warning: ") if level == "warning" else ""
            self.appendLog(prefix + str(event.get("message", "")))
        elif kind == "state":
            state = event.get("state")
            if state == "importing":
                self.ui.statusLabel.text = _("Loading the results into the scene...")
            elif state in ("completed", "failed", "cancelled"):
                self._onJobFinished(state, event)

    def _onJobFinished(self, state: str, event: dict) -> None:
        self.ui.progressBar.setVisible(False)
        job = self._job
        if state == "completed":
            self.ui.statusLabel.text = " ".join(
                t for t in (_("Done in {t} s.").format(t=event.get("elapsed_s", "?")), jobs.self_check_text(event)) if t)
            res = job.results
            if res is not None:
                layers = {}
                if res.volume is not None:
                    layers["background"] = res.volume
                if res.labels is not None and res.labels.IsA("vtkMRMLLabelMapVolumeNode"):
                    layers["label"] = res.labels  # a segmentation shows itself; a label map needs the layer
                if layers:
                    slicer.util.setSliceViewerLayers(fit=True, **layers)
        elif state == "cancelled":
            self.ui.statusLabel.text = _("Cancelled; the scene is unchanged.")
        else:
            self.ui.statusLabel.text = _("Failed.")
            slicer.util.errorDisplay(event.get("message") or _("MedGS failed."))
        slicer.util.showStatusMessage(_("MedGS: ") + self.ui.statusLabel.text, 5000)
        self.updateGUIFromParameterNode()


#
# MedGSTest
#


class MedGSTest(ScriptedLoadableModuleTest):
    """Run in Slicer (Developer mode: Reload and Test, or ctest). The quick tests need nothing
    but Slicer; test_MedGSRunCPU trains a few iterations on a tiny synthetic case when torch is
    installed. The full suite with real data is Testing/slicer (pytest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MedGSInputChecks()
        self.setUp()
        self.test_MedGSParameterNode()
        self.setUp()
        self.test_MedGSSparseDetection()
        self.setUp()
        self.test_MedGSRunCPU()

    def _syntheticCase(self, slices: int = 6):
        import numpy as np

        z, y, x = np.mgrid[0:slices, 0:24, 0:24]
        ball = ((x - 12) ** 2 + (y - 11) ** 2 + ((z - slices / 2) * 4) ** 2) < 64
        image = (100 + 400 * ball + 20 * np.sin(x / 3.0)).astype(np.int16)
        ijkToRAS = np.diag([1.2, 1.2, 4.0, 1.0])
        ijkToRAS[:3, 3] = (-14.0, 8.0, 30.0)
        volume = slicer.util.addVolumeFromArray(image, ijkToRAS=ijkToRAS, name="MedGS test volume")
        labels = slicer.util.addVolumeFromArray(ball.astype(np.uint8), ijkToRAS=ijkToRAS, name="MedGS test labels",
                                                nodeClassName="vtkMRMLLabelMapVolumeNode")
        return volume, labels

    def test_MedGSInputChecks(self):
        import numpy as np

        self.delayDisplay("MedGS input checks")
        flat = slicer.util.addVolumeFromArray(np.zeros((1, 16, 16), np.int16), name="flat")
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputError):
            MedGSLogic().process(flat, wait=True)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
        volume, labels = self._syntheticCase()
        other = slicer.util.addVolumeFromArray(np.zeros((6, 24, 20), np.uint8), name="wrong grid",
                                               nodeClassName="vtkMRMLLabelMapVolumeNode")
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputError):
            MedGSLogic().process(volume, labels=other, wait=True)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
        self.delayDisplay("Input checks passed")

    def test_MedGSParameterNode(self):
        logic = MedGSLogic()
        params = logic.getParameters()
        params.factor, params.preset, params.axis = 3.5, "paper", "K"
        logic.setParameters(params)
        again = logic.getParameters()
        self.assertEqual((again.factor, again.preset, again.axis), (3.5, "paper", "K"))

    def test_MedGSSparseDetection(self):
        volume, labels = self._syntheticCase(slices=9)
        import numpy as np

        array = slicer.util.arrayFromVolume(labels)
        array[:] = 0
        array[::2, 5:15, 5:15] = 1  # painted on slices 0, 2, 4, 6, 8 only
        slicer.util.arrayFromVolumeModified(labels)
        report = MedGSLogic().sparseReport(volume, labels)
        self.assertEqual(report.painted, [0, 2, 4, 6, 8])
        self.assertEqual(report.empty_between, [1, 3, 5, 7])
        self.assertTrue(np.any(array))
        effects = slicer.qSlicerSegmentEditorEffectFactory.instance().registeredEffects() \
            if hasattr(slicer, "qSlicerSegmentEditorEffectFactory") else None
        if effects is not None:
            self.assertIn("MedGS fill between slices", [e.name for e in effects])

    def test_MedGSRunCPU(self):
        try:
            import torch  # noqa: F401
        except ImportError:
            self.delayDisplay("torch is not installed: the CPU run is skipped (install the PyTorch extension)")
            return
        volume, labels = self._syntheticCase()
        res = MedGSLogic().process(volume, labels=labels, factor=2, device="cpu", iterations=30, wait=True)
        dims = res.volume.GetImageData().GetDimensions()
        self.assertEqual(dims, (24, 24, 11))
        self.assertAlmostEqual(res.volume.GetSpacing()[2], 2.0, places=4)
        self.assertEqual(len(res.models), 1)
        self.delayDisplay("CPU run passed")
