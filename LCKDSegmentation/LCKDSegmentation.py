"""LCKD Segmentation: brain-tumour segmentation from any subset of T1, T1ce, T2 and FLAIR.

Thin Slicer layer: the widget keeps GUI state in a parameter node and polls a background
worker (LCKDSegmentationLib.workerclient) from a timer; all the work is in
LCKDSegmentationLib.logic.SegmentationLogic, usable from the Python console:

    logic = slicer.util.getModuleLogic("LCKDSegmentation")
    seg = logic.segment({"T1ce": getNode("AX T1 POST GD"), "FLAIR": getNode("Sag 3D FLAIR")})
"""
from __future__ import annotations

import logging
import os
import tempfile
import time

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from lckd.modalities import MODALITIES
from LCKDSegmentationLib import dependencies, sampledata
from LCKDSegmentationLib.logic import SegmentationLogic
from LCKDSegmentationLib.output import TABLE_ROLE
from LCKDSegmentationLib.selection import assign_modalities

#: Parameter node: node reference role or parameter name -> default value.
DEFAULTS = {"Reference": "auto", "Device": "auto", "Model": "", "KeepOtherSegments": "false",
            "Register": "false", "Postprocess": "false"}
SELECTORS = {"T1": "t1Selector", "T1ce": "t1ceSelector", "T2": "t2Selector", "FLAIR": "flairSelector"}
CHECKBOXES = {"KeepOtherSegments": "keepOtherSegmentsCheckBox", "Register": "registerCheckBox",
              "Postprocess": "postprocessCheckBox"}
COMBOBOXES = {"Reference": "referenceComboBox", "Device": "deviceComboBox", "Model": "modelComboBox"}
DEVICES = (("auto (GPU if available)", "auto"), ("GPU (CUDA)", "cuda"), ("CPU", "cpu"))


#
# LCKDSegmentation
#
class LCKDSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LCKD Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["LCKDSegmentation developers"]
        self.parent.helpText = """
Segments a brain tumour (glioma) into necrotic / non-enhancing core, peritumoral oedema and
enhancing tumour from any subset of T1, T1ce, T2 and FLAIR MRI. Pick the scans you have
(empty selectors are fine) and press Apply; region volumes appear in a table.
Research use only: not a medical device.
See the <a href="https://github.com/LCKDSegmentation/LCKDSegmentation">documentation</a>.
"""
        self.parent.acknowledgementText = """
The network is trained with Learnable Cross-modal Knowledge Distillation: Wang H. et al.,
"Learnable Cross-modal Knowledge Distillation for Multi-modal Learning with Missing
Modality", MICCAI 2023 (arXiv:2310.01035).
"""
        # Sample Data registration must wait until all modules are loaded.
        slicer.app.connect("startupCompleted()", self.registerSampleData)

    def registerSampleData(self):
        icon = os.path.join(os.path.dirname(self.parent.path), "Resources", "Icons", "LCKDSegmentation.png")
        try:
            sampledata.register(thumbnail=icon)
        except Exception as e:  # a missing sample must never break start-up
            logging.warning(f"LCKD Segmentation: sample data not registered: {e}")


