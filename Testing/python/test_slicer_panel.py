"""Texts of the module panel: the model line and the expected Dice (no Qt needed)."""
from __future__ import annotations

import pytest

from LCKDSegmentationLib.panel import dice_text, model_text

pytestmark = pytest.mark.slicer_pythons   # also run under Slicer's Python 3.9 and 3.12 (.ci/other-pythons)


def test_model_line_names_model_version_and_scope():
    model = {"name": "lckd-lite-phantom", "version": "1.1.0",
             "scope": "research use, not for clinical use; trained on synthetic phantoms"}
    assert model_text(model) == ("Model lckd-lite-phantom 1.1.0: research use, not for clinical use; "
                                 "trained on synthetic phantoms.")
    assert model_text({"name": "m", "version": "2"}) == "Model m 2."
    assert model_text({}) == ""


def test_dice_with_sd_over_folds():
    row = {"ET": 0.8512, "TC": 0.9, "WT": 0.93, "ET_sd": 0.041, "TC_sd": 0.03, "WT_sd": 0.02, "folds": 5,
           "cases": 18}
    text = dice_text(row, ["FLAIR", "T1ce"])
    assert text == "Expected Dice for T1ce+FLAIR: ET 0.85 ± 0.04, TC 0.90 ± 0.03, WT 0.93 ± 0.02 (5-fold CV)"


def test_dice_without_sd_is_the_validation_value():
    row = {"ET": 0.819, "TC": 0.863, "WT": 0.56, "HD95_ET": 8.6, "cases": 10}
    assert dice_text(row, ["T1ce"]) == "Expected Dice for T1ce: ET 0.82, TC 0.86, WT 0.56 (validation, 10 cases)"


def test_subset_missing_from_the_card():
    assert dice_text(None, ["T2", "T1"]) == "Expected Dice for T1+T2: not in the model card."
    assert dice_text({"cases": 3}, ["T2"]) == "Expected Dice for T2: not in the model card."


def test_every_model_choice_carries_its_own_registry_name():
    """Issue 29, defect 1: each bundled entry had the value "", so choosing lckd-lite-phantom ran
    the default while the panel showed the phantom model."""
    from lckd.model.registry import default_model_name, list_models, resolve_model
    from LCKDSegmentationLib.models import model_choices

    choices = model_choices()
    entries = list_models()
    assert len(entries) >= 2, "the check needs two registry entries"
    assert [c.value for c in choices] == [e.name for e in entries]
    assert choices[0].value == default_model_name() and "default" in choices[0].label
    cards = [resolve_model(c.value, allow_download=False) for c in choices if c.value]
    assert len(set(cards)) == len(choices)   # each choice loads a different model


def test_the_widget_fills_the_combo_box_from_model_choices_and_stores_the_chosen_value():
    from module_source import calls, method

    assert "self.fillModelComboBox" in calls(method("setup"))
    fill = calls(method("fillModelComboBox"))
    assert "models.model_choices" in fill and "combo.addItem" in fill
    assert "self.ui.modelComboBox.itemData" in calls(method("onModelChosen"))
