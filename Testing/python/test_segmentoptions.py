"""`SegmentOptions`: the one place a run's options are checked, read from a worker request and
resolved against the model card."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from lckd.base.errors import InputError
from lckd.frontends.protocol import PATH_OPTIONS, SEGMENT_OPTIONS
from lckd.inference import SegmentOptions


@pytest.mark.parametrize("bad, message", [
    ({"mirrors": 3}, "--mirrors"), ({"labels": "brats1999"}, "label convention"), ({"overlap": 1.0}, "--overlap"),
    ({"sw_batch_size": 0}, "--sw-batch-size"), ({"preprocess": "maybe"}, "preprocess"),
    ({"brain_extractor": "magic"}, "brain extraction"), ({"max_memory_gb": -1}, "--max-memory")])
def test_bad_values_are_refused_where_the_options_are_made(bad, message):
    with pytest.raises(InputError, match=message):
        SegmentOptions(**bad)
    with pytest.raises(InputError, match=message):
        SegmentOptions().replace(**bad)


def test_values_are_normalised():
    o = SegmentOptions(mirrors="2", register=1, postprocess=0)
    assert (o.mirrors, o.register, o.postprocess, o.brain_extractor) == (2, True, False, "deepbet")


def test_worker_request_round_trip_and_accepted_names():
    o = SegmentOptions(labels="brats2023", mirrors=4, overlap=0.5, postprocess=True, preprocess="off")
    assert SegmentOptions.from_request({"output": "x.nrrd", **o.to_request()}) == o
    assert SEGMENT_OPTIONS == set(PATH_OPTIONS) | set(SegmentOptions.names())
    assert SegmentOptions.from_request({"postprocess": None, "mirrors": None}) == SegmentOptions()


@pytest.mark.parametrize("request_options, field", [
    ({"mirrors": "2"}, "mirrors"), ({"mirrors": True}, "mirrors"), ({"register": 1}, "register"),
    ({"overlap": "0.5"}, "overlap"), ({"labels": 2018}, "labels")])
def test_request_of_the_wrong_json_types_is_named(request_options, field):
    assert field in SegmentOptions.request_problem(request_options)


def test_request_of_the_right_types_passes():
    assert SegmentOptions.request_problem({"mirrors": 2, "overlap": 0, "postprocess": None, "output": 5}) is None


def test_the_model_card_fills_what_is_left_open():
    card = SimpleNamespace(label_convention="brats2023", overlap=0.25, postprocessing={"min_component_voxels": 9})
    from lckd.inference.record import run_options

    record = run_options(card, SegmentOptions(), "cpu", None)
    assert (record["labels"], record["overlap"], record["postprocess"]) == ("brats2023", 0.25,
                                                                           {"min_component_voxels": 9})
    assert run_options(card, SegmentOptions(labels="brats2018", overlap=0.5, postprocess=False), "cpu",
                       None)["labels"] == "brats2018"
    # the worker's description of its model (what the Slicer Logic knows) fills them the same way
    described = {"labels": "brats2023", "overlap": 0.25, "postprocessing": {"min_component_voxels": 9}}
    assert run_options(described, SegmentOptions(), "cpu", None) == record
    assert SegmentOptions(postprocess=False).cleanup_rule(card) is None
    assert SegmentOptions(postprocess=True).cleanup_rule(SimpleNamespace(postprocessing={})) == {}
    assert SegmentOptions().cleanup_rule(SimpleNamespace(postprocessing={})) is None


def test_from_command_line_arguments():
    args = SimpleNamespace(labels=None, register=False, postprocess=None, probabilities="probs", overlap=None,
                           sw_batch_size=2, mirrors=8, preprocess="auto", brain_extractor="hd-bet",
                           bias_correction=True, max_memory=4.0)
    o = SegmentOptions.from_args(args)
    assert (o.reference, o.probabilities, o.sw_batch_size, o.mirrors, o.brain_extractor, o.max_memory_gb) == \
        (None, True, 2, 8, "hd-bet", 4.0)
