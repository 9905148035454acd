"""Checking the user's volume choices and guessing modalities from volume names.

No Slicer import: nodes are used only through their MRML methods (IsA, GetID, GetName,
GetImageData, ...), so the rules are testable with the `slicer-core` MRML classes and
readable on their own. Every refusal is a `SelectionError` (a ValueError) raised before
anything in the scene changes.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lckd.base.errors import InputError
from lckd.base.modalities import MODALITIES, canonical, default_reference, guess_modality

#: The one node class the input selectors list. Their `showChildNodeTypes` is false (see
#: Resources/UI/LCKDSegmentation.ui), so subclasses - labelmap, vector (RGB, displacement
#: fields), diffusion tensor and DWI volumes - are never shown and must never be picked.
SELECTOR_NODE_CLASS = "vtkMRMLScalarVolumeNode"


def selectable(node: Any) -> bool:
    """Whether an input selector shows `node`: exactly `SELECTOR_NODE_CLASS`, not hidden."""
    return node.GetClassName() == SELECTOR_NODE_CLASS and not node.GetHideFromEditors()


def selectable_volumes(scene: Any, exclude_ids: Iterable[str] = ()) -> list:
    """The volumes the input selectors offer, in scene order, without those in `exclude_ids`.

    What auto-assignment may pick: a node the selectors hide would sit in the parameter
    node while the panel shows "None", and Apply would refuse it.
    """
    excluded = set(exclude_ids)
    nodes = scene.GetNodesByClass(SELECTOR_NODE_CLASS)
    found = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
    return [n for n in found if selectable(n) and n.GetID() not in excluded]


class SelectionError(ValueError):
    """The chosen inputs cannot be segmented; the message says what to change."""


class NoInputError(SelectionError):
    """No volume was selected."""


class DuplicateVolumeError(SelectionError):
    """One volume is selected for two modalities."""


class LabelmapInputError(SelectionError):
    """A labelmap (segmentation) volume was selected as an MRI input."""


class UnusableVolumeError(SelectionError):
    """The node is not a usable scalar MRI volume (no image, vector image, not in the scene, non-linear transform)."""


def validate_selection(volumes: Mapping[str, Any] | None, reference: str | None = None,
                       scene: Any = None) -> tuple[dict, str]:
    """Check the inputs; return ({canonical modality: node} in canonical order, reference modality).

    `volumes` maps modality names or aliases to volume nodes; None values are ignored
    (an empty selector). `reference` names the modality whose grid the result uses
    (default: the first present in T1ce, FLAIR, T1, T2 order).
    """
    chosen: dict = {}
    for key, node in (volumes or {}).items():
        if node is None:
            continue
        try:
            mod = canonical(key)
        except InputError as e:
            raise SelectionError(str(e)) from None
        if mod in chosen:
            raise SelectionError(f"{mod} is given twice ('{key}' and another name for it); give each modality once")
        chosen[mod] = node
    if not chosen:
        raise NoInputError("No input volume selected: choose at least one of T1, T1ce, T2, FLAIR.")

    owner: dict = {}
    for mod, node in chosen.items():
        _check_node(mod, node, scene)
        key = node.GetID() or id(node)
        if key in owner:
            raise DuplicateVolumeError(
                f"Volume '{node.GetName()}' is selected for both {owner[key]} and {mod}; "
                "choose a different volume for each modality (or leave one empty).")
        owner[key] = mod

    if reference in (None, "", "auto"):
        reference = default_reference(chosen)
    else:
        try:
            reference = canonical(reference)
        except InputError as e:
            raise SelectionError(str(e)) from None
        if reference not in chosen:
            raise SelectionError(f"Reference {reference} has no volume selected; "
                                 f"choose one of the selected modalities ({', '.join(chosen)}).")
    return {m: chosen[m] for m in MODALITIES if m in chosen}, reference


def _check_node(mod: str, node: Any, scene: Any) -> None:
    name = node.GetName() if hasattr(node, "GetName") else str(node)
    if not hasattr(node, "IsA") or not node.IsA("vtkMRMLScalarVolumeNode"):
        raise UnusableVolumeError(f"The {mod} input '{name}' is not a scalar volume node.")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise LabelmapInputError(
            f"The {mod} input '{name}' is a labelmap (a segmentation), not an MRI scan; "
            f"choose the {mod} MRI volume instead.")
    image = node.GetImageData()
    if image is None or 0 in image.GetDimensions():
        raise UnusableVolumeError(f"The {mod} input '{name}' has no image data.")
    if image.GetNumberOfScalarComponents() != 1:
        raise UnusableVolumeError(f"The {mod} input '{name}' has {image.GetNumberOfScalarComponents()} "
                                  "components per voxel; choose a single-channel MRI volume.")
    if scene is not None and not scene.IsNodePresent(node):
        raise UnusableVolumeError(f"The {mod} input '{name}' is not in the scene the module works on.")
    transform = node.GetParentTransformNode()
    if transform is not None and not transform.IsTransformToWorldLinear():
        raise UnusableVolumeError(f"The {mod} input '{name}' is under a non-linear transform; "
                                  "harden the transform (Data module) first.")


def assign_modalities(names: Iterable[tuple[Any, str]]) -> dict:
    """Pick a volume for each modality from (key, volume name) pairs, by name.

    Returns {modality: key}; the first volume whose name suggests a modality wins, and
    no volume is used twice. Volumes whose names suggest nothing are left out.
    """
    picked: dict = {}
    for key, name in names:
        mod = guess_modality(name)
        if mod is not None and mod not in picked:
            picked[mod] = key
    return {m: picked[m] for m in MODALITIES if m in picked}


def assign_loaded(current: Mapping[str, str | None], auto: Mapping[str, str],
                  loaded: Iterable[tuple[Any, str]], picks: Mapping[str, Any] | None = None) -> dict:
    """Selector changes for volumes loaded while the module is shown: {modality: node ID or None}.

    `current`: each modality's selected node ID (None: empty); `auto`: the picks auto-assignment
    made earlier; `loaded`: (node ID, name) of the volumes just loaded. Their names assign
    modalities as `assign_modalities` does. When a loaded scan's modality is already filled, a
    new case was loaded: its scans take their selectors and every selector still holding an
    earlier automatic pick is emptied (the old case's scans); a user's own choice for a
    modality the new case lacks stays. Otherwise the loaded scans only fill empty selectors
    (the rest of the same case, loaded file by file). `picks` ({modality: node ID}), when given,
    are the loaded scans' assignments made otherwise (`dicomassign.assign_volumes`: DICOM headers first).
    """
    picks = dict(assign_modalities(loaded) if picks is None else picks)
    if not any(current.get(m) is not None for m in picks):
        return {m: node_id for m, node_id in picks.items() if current.get(m) is None}
    changes: dict = dict(picks)
    for modality, node_id in current.items():
        if modality not in picks and node_id is not None and auto.get(modality) == node_id:
            changes[modality] = None
    return changes
