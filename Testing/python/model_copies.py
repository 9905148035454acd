"""Test helper: a copy of a bundled model whose card differs in the fields given (weights unchanged)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def model_copy(folder: Path, model: str, **card_fields: Any) -> Path:
    """Copy `model`'s card and weights into `folder`, the card's `card_fields` replaced; the card's path."""
    from lckd.model.registry import resolve_model

    source = resolve_model(model, allow_download=False)
    card = json.loads(source.read_text(encoding="utf-8"))
    card.update(card_fields)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source.with_name(card["weights"]["file"]), folder / card["weights"]["file"])
    path = folder / source.name
    path.write_text(json.dumps(card), encoding="utf-8")
    return path
