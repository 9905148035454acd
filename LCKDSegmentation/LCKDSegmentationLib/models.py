"""The model selector's entries: the registry's models and the model folders the user added
("Add model folder..."), each described from its model card.

Cards are read as JSON in Slicer's GUI process (`lckd.model.modelcard.read_card`, schema-checked;
no torch), so the panel shows the selected model's scope and expected Dice for the selected
scans before any worker has loaded it. No Qt here: the widget stores the folder list in its
application settings under `SETTINGS_KEY` and hands it to these functions.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lckd.base.errors import ModelError
from lckd.base.modalities import subset_key

#: Application-settings key (QSettings) of the model folders the user added, a list of paths.
SETTINGS_KEY = "LCKDSegmentation/ModelFolders"


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model combo box.

    value: what the parameter node stores and the worker loads: a registry name, or the path of
    an added model folder. label: the entry's text. description: its tooltip. added: a user's folder.
    """

    value: str
    label: str
    description: str
    added: bool = False


def check_model_folder(folder: str | Path) -> tuple[Path, Any]:
    """(card path, `ModelCard`) of a folder holding one model card and its weights, checked as
    the worker will check them: the card against the card schema, the weights file next to it,
    a safetensors file of the size and sha256 the card records. Raises `ModelError` saying what
    is wrong (no card, several cards, an invalid card, missing or altered weights)."""
    from lckd.base.hashing import sha256_file
    from lckd.model.modelcard import read_card, safetensors_numel, weights_path
    from lckd.model.registry import resolve_model

    path = Path(folder)
    if not path.is_dir():
        raise ModelError(f"'{path}' is not a folder")
    card_path = resolve_model(path, allow_download=False)   # exactly one card in the folder
    card = read_card(card_path)                              # the schema check
    if not card.weights:
        raise ModelError(f"model card '{card_path.name}' names no weights file")
    weights = weights_path(card_path, card)
    if not weights.is_file():
        raise ModelError(f"model card '{card_path.name}': its weights '{weights.name}' are not in {path}")
    safetensors_numel(weights)                               # a real safetensors file, header checked
    size, digest = card.weights.get("size"), card.weights.get("sha256")
    if isinstance(size, int) and weights.stat().st_size != size:
        raise ModelError(f"weights '{weights.name}' are {weights.stat().st_size} bytes; the card says {size}")
    if digest and sha256_file(weights) != digest:
        raise ModelError(f"weights '{weights.name}' do not match the sha256 in model card '{card_path.name}'")
    return card_path, card


def folders_from_settings(value: Any) -> list[str]:
    """The stored folder list, whatever shape QSettings returns it in (None, one string, a list)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if v]


def with_folder(folders: Sequence[str], folder: str | Path) -> list[str]:
    """`folders` with `folder` added at the end (once: the same folder added again is not repeated)."""
    new = str(Path(folder).resolve())
    return [f for f in folders if str(Path(f).resolve()) != new] + [new]


def model_choices(folders: Iterable[str] = ()) -> list[ModelChoice]:
    """The combo box's entries: each registry model (bundled default first), then each added
    folder that still holds a valid card (one that does not is left out, and logged)."""
    choices = []
    try:
        from lckd.model.registry import list_models

        entries = list_models()
    except Exception as e:  # a registry that cannot be read must not stop the panel from opening
        logging.info(f"LCKD Segmentation: model registry not readable yet ({e})")
        entries = []
        choices.append(ModelChoice("", "bundled default", "the model shipped with the extension"))
    default = entries[0].name if entries and entries[0].bundled else None
    for e in entries:
        label = f"{e.name} (bundled default)" if e.name == default else f"{e.name} (bundled)" if e.bundled else e.name
        choices.append(ModelChoice(e.name, label, e.description))
    for folder in folders:
        try:
            from lckd.model.modelcard import read_card
            from lckd.model.registry import resolve_model

            card = read_card(resolve_model(Path(folder), allow_download=False))
        except (ModelError, OSError) as e:
            logging.warning(f"LCKD Segmentation: added model folder {folder} left out: {e}")
            continue
        choices.append(ModelChoice(str(folder), f"{card.name} {card.version} (added)",
                                   f"{card.description or card.name} ({folder})", added=True))
    return choices


def read_choice_card(value: str) -> Any | None:
    """The `ModelCard` of a combo-box value ("" = the bundled default), read from its JSON; None
    when it cannot be read here (a registry model not downloaded yet, a folder gone)."""
    from lckd.model.modelcard import read_card
    from lckd.model.registry import resolve_model

    try:
        return read_card(resolve_model(value or None, allow_download=False))
    except (ModelError, OSError) as e:
        logging.info(f"LCKD Segmentation: model card of '{value}' not readable here: {e}")
        return None


def card_text(value: str, modalities: Sequence[str]) -> str:
    """The panel's model lines for a combo-box value: which model, its scope, and the expected
    Dice its card records for the selected scans (`panel.model_text`, `panel.dice_text`)."""
    from lckd.inference.record import scope_line

    from .panel import dice_text, model_text

    card = read_choice_card(value)
    if card is None:
        return "Model card: shown once the model is downloaded and loaded." if modalities else ""
    lines = [model_text({"name": card.name, "version": card.version, "scope": scope_line(card)})]
    if modalities:
        row = card.evaluation.get("per_subset", {}).get(subset_key(modalities))
        lines.append(dice_text(row if isinstance(row, dict) else None, modalities))
    return "\n".join(lines)

