"""Segment Editor effect "MedGS fill between slices": the Qt part only.

Everything that can be tested without the Slicer application lives in
MedGSLogicLib.fill_between.FillBetweenSlicesLogic (detection, the worker job, preview, apply);
this class builds the options panel, polls the job with a timer and shows what happened.
"""
from __future__ import annotations

import os

import qt
import slicer
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from MedGSLogicLib import dependencies, fill_between  # noqa: E402 (also puts MedGSLib on sys.path)

from MedGSLib.errors import MedGSError  # noqa: E402

POLL_INTERVAL_MS = 200
_HERE = os.path.dirname(os.path.abspath(__file__))


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    def __init__(self, scriptedEffect):
        scriptedEffect.name = "MedGS fill between slices"
        scriptedEffect.perSegment = False  # works on all segments painted on some slices
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.logic = fill_between.FillBetweenSlicesLogic(slicer.mrmlScene)
        self.plan = None
        self.masks = None
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onPoll)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        cloned = effects.qSlicerSegmentEditorScriptedEffect(None)
        cloned.setPythonSource(__file__.replace("\\", "/"))
        return cloned

    def icon(self):
        path = os.path.join(_HERE, "..", "Resources", "Icons", "MedGS.png")
        return qt.QIcon(path) if os.path.exists(path) else qt.QIcon()

    def helpText(self):
        return ("<html>Paint each segment on some slices (for example every 4th), then <b>Initialize</b>: "
                "MedGS fills the slices in between, guided by the source volume's image. Check the preview, "
                "then <b>Apply</b> (undo with Ctrl+Z) or <b>Cancel</b>. The slices you painted stay as they "
                "are; nothing is added beyond a segment's first and last painted slice.</html>")

    # -- options panel --------------------------------------------------------------------

    def setupOptionsFrame(self):
        self.slicesLabel = qt.QLabel()
        self.slicesLabel.setWordWrap(True)
        self.scriptedEffect.addLabeledOptionsWidget("Painted slices:", self.slicesLabel)
        self.presetCombo = qt.QComboBox()
        for value, text in (("fast", "fast"), ("quality", "quality (about twice as long)")):
            self.presetCombo.addItem(text, value)
        self.scriptedEffect.addLabeledOptionsWidget("Preset:", self.presetCombo)
        self.deviceCombo = qt.QComboBox()
        for value, text in (("auto", "auto (GPU if available)"), ("cuda", "GPU (CUDA)"), ("cpu", "CPU")):
            self.deviceCombo.addItem(text, value)
        self.scriptedEffect.addLabeledOptionsWidget("Device:", self.deviceCombo)
        self.progressBar = qt.QProgressBar()
        self.progressBar.setVisible(False)
        self.scriptedEffect.addOptionsWidget(self.progressBar)
        self.statusLabel = qt.QLabel()
        self.statusLabel.setWordWrap(True)
        self.scriptedEffect.addOptionsWidget(self.statusLabel)
        self.initializeButton = qt.QPushButton("Initialize")
        self.initializeButton.toolTip = "Find the painted slices and let MedGS fill the slices in between"
        self.applyButton = qt.QPushButton("Apply")
        self.applyButton.toolTip = "Write the preview into the segments (undo state is saved first)"
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.toolTip = "Stop the run or drop the preview; the segments stay as they were"
        row = qt.QHBoxLayout()
        for button in (self.initializeButton, self.applyButton, self.cancelButton):
            row.addWidget(button)
        self.scriptedEffect.addOptionsWidget(row)
        self.initializeButton.connect("clicked()", self.onInitialize)
        self.applyButton.connect("clicked()", self.onApply)
        self.cancelButton.connect("clicked()", self.onCancel)
        self.updateButtons()

    def activate(self):
        self.detect(quiet=True)

    def deactivate(self):
        self.onCancel()

    # -- helpers ------------------------------------------------------------------------------

    def _nodes(self):
        node = self.scriptedEffect.parameterSetNode()
        if node is None:
            return None, None
        source = node.GetSourceVolumeNode() if hasattr(node, "GetSourceVolumeNode") else node.GetMasterVolumeNode()
        return node.GetSegmentationNode(), source

    def _running(self) -> bool:
        return self.logic.job is not None and self.logic.job.running

    def updateButtons(self):
        running = self._running()
        self.initializeButton.enabled = not running and self.plan is not None
        self.applyButton.enabled = not running and self.masks is not None
        self.cancelButton.enabled = running or self.masks is not None

    def detect(self, quiet=False):
        seg, volume = self._nodes()
        try:
            self.plan = self.logic.plan(seg, volume)
            self.slicesLabel.text = self.plan.text()
        except MedGSError as err:
            self.plan = None
            self.slicesLabel.text = str(err)
            if not quiet:
                slicer.util.errorDisplay(str(err), windowTitle="MedGS")
        self.updateButtons()
        return self.plan

    # -- actions --------------------------------------------------------------------------------

    def onInitialize(self):
        seg, volume = self._nodes()
        try:
            if self.detect() is None:
                return
            dependencies.ensure_dependencies(
                lambda text: slicer.util.confirmOkCancelDisplay(text, windowTitle="MedGS"),
                want_gpu=self.deviceCombo.currentData != "cpu")
            self.logic.start(seg, volume, self.plan, preset=self.presetCombo.currentData,
                             device=self.deviceCombo.currentData, on_event=self.onJobEvent)
        except MedGSError as err:
            slicer.util.errorDisplay(str(err), windowTitle="MedGS")
            return
        except Exception as err:  # e.g. torch failing to load: a dialog, not only a traceback
            import traceback

            slicer.util.errorDisplay(f"MedGS could not start: {err}", windowTitle="MedGS",
                                     detailedText=traceback.format_exc())
            return
        self.progressBar.setRange(0, 0)
        self.progressBar.setVisible(True)
        self.statusLabel.text = "Starting the worker..."
        slicer.util.showStatusMessage("MedGS: filling between slices...")
        self.timer.start()
        self.updateButtons()

    def onPoll(self):
        job = self.logic.job
        if job is None or not job.poll():
            self.timer.stop()

    def onJobEvent(self, event):
        kind = event.get("event")
        job = self.logic.job
        if kind == "progress" and job is not None:
            if job.progress.total:
                self.progressBar.setRange(0, 1000)
                self.progressBar.setValue(int(1000 * job.progress.fraction))
            self.statusLabel.text = job.progress.text()
            slicer.util.showStatusMessage(f"MedGS: {job.progress.text()}")
        elif kind == "log" and event.get("level") == "warning":
            self.statusLabel.text = str(event.get("message", ""))
        elif kind == "state" and event.get("state") in ("completed", "failed", "cancelled"):
            self.onFinished(event.get("state"), event)

    def onFinished(self, state, event):
        self.progressBar.setVisible(False)
        seg, volume = self._nodes()
        if state == "completed":
            try:
                self.masks = self.logic.masks(self.logic.job, self.plan)
                self.logic.showPreview(seg, volume, self.masks)
                self.statusLabel.text = "Preview shown: Apply writes it into the segments, Cancel drops it."
            except MedGSError as err:
                self.masks = None
                slicer.util.errorDisplay(str(err), windowTitle="MedGS")
        elif state == "cancelled":
            self.statusLabel.text = "Cancelled; the segments are unchanged."
        else:
            self.statusLabel.text = "Failed."
            slicer.util.errorDisplay(event.get("message") or "MedGS failed.", windowTitle="MedGS")
        slicer.util.showStatusMessage(f"MedGS: {self.statusLabel.text}", 5000)
        self.updateButtons()

    def onApply(self):
        seg, volume = self._nodes()
        if self.masks is None:
            return
        try:
            self.logic.apply(seg, volume, self.masks, saveStateForUndo=self.scriptedEffect.saveStateForUndo)
            self.statusLabel.text = "Applied."
        except MedGSError as err:
            slicer.util.errorDisplay(str(err), windowTitle="MedGS")
        self.masks = None
        self.detect(quiet=True)

    def onCancel(self):
        if self._running():
            self.statusLabel.text = "Cancelling..."
            self.logic.job.cancel(wait=False)  # the poll timer finishes the job once the worker is gone
        else:
            self.logic.removePreview()
            self.masks = None
        self.updateButtons()