#
# LCKDSegmentationWidget
#
class LCKDSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUI = False
        self._job = None
        self._timer = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LCKDSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LCKDSegmentationLogic()

        self.ui.referenceComboBox.addItem("auto (T1ce, FLAIR, T1, T2)", "auto")
        for modality in MODALITIES:
            self.ui.referenceComboBox.addItem(modality, modality)
        for label, device in DEVICES:
            self.ui.deviceComboBox.addItem(label, device)
        for model, label, description in modelChoices():
            self.ui.modelComboBox.addItem(label, model)
            self.ui.modelComboBox.setItemData(self.ui.modelComboBox.count - 1, description, qt.Qt.ToolTipRole)

        for selector in list(SELECTORS.values()) + ["outputSegmentationSelector"]:
            getattr(self.ui, selector).connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        for combo in COMBOBOXES.values():
            getattr(self.ui, combo).connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        for box in CHECKBOXES.values():
            getattr(self.ui, box).connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.prepareWorker)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.prepareWorker)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.autoAssignButton.connect("clicked(bool)", self.autoAssign)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAddedEvent, self.onNodeAdded)

        # The GUI never waits on the worker: a timer polls it.
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self.onTimer)
        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()
        if self._timer:
            self._timer.stop()
        if self.logic:
            self.logic.shutdown()

    def enter(self):
        self.initializeParameterNode()
        self.prepareWorker()  # first show: load the network before the user presses Apply
        self._timer.start()

    def exit(self):
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        if not self.jobRunning():
            self._timer.stop()  # a running job keeps being polled while other modules are shown

    # -- scene and parameter node ------------------------------------------------------
    def onSceneStartClose(self, caller, event):
        if self.jobRunning():
            self.logic.cancelJob(self._job)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAdded(self, caller, event, node):
        if self._parameterNode and node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode"):
            # Names are set by the time loading finishes; assign on the next event-loop turn.
            qt.QTimer.singleShot(0, self.autoAssign)

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not any(self._parameterNode.GetNodeReference(m) for m in SELECTORS):
            self.autoAssign()

    def setParameterNode(self, parameterNode):
        if parameterNode:
            self.logic.setDefaultParameters(parameterNode)
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = parameterNode
        if self._parameterNode is not None:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def autoAssign(self):
        """Fill empty selectors from volume names ('AX T1 POST GD' -> T1ce); never reuse a volume."""
        p = self._parameterNode
        if p is None:
            return
        used = {p.GetNodeReferenceID(m) for m in SELECTORS if p.GetNodeReferenceID(m)}
        volumes = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                   if not n.IsA("vtkMRMLLabelMapVolumeNode") and n.GetID() not in used]
        picks = assign_modalities((n.GetID(), n.GetName()) for n in volumes)
        wasModified = p.StartModify()
        for modality, nodeID in picks.items():
            if not p.GetNodeReferenceID(modality):
                p.SetNodeReferenceID(modality, nodeID)
        p.EndModify(wasModified)

    def updateGUIFromParameterNode(self, caller=None, event=None):
        p = self._parameterNode
        if p is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            for modality, selector in SELECTORS.items():
                getattr(self.ui, selector).setCurrentNode(p.GetNodeReference(modality))
            self.ui.outputSegmentationSelector.setCurrentNode(p.GetNodeReference("OutputSegmentation"))
            for name, combo in COMBOBOXES.items():
                widget = getattr(self.ui, combo)
                widget.setCurrentIndex(max(widget.findData(p.GetParameter(name)), 0))
            for name, box in CHECKBOXES.items():
                getattr(self.ui, box).checked = p.GetParameter(name) == "true"
            chosen = self.selectedVolumes()
            running = self.jobRunning()
            self.ui.applyButton.enabled = bool(chosen) and not running
            self.ui.applyButton.toolTip = "Segment the tumour" if chosen else "Select at least one input volume"
            self.ui.cancelButton.enabled = running
            self.updateExpectedDice(list(chosen))
        finally:
            self._updatingGUI = False

    def updateParameterNodeFromGUI(self, caller=None, event=None):
        p = self._parameterNode
        if p is None or self._updatingGUI:
            return
        wasModified = p.StartModify()
        for modality, selector in SELECTORS.items():
            p.SetNodeReferenceID(modality, getattr(self.ui, selector).currentNodeID)
        p.SetNodeReferenceID("OutputSegmentation", self.ui.outputSegmentationSelector.currentNodeID)
        for name, combo in COMBOBOXES.items():
            p.SetParameter(name, getattr(self.ui, combo).currentData or "")
        for name, box in CHECKBOXES.items():
            p.SetParameter(name, "true" if getattr(self.ui, box).checked else "false")
        p.EndModify(wasModified)

    def selectedVolumes(self) -> dict:
        p = self._parameterNode
        return {m: p.GetNodeReference(m) for m in SELECTORS if p and p.GetNodeReference(m)}

    def updateExpectedDice(self, modalities):
        if not modalities:
            text = ""
        elif not (self.logic.worker and self.logic.worker.info):
            text = "Expected Dice: shown once the model is loaded."
        else:
            dice = self.logic.expectedDice(modalities)
            subset = "+".join(modalities)
            text = (f"Expected Dice for {subset}: not in the model card." if not dice else
                    f"Expected Dice for {subset} (validation): "
                    + ", ".join(f"{r} {dice[r]:.2f}" for r in ("ET", "TC", "WT") if dice.get(r) is not None))
        self.ui.expectedDiceLabel.text = text

    # -- worker ------------------------------------------------------------------------
    def prepareWorker(self, *args):
        """Start the worker for the chosen model/device if the Python packages are there."""
        if self._parameterNode is None or self._updatingGUI:
            return
        missing = dependencies.missing_packages()
        if missing:
            self.ui.workerStatusLabel.text = ("Python packages needed: " + ", ".join(missing)
                                              + ". They are installed (after you agree) when you press Apply.")
            return
        if self.jobRunning():
            return
        p = self._parameterNode
        worker = self.logic.startWorker(model=p.GetParameter("Model") or None, device=p.GetParameter("Device") or "auto")
        if not worker.info:
            self.ui.workerStatusLabel.text = "Loading the model in the background..."

    def jobRunning(self) -> bool:
        return self._job is not None and not self._job.done

    def onTimer(self):
        if self.jobRunning():
            messages = self.logic.pollJob(self._job)
            self.ui.progressBar.value = int(round(100 * self._job.fraction))
            self.ui.progressBar.setFormat(f"%p%  {self._job.message}")
        elif self.logic.worker is not None:
            messages = self.logic.worker.poll()
        else:
            messages = []
        for msg in messages:
            self.onWorkerMessage(msg)
        if self._job is not None and self._job.done:
            job, self._job = self._job, None
            self.onJobDone(job)
        if not self.jobRunning() and not self.parent.isEntered:
            self._timer.stop()

    def onWorkerMessage(self, msg: dict):
        event = msg.get("event")
        if event == "ready":
            model = msg.get("model", {})
            self.ui.workerStatusLabel.text = (f"Model {model.get('name', '?')} loaded on {msg.get('device')} "
                                              f"in {msg.get('load_seconds', 0):.1f} s.")
            self.updateGUIFromParameterNode()
        elif event == "log":
            self.log(str(msg.get("message")))
        elif event == "error" and msg.get("id") is None:
            # The worker itself failed (died, or could not load the model); the next Apply starts a new one.
            self.ui.workerStatusLabel.text = str(msg.get("message"))
            self.log(str(msg.get("message")))

    def log(self, text: str):
        self.ui.statusLog.appendPlainText(text)

    # -- apply / cancel ------------------------------------------------------------------
    def onApply(self):
        if self.jobRunning():
            return
        self.ui.statusLog.clear()
        try:
            dependencies.ensure()
        except dependencies.DependencyError as e:
            slicer.util.errorDisplay(str(e))
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Cannot start the segmentation.", waitCursor=True):
            self._job = self.logic.startSegment(
                self.selectedVolumes(), outputSegmentation=p.GetNodeReference("OutputSegmentation"),
                device=p.GetParameter("Device") or "auto", model=p.GetParameter("Model") or None,
                reference=p.GetParameter("Reference"), keepOtherSegments=p.GetParameter("KeepOtherSegments") == "true",
                register=p.GetParameter("Register") == "true", postprocess=p.GetParameter("Postprocess") == "true")
            self.log(f"Segmenting from {', '.join(self._job.volumes)} (reference {self._job.reference})...")
            self.ui.progressBar.value = 0
            self._timer.start()
        self.updateGUIFromParameterNode()

    def onCancel(self):
        if self.jobRunning():
            self.logic.cancelJob(self._job)
            self.log("Cancelling...")

    def onJobDone(self, job):
        if job.failed:
            kind, message = job.reply.get("error"), job.reply.get("message", "")
            self.ui.progressBar.value = 0
            if kind == "Cancelled":
                self.log("Cancelled; the scene was not changed.")
            else:
                self.log(f"Failed: {message}")
                slicer.util.errorDisplay(f"Segmentation failed: {message}")
        else:
            seg = job.segmentation
            self._parameterNode.SetNodeReferenceID("OutputSegmentation", seg.GetID())
            slicer.util.setSliceViewerLayers(background=job.volumes[job.reference], fit=True)
            seg.GetDisplayNode().SetVisibility(True)
            self.ui.volumesTableView.setMRMLTableNode(seg.GetNodeReference(TABLE_ROLE))
            volumes = job.reply.get("volumes_ml", {})
            self.log(f"Done in {job.seconds:.1f} s: whole tumour {volumes.get('WT', 0):.1f} mL, "
                     f"core {volumes.get('TC', 0):.1f} mL, enhancing {volumes.get('ET', 0):.1f} mL.")
            for warning in job.reply.get("warnings", []):
                self.log(f"Warning: {warning}")
        self.updateGUIFromParameterNode()


