"""LCKD Segmentation: brain-tumour segmentation from any subset of T1, T1ce, T2 and FLAIR.

Thin Slicer layer: the widget keeps GUI state in a typed parameter node
(`LCKDSegmentationParameterNode`, bound to the widgets with `connectGui`) and polls a
background worker from a timer; all the work is in LCKDSegmentationLib.logic.SegmentationLogic
(held by the module Logic, tested headless), usable from the Python console:

    logic = slicer.util.getModuleLogic("LCKDSegmentation")
    seg = logic.segment({"T1ce": getNode("AX T1 POST GD"), "FLAIR": getNode("Sag 3D FLAIR")})
"""
from __future__ import annotations

import enum
import logging
import os
import tempfile
import time
import typing
import unittest

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode  # noqa: F401 (parameter node types)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from lckd.base.errors import ModelError
from lckd.base.modalities import MODALITIES, REFERENCE_PREFERENCE
from lckd.frontends.protocol import CANCELLED, ERROR, LOG, READY
from LCKDSegmentationLib import dependencies, models, panel, sampledata
from LCKDSegmentationLib.dicomassign import assign_volumes, dicom_file_lookup
from LCKDSegmentationLib.logic import SegmentationLogic
from LCKDSegmentationLib.output import TABLE_ROLE, read_quality
from LCKDSegmentationLib.selection import (
    SelectionError,
    assign_loaded,
    selectable,
    selectable_volumes,
)
from LCKDSegmentationLib.workerstate import StartReason, WorkerSettings, WorkerState

try:
    from slicer.parameterNodeWrapper import parameterNodeWrapper
except ImportError:  # a Slicer (or slicer-core) without it: the module file still imports
    parameterNodeWrapper = None


#
# LCKDSegmentation
#
class LCKDSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LCKD Segmentation")
        # Slicer's own (translated) category: a plain "Segmentation" would be a second,
        # English category in a localized Slicer
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LCKDSegmentation developers"]
        self.parent.helpText = _("""
Segments a brain tumour (glioma) into necrotic / non-enhancing core, peritumoral oedema and
enhancing tumour from any subset of T1, T1ce, T2 and FLAIR MRI. Pick the scans you have
(empty selectors are fine) and press Apply; region volumes appear in a table.
Research use only: not a medical device.
See the <a href="https://github.com/LCKDSegmentation/SlicerLCKDSegmentation">documentation</a>.
""")
        self.parent.acknowledgementText = _("""
The network is trained with Learnable Cross-modal Knowledge Distillation: Wang H. et al.,
"Learnable Cross-modal Knowledge Distillation for Multi-modal Learning with Missing
Modality", MICCAI 2023 (arXiv:2310.01035).
""")
        # Sample Data registration must wait until all modules are loaded.
        slicer.app.connect("startupCompleted()", self.registerSampleData)

    def runTest(self, msec=100, **kwargs):
        """Reload and Test: a skipped self-test (packages not installed) is reported as skipped,
        not as "Reload and Test failed" (Slicer shows every exception of this call as a failure;
        ctest runs LCKDSegmentationTest through unittest, which counts the skip itself)."""
        try:
            ScriptedLoadableModule.runTest(self, msec, **kwargs)
        except unittest.SkipTest as e:
            logging.warning(f"LCKD Segmentation self-test skipped: {e}")
            slicer.util.showStatusMessage(_("LCKD Segmentation self-test skipped: {reason}").format(reason=e), 5000)

    def registerSampleData(self):
        icon = os.path.join(os.path.dirname(self.parent.path), "Resources", "Icons", "LCKDSegmentation.png")
        try:
            sampledata.register(thumbnail=icon)
        except Exception as e:  # a missing sample must never break start-up
            logging.warning(f"LCKD Segmentation: sample data not registered: {e}")


#
# LCKDSegmentationParameterNode
#
class Reference(enum.Enum):
    """Scan whose grid the segmentation uses (the reference combo box)."""

    AUTO = "auto"
    T1 = "T1"
    T1ce = "T1ce"
    T2 = "T2"
    FLAIR = "FLAIR"

    def label(self) -> str:
        return (_("auto ({order})").format(order=", ".join(REFERENCE_PREFERENCE)) if self is Reference.AUTO
                else self.value)


