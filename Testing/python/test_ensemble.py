"""An ensemble (`Segmenter.add_member`): members' probabilities averaged, scans read alike, recorded."""
from __future__ import annotations

import numpy as np
import pytest

from lckd.base.errors import InputError
from lckd.base.modalities import MODALITIES
from lckd.inference import Segmenter
from lckd.prep.preprocess import prepare_case
from lckd.research.phantom import make_phantom
from model_copies import model_copy


@pytest.fixture(scope="module")
def case():
    ph = make_phantom(5, (48, 64, 64))
    return prepare_case(ph.images, list(MODALITIES))


def test_an_ensemble_averages_its_members(case):
    a = Segmenter.load("lckd-lite-phantom", device="cpu", threads=1)
    b = Segmenter.load("lckd-lite-brats", device="cpu", threads=1)
    both = Segmenter.load("lckd-lite-phantom", device="cpu", threads=1)
    both.add_member("lckd-lite-brats")
    present = case.present
    pa, pb = a.predict(case.x, present), b.predict(case.x, present)
    assert np.abs(pa - pb).max() > 0.1                      # two different models
    np.testing.assert_allclose(both.predict(case.x, present), (pa + pb) / 2, atol=1e-5)
    record = both.model_record()
    assert record["name"] == "lckd-lite-phantom"
    assert [m["name"] for m in record["ensemble"]] == ["lckd-lite-brats"]
    assert "ensemble" not in a.model_record()


def test_a_member_that_reads_scans_otherwise_is_refused(tmp_path):
    edited = model_copy(tmp_path / "other-grid", "lckd-lite-phantom", spacing=[2.0, 2.0, 2.0])
    seg = Segmenter.load("lckd-lite-phantom", device="cpu", threads=1)
    with pytest.raises(InputError, match="model grid spacing"):
        seg.add_member(edited)
    assert seg.members == []