def modelChoices() -> list:
    """(model argument, label, description) per registry entry; the bundled default is ''
    (= model None), so choosing it never restarts a worker that already runs the default."""
    try:
        from lckd.registry import list_models
        return [("" if e.bundled else e.name, f"{e.name} (bundled)" if e.bundled else e.name, e.description)
                for e in list_models()]
    except Exception as e:  # e.g. PyTorch not installed yet, if the registry module needs it
        logging.info(f"LCKD Segmentation: model registry not readable yet ({e})")
        return [("", "bundled default", "the model shipped with the extension")]


#
# LCKDSegmentationLogic
#
class LCKDSegmentationLogic(ScriptedLoadableModuleLogic, SegmentationLogic):
    """Slicer's logic base (parameter node) + the headless-tested SegmentationLogic.

    Console use (see README): `segment(volumes, outputSegmentation=None, device="auto", ...)`
    returns a segmentation node; `batch(inputDir, outputDir, ...)` returns a summary.
    """

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        SegmentationLogic.__init__(self, scene)

    def setDefaultParameters(self, parameterNode):
        for name, value in DEFAULTS.items():
            if not parameterNode.GetParameter(name):
                parameterNode.SetParameter(name, value)


#
# LCKDSegmentationTest
#
class LCKDSegmentationTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload and Test, or ctest). The segmentation parts need PyTorch etc.;
    they are skipped, with a message, when the packages are not installed."""

    NAMES = {"T1": "T1 MPRAGE pre", "T1ce": "AX T1 POST GD", "T2": "t2_tse_tra", "FLAIR": "Sag 3D FLAIR"}

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        for test in (self.test_BadSelections, self.test_AutoAssign, self.test_SampleData,
                     self.test_LogicSegment, self.test_WidgetApplyAndCancel):
            self.setUp()
            test()

    def loadPhantom(self) -> dict:
        import SimpleITK as sitk
        from lckd.phantom import make_phantom

        images, _ = make_phantom(7, shape=(64, 80, 80), spacing=(1.2, 1.0, 2.0)).to_sitk()
        folder = tempfile.mkdtemp(prefix="lckd-selftest-")
        nodes = {}
        for modality, image in images.items():
            path = os.path.join(folder, f"{modality}.nii.gz")
            sitk.WriteImage(image, path)
            nodes[modality] = slicer.util.loadVolume(path, {"name": self.NAMES[modality]})
        return nodes

    def dependenciesMissing(self) -> bool:
        missing = dependencies.missing_packages()
        if missing:
            self.delayDisplay("Skipped: Python packages missing: " + ", ".join(missing))
        return bool(missing)

    def test_BadSelections(self):
        from LCKDSegmentationLib.selection import DuplicateVolumeError, LabelmapInputError, NoInputError

        nodes = self.loadPhantom()
        labelmap = slicer.modules.volumes.logic().CreateAndAddLabelVolume(nodes["T1"], "labels")
        logic = LCKDSegmentationLogic()
        count = slicer.mrmlScene.GetNumberOfNodes()
        for volumes, error in (({}, NoInputError), ({"T1": nodes["T1"], "T2": nodes["T1"]}, DuplicateVolumeError),
                               ({"T1": nodes["T1"], "FLAIR": labelmap}, LabelmapInputError)):
            with self.assertRaises(error):
                logic.segment(volumes)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
        logic.shutdown()
        self.delayDisplay("Bad selections refused")

    def test_AutoAssign(self):
        self.loadPhantom()
        widget = slicer.modules.lckdsegmentation.widgetRepresentation().self()
        widget.initializeParameterNode()
        chosen = widget.selectedVolumes()
        self.assertEqual({m: n.GetName() for m, n in chosen.items()}, self.NAMES)
        self.delayDisplay("Selectors filled from volume names")

    def test_SampleData(self):
        import SampleData

        for case in sampledata.sample_cases():
            self.assertIsNotNone(SampleData.SampleDataLogic().sourceForSampleName(case.case_id))
        self.delayDisplay("Sample data registered")

    def test_LogicSegment(self):
        if self.dependenciesMissing():
            return
        nodes = self.loadPhantom()
        logic = LCKDSegmentationLogic()
        try:
            seg = logic.segment({"T1ce": nodes["T1ce"], "FLAIR": nodes["FLAIR"]})
            self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), 3)
            table = seg.GetNodeReference(TABLE_ROLE)
            self.assertEqual(table.GetNumberOfRows(), 5)
            count = slicer.mrmlScene.GetNumberOfNodes()
            self.assertIs(logic.segment({"T2": nodes["T2"]}, outputSegmentation=seg), seg)
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
            self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), 3)
        finally:
            logic.shutdown()
        self.delayDisplay("Logic segment OK")

    def test_WidgetApplyAndCancel(self):
        if self.dependenciesMissing():
            return
        self.loadPhantom()
        slicer.util.selectModule("LCKDSegmentation")
        widget = slicer.modules.lckdsegmentation.widgetRepresentation().self()
        widget.initializeParameterNode()
        # Cancel: nothing may be added to the scene.
        count = slicer.mrmlScene.GetNumberOfNodes()
        widget.onApply()
        self.assertTrue(widget.jobRunning())
        widget.onCancel()
        self.waitFor(lambda: not widget.jobRunning())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
        # Apply: the GUI stays responsive (processEvents runs) while the worker segments.
        widget.onApply()
        self.waitFor(lambda: not widget.jobRunning())
        seg = widget._parameterNode.GetNodeReference("OutputSegmentation")
        self.assertIsNotNone(seg)
        self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), 3)
        self.delayDisplay("GUI apply and cancel OK")

    def waitFor(self, condition, timeout=300.0):
        deadline = time.monotonic() + timeout
        while not condition():
            self.assertLess(time.monotonic(), deadline, "timed out")
            slicer.app.processEvents()
            time.sleep(0.05)