class Device(enum.Enum):
    """Where the network runs (the device combo box); values are the worker's device names."""

    AUTO = "auto"
    CUDA = "cuda"
    CPU = "cpu"

    def label(self) -> str:
        return {"auto": _("auto (GPU if available)"), "cuda": _("GPU (CUDA)"), "cpu": _("CPU")}[self.value]


class LCKDSegmentationParameterNode:
    """GUI state, saved with the scene. Widgets bind to these fields through their
    `SlicerParameterName` property in the .ui file, except the model combo box, whose
    entries come from the model registry at run time (see `LCKDSegmentationWidget`).

    t1, t1ce, t2, flair: the input scans (any may be None).
    outputSegmentation: where the tumour segments go (None: a new segmentation).
    model: registry name of the model; "" = the bundled default.
    postprocess: BraTS-style clean-up; set from the model card until the user chooses.
    mirrorAverage: average each window with its mirror image (`--mirrors 2`; slower).
    rawScans: raw-scan preprocessing (co-registration, brain extraction); set from the core's
    auto-detection whenever the selected volumes change, until the user chooses.
    trustFlags: the user has checked which scan is which: a run the contrast check would refuse
    goes ahead (still warned about and flagged); cleared when the selected volumes change.
    """

    t1: vtkMRMLScalarVolumeNode
    t1ce: vtkMRMLScalarVolumeNode
    t2: vtkMRMLScalarVolumeNode
    flair: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    reference: Reference = Reference.AUTO
    device: Device = Device.AUTO
    model: str = ""
    keepOtherSegments: bool = False
    register: bool = False
    postprocess: bool = False
    mirrorAverage: bool = False
    rawScans: bool = False
    trustFlags: bool = False

    def volumes(self) -> dict:
        """{modality: volume node} of the filled selectors, in canonical order."""
        nodes = {m: getattr(self, m.lower()) for m in MODALITIES}
        return {m: n for m, n in nodes.items() if n is not None}


if parameterNodeWrapper is not None:
    # Resolve the (postponed) annotations here: the wrapper would look this module up in
    # sys.modules, which a module loaded from a file path need not be in yet.
    LCKDSegmentationParameterNode.__annotations__ = typing.get_type_hints(LCKDSegmentationParameterNode,
                                                                          globalns=globals())
    LCKDSegmentationParameterNode = parameterNodeWrapper(LCKDSegmentationParameterNode)


#
# LCKDSegmentationWidget
#
class LCKDSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = None
        self._updating = False
        # The user's own post-processing choice beats the model card's default.
        self._postprocessChosen = False
        self._rawScansFor: tuple | None = None   # the selection the raw-scans checkbox was detected for
        self._trustedFlags = panel.TrustedFlags()  # the selection the trust-flags box vouches for
        self._installing = False                 # dependencies being installed (Apply stays disabled)
        self._loaded: list = []                  # IDs of volumes loaded while shown, not yet assigned
        self._autoPicked: dict = {}              # modality -> node ID that auto-assignment chose
        self.workerSettings = WorkerSettings()   # read from the application settings in setup()

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LCKDSegmentation.ui"))
        self.uiWidget = uiWidget
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LCKDSegmentationLogic()
        if parameterNodeWrapper is None:
            self.ui.applyButton.enabled = False
            self.ui.workerStatusLabel.text = _("This module needs Slicer 5.4 or newer (slicer.parameterNodeWrapper).")
            return

        # Registry entries and added folders are only known at run time, so this combo box is bound by hand.
        self.fillModelComboBox()
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChosen)
        self.ui.addModelFolderButton.connect("clicked(bool)", self.onAddModelFolder)
        # clicked (not toggled): only a user's click, never the card's default, counts as a choice
        self.ui.postprocessCheckBox.connect("clicked(bool)", self.onPostprocessClicked)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.autoAssignButton.connect("clicked(bool)", self.autoAssign)
        self.ui.repairButton.connect("clicked(bool)", self.onRepair)
        # worker settings are the user's (application settings), not the scene's
        self.workerSettings = WorkerSettings.read(lambda key: qt.QSettings().value(key))
        self.logic.segmentation.idle.idle_minutes = self.workerSettings.idle_minutes
        self.ui.idleMinutesSpinBox.value = self.workerSettings.idle_minutes
        self.ui.startOnEntryCheckBox.checked = self.workerSettings.start_on_entry
        self.ui.idleMinutesSpinBox.connect("valueChanged(double)", self.onWorkerSettingsChanged)
        self.ui.startOnEntryCheckBox.connect("toggled(bool)", self.onWorkerSettingsChanged)

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
        if parameterNodeWrapper is None:
            return
        self.initializeParameterNode()
        if self.workerSettings.start_wanted(StartReason.ENTRY, self.workerRunning()):
            self.prepareWorker()  # the user asked for the model to be loaded before Apply
        self._timer.start()
        self.updateWorkerState()

    def exit(self):
        self.unbindGui()   # stop mirroring the parameter node while hidden; enter() binds it again
        if self._timer and not self.jobRunning() and not self.workerRunning():
            self._timer.stop()  # a job, or a worker to stop when idle, keeps the timer going

    # -- scene and parameter node ------------------------------------------------------
    def onSceneStartClose(self, caller, event):
        # a closed scene needs no model: the running job ends as cancelled, the worker exits
        self.logic.segmentation.shutdown()
        self._autoPicked, self._loaded = {}, []   # node IDs are reused by the next scene
        self.setParameterNode(None)
        self.updateWorkerState()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAdded(self, caller, event, node):
        # Only what the user loads while looking at this module: volumes other modules make
        # while it is hidden (resampled, filtered, registered ...) must not fill its selectors.
        if self._parameterNode and self.parent.isEntered and selectable(node):
            if not self._loaded:   # names are set once loading ends: assign on the next event-loop turn
                qt.QTimer.singleShot(0, self.assignLoaded)
            self._loaded.append(node.GetID())

    def assignLoaded(self):
        """Volumes loaded while the module is shown: fill empty selectors, or, for a new case
        (a loaded scan's selector is taken), replace the old case's automatic picks
        (`selection.assign_loaded`)."""
        ids, self._loaded = self._loaded, []
        p = self._parameterNode
        if p is None:
            return
        nodes = [n for n in (slicer.mrmlScene.GetNodeByID(i) for i in ids) if n is not None and selectable(n)]
        current = {m: (n.GetID() if n is not None else None)
                   for m, n in ((m, getattr(p, m.lower())) for m in MODALITIES)}
        changes = assign_loaded(current, self._autoPicked, ((n.GetID(), n.GetName()) for n in nodes),
                                picks=assign_volumes(nodes, dicom_file_lookup()))   # DICOM headers, then names
        with slicer.util.NodeModify(p):
            for modality, nodeID in changes.items():
                setattr(p, modality.lower(), slicer.mrmlScene.GetNodeByID(nodeID) if nodeID else None)
                if nodeID:
                    self._autoPicked[modality] = nodeID

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.volumes():
            self.autoAssign()

    def setParameterNode(self, parameterNode):
        """Bind the GUI to `parameterNode` (None: unbind)."""
        self.unbindGui()
        self._parameterNode = parameterNode
        if parameterNode is not None:
            # connectParametersToGui returns the tag disconnectGui needs on every Slicer;
            # connectGui returns it only from 5.10 (None on 5.6 and 5.8).
            self._parameterNodeGuiTag = parameterNode.connectParametersToGui(self.parameterWidgets())
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    def unbindGui(self):
        """Undo what setParameterNode bound (safe to call when nothing is bound)."""
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNodeGuiTag = None

    def parameterWidgets(self) -> dict:
        """{parameter name: widget} of the widgets whose SlicerParameterName names a parameter
        (what connectGui would find)."""
        widgets = {}
        for widget in self.uiWidget.findChildren(qt.QWidget):
            name = widget.property("SlicerParameterName")
            if name:
                widgets[str(name)] = widget
        return widgets

    def autoAssign(self):
        """Fill empty selectors from the DICOM headers of volumes loaded through the DICOM module, then
        from volume names ('AX T1 POST GD' -> T1ce); never reuse a volume."""
        p = self._parameterNode
        if p is None:
            return
        used = {n.GetID() for n in p.volumes().values()}
        volumes = selectable_volumes(slicer.mrmlScene, used)   # only what the selectors can show
        picks = assign_volumes(volumes, dicom_file_lookup())
        with slicer.util.NodeModify(p):
            for modality, nodeID in picks.items():
                if getattr(p, modality.lower()) is None:
                    setattr(p, modality.lower(), slicer.mrmlScene.GetNodeByID(nodeID))
                    self._autoPicked[modality] = nodeID

    def onParameterNodeModified(self, caller=None, event=None):
        """What connectGui does not do: the model combo box, Apply's state, the model text."""
        p = self._parameterNode
        if p is None or self._updating:
            return
        self._updating = True
        try:
            index = self.modelIndex(p.model)   # "" (never chosen): the first, the default
            if index < 0 and p.model:
                # never show one model while running another: an unknown model falls back to the default
                self.log(_("Model '{model}' is not available here; the bundled default is selected.").format(
                    model=p.model))
                p.model = ""
            self.ui.modelComboBox.setCurrentIndex(max(index, 0))
            self.detectRawScans()
            self.forgetTrustedFlagsOfOtherScans()
            self.updateState()
            self.showSelectedResult()
        finally:
            self._updating = False
        worker = self.logic.segmentation.worker
        wanted = (p.model or None, p.device.value)
        if self.parent.isEntered and (worker is None or (worker.model, worker.device) != wanted) \
                and self.workerSettings.start_wanted(StartReason.CHOICE, self.workerRunning()):
            self.prepareWorker()  # replace the running worker by one for the new model or device

    def addedModelFolders(self) -> list:
        """The model folders the user added (application settings, `models.SETTINGS_KEY`)."""
        return models.folders_from_settings(qt.QSettings().value(models.SETTINGS_KEY))

    def fillModelComboBox(self):
        """The registry's models, then the added folders (`models.model_choices`); each entry's value
        is what the parameter node stores and the worker loads."""
        combo = self.ui.modelComboBox
        updating, self._updating = self._updating, True   # refilling is no user's choice
        try:
            combo.clear()
            for choice in models.model_choices(self.addedModelFolders()):
                combo.addItem(choice.label, choice.value)
                combo.setItemData(combo.count - 1, choice.description, qt.Qt.ToolTipRole)
        finally:
            self._updating = updating

    def modelIndex(self, value: str) -> int:
        """The combo box entry of a model value; a folder a loaded scene names but this user never
        added is listed too. -1 when the value cannot be run here (unknown name, folder gone)."""
        combo = self.ui.modelComboBox
        index = combo.findData(value)
        if index < 0 and value:
            for choice in models.model_choices([value]):
                if choice.added:
                    combo.addItem(choice.label, choice.value)
                    combo.setItemData(combo.count - 1, choice.description, qt.Qt.ToolTipRole)
                    index = combo.count - 1
        return index

    def onAddModelFolder(self):
        """Ask for a model folder, check its card and weights as the worker will, remember it
        in the application settings and select it."""
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(),
                                                     _("Model folder (a model card and its weights)"))
        if not folder:
            return
        try:
            models.check_model_folder(folder)
        except ModelError as e:
            slicer.util.errorDisplay(_("This folder cannot be added as a model: {error}").format(error=e))
            return
        folders = models.with_folder(self.addedModelFolders(), folder)
        qt.QSettings().setValue(models.SETTINGS_KEY, folders)
        self.fillModelComboBox()
        if self._parameterNode is not None:
            self._parameterNode.model = folders[-1]   # selects it (onParameterNodeModified)

    def onModelChosen(self, index):
        if self._parameterNode is not None and not self._updating:
            self._parameterNode.model = self.ui.modelComboBox.itemData(index) or ""

    def onPostprocessClicked(self, checked):
        self._postprocessChosen = True

    def detectRawScans(self):
        """Set the raw-scans checkbox from the core's auto-detection when the selected volumes
        change (a user's tick stands until then); its tooltip says why."""
        chosen = self.selectedVolumes()
        if any(n.GetImageData() is None for n in chosen.values()):
            return  # still loading: judge the selection once every volume has its voxels
        key = tuple((m, n.GetID()) for m, n in chosen.items())
        if key == self._rawScansFor:
            return
        self._rawScansFor = key
        try:
            raw, reason = self.logic.segmentation.detectRawScans(chosen)
        except Exception as e:  # a volume without image data, or an odd array: leave the box as it is
            logging.warning(f"LCKD Segmentation: raw-scan detection failed: {e}")
            return
        self._parameterNode.rawScans = raw
        self.ui.rawScansCheckBox.toolTip = _("Co-register the scans and extract the brain before segmenting "
                                             "(for scans with the skull on). Detected: {reason}").format(reason=reason)

    def forgetTrustedFlagsOfOtherScans(self):
        """The trust-flags box vouches for the scans it was ticked for: when the selection
        changes (another case, another scan in a selector) it is cleared."""
        p = self._parameterNode
        still = self._trustedFlags.still_trusted(panel.selection_key(self.selectedVolumes()))
        if p is not None and p.trustFlags and not still:
            p.trustFlags = False

    def selectedVolumes(self) -> dict:
        return self._parameterNode.volumes() if self._parameterNode is not None else {}

    def updateState(self):
        """Apply / Cancel buttons and the model text, from the parameter node and the worker."""
        chosen = self.selectedVolumes()
        running = self.jobRunning()
        problem = self.logic.segmentation.deviceProblem(self._parameterNode.device.value) \
            if self._parameterNode is not None else None
        self.ui.applyButton.enabled = panel.apply_enabled(bool(chosen), running, self._installing, problem)
        self.ui.applyButton.toolTip = ((problem or _("Segment the tumour")) if chosen
                                       else _("Select at least one input volume"))
        self.ui.cancelButton.enabled = running
        self.updateModelText(list(chosen))

    def showSelectedResult(self):
        """The selected output segmentation's volumes table and quality line, read back from the
        node (a result of any earlier run, a loaded .seg.nrrd or scene), never from the last job."""
        p = self._parameterNode
        node = p.outputSegmentation if p is not None else None
        record = read_quality(node)
        self.ui.volumesTableView.setMRMLTableNode(node.GetNodeReference(TABLE_ROLE) if node is not None else None)
        self.ui.qualityLabel.text = panel.quality_text(record)
        # the low-confidence flag stands out where the user looks
        self.ui.qualityLabel.styleSheet = "color: #c62828; font-weight: bold" if record and record.get(
            "low_confidence") else ""

    def updateModelText(self, modalities):
        """The selected model's card line and its expected Dice for the selected scans, read from
        the card's JSON here (no worker, no torch needed)."""
        chosen = self._parameterNode.model if self._parameterNode is not None else ""
        self.ui.expectedDiceLabel.text = models.card_text(chosen, modalities)

    # -- worker ------------------------------------------------------------------------
    def prepareWorker(self, *args):
        """Start the worker for the chosen model/device if the Python packages are there."""
        p = self._parameterNode
        if p is None:
            return
        missing = dependencies.missing_packages()
        if missing:
            self.ui.workerStatusLabel.text = _("Python packages needed: {packages}. They are installed (after you "
                                               "agree) when you press Apply.").format(packages=", ".join(missing))
            return
        if self.jobRunning():
            return
        worker = self.logic.segmentation.worker
        if worker is not None and (worker.model, worker.device) == (p.model or None, p.device.value) \
                and worker.running:
            return
        try:
            worker = self.logic.segmentation.startWorker(model=p.model or None, device=p.device.value)
        except SelectionError as e:  # a GPU this computer does not have: refused here, not by a dying worker
            self.ui.workerStatusLabel.text = str(e)
            self.updateState()
            return
        if not worker.info:
            self.ui.workerStatusLabel.text = _("Loading the model in the background...")

    def jobRunning(self) -> bool:
        return self._job is not None and not self._job.done

    def workerRunning(self) -> bool:
        return self.logic.segmentation.workerState() is not WorkerState.STOPPED

    def onWorkerSettingsChanged(self, *args):
        """The user changed the idle minutes or the start-on-entry box: keep it for every session."""
        self.workerSettings = WorkerSettings(float(self.ui.idleMinutesSpinBox.value),
                                             bool(self.ui.startOnEntryCheckBox.checked))
        settings = qt.QSettings()
        for key, value in self.workerSettings.values().items():
            settings.setValue(key, value)
        self.logic.segmentation.idle.idle_minutes = self.workerSettings.idle_minutes
        self.updateWorkerState()

    def updateWorkerState(self):
        """The worker's state line: stopped, starting, ready (and when it stops) or busy."""
        state = self.logic.segmentation.workerState()
        left = self.logic.segmentation.idle.seconds_left(state)
        text = {
            WorkerState.STOPPED: _("Model: not loaded (loaded when you press Apply)."),
            WorkerState.STARTING: _("Model: loading in the background..."),
            WorkerState.READY: _("Model: loaded, ready."),
            WorkerState.BUSY: _("Model: segmenting..."),
        }[state]
        if left is not None:
            text += " " + _("Unloaded after {minutes} idle min (about {left} min from now).").format(
                minutes=f"{self.workerSettings.idle_minutes:g}", left=int(left // 60) + 1)
        self.ui.workerStateLabel.text = text

    def onTimer(self):
        if self.jobRunning():
            messages = self.logic.segmentation.pollJob(self._job)
            self.ui.progressBar.value = int(round(100 * self._job.fraction))
            self.ui.progressBar.setFormat("%p%  " + self._job.message)
        else:
            messages = self.logic.segmentation.poll()
        for msg in messages:
            self.onWorkerMessage(msg)
        if self._job is not None and self._job.done:
            job, self._job = self._job, None
            self.onJobDone(job)
        if self.logic.segmentation.releaseIdleWorker():   # its process exits: memory (and GPU memory) freed
            self.log(_("The model was unloaded after {minutes} idle minutes; Apply loads it again.").format(
                minutes=f"{self.workerSettings.idle_minutes:g}"))
        self.updateWorkerState()
        if not self.jobRunning() and not self.parent.isEntered and not self.workerRunning():
            self._timer.stop()

    def onWorkerMessage(self, msg: dict):
        event = msg.get("event")
        if event == READY:
            model = msg.get("model", {})
            self.ui.workerStatusLabel.text = _("Model {name} {version} loaded on {device} in {seconds:.1f} s.").format(
                name=model.get("name", "?"), version=model.get("version", ""), device=msg.get("device"),
                seconds=msg.get("load_seconds", 0))
            default = self.logic.segmentation.postprocessDefault()
            if self._parameterNode is not None and default is not None and not self._postprocessChosen:
                self._parameterNode.postprocess = default  # start from the model card's setting
            self.updateState()
        elif event == LOG:
            self.log(str(msg.get("message")))
        elif event == ERROR and msg.get("id") is None:
            # The worker itself failed (bad model, absent GPU, died); the next Apply starts a new one.
            p = self._parameterNode
            problem = self.logic.segmentation.deviceProblem(p.device.value) if p is not None else None
            self.ui.workerStatusLabel.text = problem or str(msg.get("message"))
            self.log(problem or str(msg.get("message")))
            self.updateState()

    def log(self, text: str):
        self.ui.statusLog.appendPlainText(text)

    # -- apply / cancel ------------------------------------------------------------------
    def installDependencies(self, rawScans: bool, repair: bool = False) -> bool:
        """Install what is missing (or, `repair`, reinstall the module's packages) after one
        confirmation that lists everything, Apply disabled meanwhile; False if the packages are
        still missing (the user was told why). What to install is `dependencies.plan_installation`'s."""
        self._installing = True
        self.updateState()
        try:
            return self.installPlanned(dependencies.plan_installation(raw_scans=rawScans, repair=repair))
        except dependencies.DependencyError as e:
            slicer.util.errorDisplay(str(e))
        except Exception as e:  # pip failing, or Slicer's installer declined (RuntimeError): a message, no traceback
            slicer.util.errorDisplay(_("Installing the Python packages failed: {error}").format(error=e))
        finally:
            self._installing = False
            self.ui.progressBar.setRange(0, 100)
            self.ui.progressBar.setFormat("%p%")
            self.ui.progressBar.value = 0
            self.updateState()
        return False

    def installText(self, plan) -> str:
        """The one confirmation: everything `plan` installs, and what it leaves alone."""
        lines = [_("LCKD Segmentation will install into Slicer's Python:"), ""]
        if plan.torch:
            how = (_("PyTorch ({requirement}) through the PyTorch extension, which picks the build for your GPU")
                   if plan.torch_by_extension else
                   _("PyTorch ({requirement}) with pip (several hundred MB; for a particular CUDA build, cancel "
                     "and install the PyTorch extension first)"))
            lines.append("- " + how.format(requirement=", ".join(plan.torch)))
        if plan.packages:
            lines.append("- " + (_("reinstalled: {packages}") if plan.repair else "{packages}").format(
                packages=", ".join(plan.packages)))
        if plan.extractor:
            lines.append("- " + _("brain extraction for raw scans: {packages}").format(
                packages=", ".join(plan.extractor)))
        if plan.pinned:
            lines += ["", _("Slicer's own packages stay as they are: {packages}.").format(
                packages=", ".join(pin.split("==")[0] for pin in plan.pinned))]
        lines += ["", _("This takes a few minutes; pip's output appears in this module's log. Continue?")]
        return "\n".join(lines)

    def installPlanned(self, plan) -> bool:
        """Ask once, install with pip's output in the panel's log, and offer a restart when a
        package this Slicer process had already imported (torch, say) was replaced."""
        if plan.is_empty():
            return True
        if not slicer.util.confirmOkCancelDisplay(self.installText(plan), _("LCKD Segmentation: Python packages")):
            self.log(_("Installation cancelled; nothing was changed."))
            return False
        if plan.repair:
            self.logic.segmentation.shutdown()   # the worker's process holds the old files open
        self.ui.progressBar.setRange(0, 0)      # busy: pip gives no fraction
        self.ui.progressBar.setFormat(_("Installing Python packages..."))
        before = dependencies.installed_versions()
        still = dependencies.run_installation(plan, self.logInstall, launch=self.launchPip)
        replaced = dependencies.replaced_while_loaded(before, dependencies.installed_versions(),
                                                      reinstalled=plan.packages + plan.extractor if plan.repair else ())
        if replaced:
            self.offerRestart(replaced)
        if still:
            slicer.util.errorDisplay(_("These Python packages are still missing: {packages}. Install them from a "
                                       "terminal with: {command} , then restart Slicer.").format(
                packages=", ".join(still), command=dependencies.manual_command()))
            return False
        self.log(_("Python packages installed."))
        return True

    def logInstall(self, line: str):
        """One line of pip's output into the panel's log; the GUI stays responsive meanwhile."""
        self.log(line)
        slicer.app.processEvents()

    def launchPip(self, command: list):
        """pip through Slicer's launcher environment (what slicer.util.pip_install does)."""
        return slicer.util.launchConsoleProcess(command, useStartupEnvironment=False)

    def offerRestart(self, replaced: list):
        """Packages this process had imported were replaced: it runs the old code until Slicer restarts."""
        self.log(_("Replaced while loaded in Slicer: {packages}").format(packages="; ".join(replaced)))
        if slicer.util.confirmYesNoDisplay(
                _("These packages were already loaded in Slicer and were replaced: {packages}.\n\nSlicer keeps "
                  "running the old versions (other modules using them may fail) until it restarts. "
                  "Restart Slicer now?").format(packages="; ".join(replaced)), _("Restart Slicer")):
            slicer.util.restart()

    def onRepair(self):
        """Reinstall the module's Python packages (after one confirmation), for an installation
        that went wrong."""
        if self.jobRunning() or self._installing:
            return
        self.ui.statusLog.clear()
        p = self._parameterNode
        if self.installDependencies(bool(p.rawScans) if p is not None else False, repair=True):
            self.prepareWorker()

    def onApply(self):
        if self.jobRunning() or self._installing:
            return
        self.ui.statusLog.clear()
        p = self._parameterNode
        if not self.installDependencies(p.rawScans):
            return
        try:
            with slicer.util.tryWithErrorDisplay(_("Cannot start the segmentation."), waitCursor=True):
                self._job = self.logic.segmentation.startSegment(
                    p.volumes(), outputSegmentation=p.outputSegmentation, device=p.device.value,
                    model=p.model or None, reference=p.reference.value, keepOtherSegments=p.keepOtherSegments,
                    register=p.register, postprocess=p.postprocess, preprocess="on" if p.rawScans else "off",
                    mirrors=2 if p.mirrorAverage else 1, trustFlags=p.trustFlags)
                model = self.logic.segmentation.modelInfo()
                if model:
                    self.log(panel.model_text(model))
                self.log(_("Segmenting from {scans} (reference {reference})...").format(
                    scans=", ".join(self._job.volumes), reference=self._job.reference))
                self.ui.progressBar.value = 0
                self._timer.start()
        except Exception as e:
            # tryWithErrorDisplay showed the error and re-raises it; the buttons must still
            # be brought up to date, and a Qt slot has nobody to pass the exception to.
            logging.info(f"LCKD Segmentation: Apply refused: {e}")
        finally:
            self.updateState()

    def onCancel(self):
        if self.jobRunning():
            self.logic.segmentation.cancelJob(self._job)
            self.log(_("Cancelling..."))

    def onJobDone(self, job):
        if job.failed:
            kind, message = job.reply.get("error"), job.reply.get("message", "")
            self.ui.progressBar.value = 0
            if kind == CANCELLED:
                self.log(_("Cancelled; the scene was not changed."))
            else:
                self.log(_("Failed: {message}").format(message=message))
                slicer.util.errorDisplay(_("Segmentation failed: {message}").format(message=message))
        else:
            seg = job.segmentation
            self._parameterNode.outputSegmentation = seg
            slicer.util.setSliceViewerLayers(background=job.volumes[job.reference], fit=True)
            seg.GetDisplayNode().SetVisibility(True)
            self.showSelectedResult()   # the same node may be selected already (no parameter event)
            volumes = job.reply.get("volumes_ml", {})
            self.log(_("Done in {seconds:.1f} s: whole tumour {WT:.1f} mL, core {TC:.1f} mL, "
                       "enhancing {ET:.1f} mL.").format(seconds=job.seconds, WT=volumes.get("WT", 0),
                                                         TC=volumes.get("TC", 0), ET=volumes.get("ET", 0)))
            quality = self.ui.qualityLabel.text   # read back from the node, as it will be shown later
            if quality:
                self.log(quality)
            if job.reply.get("preprocessing"):
                self.log(_("Preprocessing: {what}").format(what=job.reply["preprocessing"]))
            for warning in job.reply.get("warnings", []):
                self.log(_("Warning: {warning}").format(warning=warning))
            for note in job.reply.get("notes", []):
                self.log(_("Note: {note}").format(note=note))
        self.updateState()


#
# LCKDSegmentationLogic
#
class LCKDSegmentationLogic(ScriptedLoadableModuleLogic):
    """Slicer's logic (parameter node) holding the headless-tested SegmentationLogic.

    Console use (see README): `segment(volumes, outputSegmentation=None, device="auto", ...)`
    returns a segmentation node; `batch(inputDir, outputDir, ...)` segments a folder. Both
    are `SegmentationLogic`'s (`self.segmentation`), which also runs outside Slicer.
    """

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.segmentation = SegmentationLogic(scene)

    def getParameterNode(self):
        return LCKDSegmentationParameterNode(super().getParameterNode())

    def segment(self, *args, **kwargs):
        """Segment one case and return the segmentation node; see `SegmentationLogic.segment`."""
        return self.segmentation.segment(*args, **kwargs)

    def batch(self, *args, **kwargs):
        """Segment every case of a folder; see `SegmentationLogic.batch`."""
        return self.segmentation.batch(*args, **kwargs)

    def shutdown(self) -> None:
        """Stop the background worker (module cleanup)."""
        self.segmentation.shutdown()


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
        skipped = []
        for test in (self.test_BadSelections, self.test_AutoAssign, self.test_SampleData,
                     self.test_LogicSegment, self.test_WidgetApplyAndCancel):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as e:   # run the others, then report the skip (not a pass)
                skipped.append(f"{test.__name__}: {e}")
        if skipped:
            self.skipTest("; ".join(skipped))

    def loadPhantom(self) -> dict:
        import SimpleITK as sitk

        from lckd.research.phantom import make_phantom

        images, _ = make_phantom(7, shape=(64, 80, 80), spacing=(1.2, 1.0, 2.0)).to_sitk()
        folder = tempfile.mkdtemp(prefix="lckd-selftest-")
        nodes = {}
        for modality, image in images.items():
            path = os.path.join(folder, f"{modality}.nii.gz")
            sitk.WriteImage(image, path)
            nodes[modality] = slicer.util.loadVolume(path, {"name": self.NAMES[modality]})
        return nodes

    def skipIfDependenciesMissing(self) -> None:
        """Skip (not pass) a test that needs the worker's packages when they are not installed."""
        missing = dependencies.missing_packages()
        if missing:
            self.delayDisplay("Skipped: Python packages missing: " + ", ".join(missing))
            self.skipTest("Python packages missing: " + ", ".join(missing))

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
        self.skipIfDependenciesMissing()
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
        self.skipIfDependenciesMissing()
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
        seg = widget._parameterNode.outputSegmentation
        self.assertIsNotNone(seg)
        self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), 3)
        self.delayDisplay("GUI apply and cancel OK")

    def waitFor(self, condition, timeout=300.0):
        deadline = time.monotonic() + timeout
        while not condition():
            self.assertLess(time.monotonic(), deadline, "timed out")
            slicer.app.processEvents()
            time.sleep(0.05)
