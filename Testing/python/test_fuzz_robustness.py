"""Fuzz suite, in-process part: generated bad inputs, options, model cards, worker lines, batch folders.

Every case asserts the README's promise: exit status 1 (worker: an error reply and the
worker keeps serving), one line that names the problem, no traceback, no output or
temporary file left, and the input files unchanged. The cases are generated from seeds,
so a failure names a reproducible case. Processes, signals, hostile file names and full
disks are in test_fuzz_processes.py.

Nearly every case is refused before a model loads (input checks come first), so the whole
file runs in seconds; the batch and worker classes load the bundled model once each.
"""
from __future__ import annotations

import copy
import csv
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lckd.frontends.cli import main
from lckd.model.registry import resolve_model

SHAPE = (32, 40, 40)  # (z, y, x): small, so reading and checking take milliseconds


# ----------------------------------------------------------------------------- fixtures

def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small, valid four-scan phantom case (NIfTI) and the bundled model copied aside."""
    from phantom_files import write_phantom_files

    root = tmp_path_factory.mktemp("fuzz_good")
    paths = write_phantom_files(root, 5, SHAPE)[0]
    card = resolve_model(None)
    model = root / "model"
    shutil.copytree(card.parent, model)
    return {"paths": paths, "card": model / card.name, "image": sitk.ReadImage(str(paths["FLAIR"])),
            "digests": {p: _digest(p) for p in [*paths.values(), *model.rglob("*")] if p.is_file()}}


def _files(root: Path) -> set:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _assert_refused(capsys, good, tmp_path, argv, *needles, command="segment", before=None):
    """Run `lckd` in-process; check status 1, one line, no traceback, nothing left, inputs intact."""
    before = _files(tmp_path) if before is None else before
    try:
        code = main(argv)
    except BaseException as e:  # a traceback the user would have seen
        pytest.fail(f"uncaught {type(e).__name__}: {str(e)[:300]}")
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1, (code, err[-500:])
    assert "Traceback" not in err and "Traceback" not in out
    assert len(lines) == 1, err
    assert lines[0].startswith(f"lckd {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    left = _files(tmp_path) - before
    assert not left, f"left behind: {sorted(map(str, left))}"
    for p, d in good["digests"].items():
        assert _digest(p) == d, f"input {p} was modified"
    return lines[0]


def _segment(tmp_path, *args):
    return ["segment", "-q", "--threads", "1", "-o", str(tmp_path / "out" / "seg.nii.gz"), *map(str, args)]


# ----------------------------------------------------------------------------- bad files

def _nrrd(sizes, spacings=None, type_="float", data: bytes | None = None, extra="") -> bytes:
    """A raw NRRD written by hand, so every header field can be made wrong."""
    sizes = list(sizes)
    head = ["NRRD0004", f"type: {type_}", f"dimension: {len(sizes)}", f"sizes: {' '.join(map(str, sizes))}",
            "encoding: raw", "endian: little"]
    if spacings is not None:
        head.append(f"spacings: {' '.join(map(str, spacings))}")
    if extra:
        head.append(extra)
    if data is None:
        n = 1
        for s in sizes:
            n *= max(int(s), 0)
        data = np.random.default_rng(len(sizes)).random(n).astype(np.float32).tobytes()
    return ("\n".join(head) + "\n\n").encode() + data


def _nifti_bytes(image: sitk.Image, tmp: Path) -> bytes:
    p = tmp / "_src.nii"
    sitk.WriteImage(image, str(p))
    data = p.read_bytes()
    p.unlink()
    return data


def _patch(data: bytes, offset: int, fmt: str, *values) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


def _bad_files():
    """(id, name, builder(tmp, good) -> bytes, or a callable making the path itself)."""
    cases = []
    rng = random.Random(11)
    for i in range(16):  # random bytes under every extension, some gzip-wrapped
        ext = [".nii.gz", ".nii", ".nrrd", ".mha", ".nhdr", ".mhd", ".img", ".dcm"][i % 8]
        n = rng.choice([0, 1, 7, 348, 352, 4096, 70000])
        payload = bytes(rng.getrandbits(8) for _ in range(n))
        if ext == ".nii.gz" and i % 2:
            payload = gzip.compress(payload)
        cases.append((f"garbage{i}{ext}", f"g{i}{ext}", lambda t, g, p=payload: p))
    for frac in (0.0, 0.01, 0.2, 0.5, 0.9, 0.999):  # truncated valid files of each format
        for ext in (".nii.gz", ".nii", ".nrrd", ".mha"):
            def build(t, g, frac=frac, ext=ext):
                src = t / f"_full{ext}"
                sitk.WriteImage(g["image"], str(src), True)
                data = src.read_bytes()
                src.unlink()
                return data[: int(len(data) * frac)] if frac < 0.99 else data[:-3]
            cases.append((f"truncated{frac}{ext}", f"cut{ext}", build))
    # hand-made NRRD headers: zero/negative/NaN spacing, 1x1x1, lines, 2D, 4D, vectors, bad sizes
    for label, sizes, spacings, extra in (
            ("zero_spacing", (8, 8, 8), (0, 1, 1), ""), ("negative_spacing", (8, 8, 8), (1, -2, 1), ""),
            ("inf_spacing", (8, 8, 8), (1, 1, "inf"), ""),
            ("single_voxel", (1, 1, 1), (1, 1, 1), ""), ("line", (1, 50, 1), (1, 1, 1), ""),
            ("slice", (40, 40, 1), (1, 1, 1), ""), ("2d", (40, 40), (1, 1), ""),
            ("4d", (8, 8, 8, 3), (1, 1, 1, 1), ""), ("5d", (4, 4, 4, 2, 2), (1, 1, 1, 1, 1), ""),
            ("tiny", (3, 3, 3), (1, 1, 1), ""), ("zero_size", (0, 8, 8), (1, 1, 1), ""),
            ("huge_declared", (100000, 100000, 100000), (1, 1, 1), ""),
            ("vector", (3, 8, 8, 8), None, "kinds: vector domain domain domain"),
            ("space_100mm", (60, 60, 40), (100, 100, 100), "")):
        data = b"" if label == "huge_declared" else None
        cases.append((f"nrrd_{label}", f"{label}.nrrd", lambda t, g, a=(sizes, spacings, extra, data):
                      _nrrd(a[0], a[1], extra=a[2], data=a[3])))
    cases.append(("nrrd_bad_type", "type.nrrd", lambda t, g: _nrrd((8, 8, 8), (1, 1, 1), type_="quaternion")))
    mha = "ObjectType = Image\nNDims = 3\nDimSize = {}\nElementType = MET_FLOAT\nElementDataFile = {}\n"
    cases += [  # a few header bytes that declare terabytes, or data that is not there
        ("mha_declares_terabytes", "huge.mha", lambda t, g: mha.format("30000 30000 30000", "LOCAL").encode()
         + b"\0" * 1000),
        ("mha_short_data", "short.mha", lambda t, g: mha.format("40 40 40", "LOCAL").encode() + b"\0" * 1000),
        ("mhd_missing_raw", "detached.mhd", lambda t, g: mha.format("40 40 40", "missing.raw").encode()),
        ("nhdr_missing_data", "detached.nhdr", lambda t, g: _nrrd((8, 8, 8), (1, 1, 1), data=b"",
                                                                  extra="data file: missing.raw")),
    ]
    cases.append(("nrrd_short_data", "short.nrrd", lambda t, g: _nrrd((8, 8, 8), (1, 1, 1), data=b"\0" * 100)))

    def values(arr_fn, name):
        def build(t, g):
            arr = arr_fn(sitk.GetArrayFromImage(g["image"]).astype(np.float32))
            img = sitk.GetImageFromArray(arr)
            p = t / f"_v{name}"
            sitk.WriteImage(img, str(p))
            data = p.read_bytes()
            p.unlink()
            return data
        return build

    def with_nan(a):
        a[5, 5, 5] = np.nan
        return a

    def with_inf(a):
        a[3, 3, 3] = -np.inf
        return a

    cases += [("nan_voxels", "nan.nrrd", values(with_nan, ".nrrd")),
              ("inf_voxels", "inf.mha", values(with_inf, ".mha")),
              # ITK's NIfTI reader sets NaN and Inf to 0: found in the bytes on disk (lckd.io.niftiblock)
              ("nan_voxels_nifti", "nan.nii", values(with_nan, ".nii")),
              ("inf_voxels_nifti_gz", "inf.nii.gz", values(with_inf, ".nii.gz")),
              ("all_zero", "zero.nii.gz", values(lambda a: a * 0, ".nii.gz")),
              ("constant", "const.nrrd", values(lambda a: a * 0 + 7, ".nrrd"))]

    def nifti(mutate):
        return lambda t, g: mutate(_nifti_bytes(g["image"], t))

    cases += [  # NIfTI-1 header fields made wrong (pixdim at 76, dim at 40, bitpix at 72, datatype at 70)
        # (pixdim 0 or NaN is read as 1 mm by ITK, as NIfTI allows: not refused, so not listed)
        ("nifti_pixdim_negative", "pn.nii", nifti(lambda d: _patch(d, 84, "<f", -1.0))),
        ("nifti_dim_huge", "dh.nii", nifti(lambda d: _patch(d, 42, "<h", 30000))),
        ("nifti_dim_zero", "dz.nii", nifti(lambda d: _patch(d, 44, "<h", 0))),
        ("nifti_ndim_9", "d9.nii", nifti(lambda d: _patch(d, 40, "<h", 9))),
        ("nifti_datatype_bad", "dt.nii", nifti(lambda d: _patch(d, 70, "<h", 1234))),
        ("nifti_magic_and_size_bad", "mg.nii", nifti(lambda d: _patch(d[:344] + b"xx\0\0" + d[348:], 0, "<i", 77))),
        ("nifti_vox_offset_far", "vo.nii", nifti(lambda d: _patch(d, 108, "<f", 1e9))),
        ("nifti_header_only", "ho.nii", nifti(lambda d: d[:352])),
    ]
    return cases


BAD_FILES = _bad_files()


@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_fuzz_bad_file(case, capfd, good, tmp_path):
    """Refused with one line on stderr: capfd sees what C libraries print on file descriptor 2
    too (MetaImage's 'data not read completely', niftilib's 'bad dim[0]', ITK's warnings)."""
    _, name, build = case
    path = tmp_path / name
    path.write_bytes(build(tmp_path, good))
    before = _files(tmp_path)
    capfd.readouterr()                      # what writing the bad file printed is not the run's
    t = time.perf_counter()
    line = _assert_refused(capfd, good, tmp_path, _segment(tmp_path, "--t2", path), before=before)
    assert name in line or "memory" in line, line
    if "spacing" in case[0]:
        assert "spacing" in line and "corrupt" not in line, line
    assert time.perf_counter() - t < 5, "a bad input must be refused before the model loads"


def _special_inputs():
    """Paths that are not image files at all."""
    def loop(t):
        p = t / "loop.nii.gz"
        os.symlink(p, p)
        return p

    def empty_dir(t):
        p = t / "dicom"
        p.mkdir()
        (p / "notes.txt").write_text("no DICOM here")
        return p

    # (a named pipe hangs a reader that opens it: test_fuzz_processes.py tries that in a child process)
    return [("missing", lambda t: t / "nope.nii.gz"), ("symlink_loop", loop),
            ("char_device", lambda t: Path("/dev/null")), ("folder_without_dicom", empty_dir),
            ("dangling_link", lambda t: (t / "dang.nii.gz").symlink_to(t / "gone.nii.gz") or t / "dang.nii.gz")]


SPECIAL = _special_inputs()


@pytest.mark.parametrize("case", SPECIAL, ids=[c[0] for c in SPECIAL])
def test_fuzz_special_path(case, capsys, good, tmp_path):
    path = case[1](tmp_path)
    _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--flair", path), Path(path).name)


def test_fuzz_inputs_that_do_not_overlap(capsys, good, tmp_path):
    far = sitk.Image(good["image"])
    far.SetOrigin((900.0, 0.0, 0.0))
    p = tmp_path / "far.nii.gz"
    sitk.WriteImage(far, str(p))
    _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--t1ce", good["paths"]["T1ce"], "--flair", p),
                    "far.nii.gz", "overlap")


# ----------------------------------------------------------------------------- options

def _bad_options():
    cases = []
    for v in ("1", "1.0", "-0.5", "nan", "inf", "-inf", "1.5", "100"):
        cases.append((f"overlap={v}", [f"--overlap={v}"], "--overlap"))
    for v in ("0", "-1", "-100", "100000"):
        cases.append((f"sw={v}", [f"--sw-batch-size={v}"], "--sw-batch-size"))
    for v in ("0", "-1", "100000"):
        cases.append((f"threads={v}", [f"--threads={v}"], "--threads"))
    for v in ("0", "3", "16", "-2"):
        cases.append((f"mirrors={v}", [f"--mirrors={v}"], "--mirrors"))
    for v in ("cuda", "cuda:0", "cuda:7", "gpu", "mps", "tpu", "cuda:-1", "cpu:0", "cuda:x", " ", "CUDA:0:1"):
        cases.append((f"device={v!r}", [f"--device={v}"], "device"))
    for v in ("0", "-1", "nan", "inf", "0.001"):
        cases.append((f"max_memory={v}", [f"--max-memory={v}"], "memory"))
    for v in ("brats2019", "", "BRATS"):
        cases.append((f"labels={v!r}", ["--labels", v], "brats"))
    cases.append(("reference_absent", ["--reference", "T1"], "reference"))
    cases.append(("reference_unknown", ["--reference", "PD"], "PD"))
    return cases


OPTIONS = _bad_options()


@pytest.mark.parametrize("case", OPTIONS, ids=[c[0] for c in OPTIONS])
def test_fuzz_bad_option(case, capsys, good, tmp_path):
    _, extra, needle = case
    t = time.perf_counter()
    _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--flair", good["paths"]["FLAIR"], *extra), needle)
    if not case[0].startswith("device"):  # asking whether a GPU exists needs torch, whose import takes seconds
        assert time.perf_counter() - t < 5


def _bad_outputs():
    def overlong(t, g):
        return t / ("x" * 300 + ".nii.gz")

    def nearly_too_long(t, g):  # fits the file system, but not with the temporary name's suffix
        return t / ("y" * 248 + ".nii.gz")

    def is_input(t, g):
        return g["paths"]["FLAIR"]

    def link_to_input(t, g):
        p = t / "link.nii.gz"
        p.symlink_to(g["paths"]["FLAIR"])
        return p

    def under_a_file(t, g):
        (t / "afile").write_text("x")
        return t / "afile" / "seg.nii.gz"

    def existing_dir(t, g):
        (t / "adir.nii.gz").mkdir()
        return t / "adir.nii.gz"

    def read_only_dir(t, g):
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        d = t / "ro"
        d.mkdir()
        d.chmod(0o500)
        return d / "seg.nii.gz"

    return [("unknown_extension", lambda t, g: t / "seg.png", "seg.png"),
            ("no_extension", lambda t, g: t / "seg", "unknown"),
            ("nhdr_two_file", lambda t, g: t / "seg.nhdr", "seg.nhdr"),
            ("overlong_name", overlong, "long"), ("nearly_too_long", nearly_too_long, "long"),
            ("output_is_input", is_input, "input"), ("output_links_to_input", link_to_input, "input"),
            ("under_a_file", under_a_file, "afile"), ("existing_folder", existing_dir, "folder"),
            ("read_only_folder", read_only_dir, "ro")]


OUTPUTS = _bad_outputs()


@pytest.mark.parametrize("case", OUTPUTS, ids=[c[0] for c in OUTPUTS])
def test_fuzz_bad_output(case, capsys, good, tmp_path):
    _, make, needle = case
    out = make(tmp_path, good)
    before = _files(tmp_path)
    argv = ["segment", "-q", "--threads", "1", "--flair", str(good["paths"]["FLAIR"]), "-o", str(out)]
    _assert_refused(capsys, good, tmp_path, argv, needle, before=before)


def test_fuzz_probability_folder_is_a_file_or_holds_an_input(capsys, good, tmp_path):
    (tmp_path / "pfile").write_text("x")
    before = _files(tmp_path)
    _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--flair", good["paths"]["FLAIR"],
                                                     "--probabilities", tmp_path / "pfile"), "pfile", before=before)
    from lckd.inference import resultfiles

    # the name the ET map of output 'seg.nii.gz' gets (with the output's stem where the code adds one)
    names = (resultfiles.probability_names("seg") if hasattr(resultfiles, "probability_names")
             else resultfiles.PROBABILITY_NAMES)
    victim = tmp_path / names["ET"]
    shutil.copy(good["paths"]["FLAIR"], victim)
    digest = _digest(victim)
    before = _files(tmp_path)
    _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--flair", victim, "--probabilities", tmp_path),
                    "input", before=before)
    assert _digest(victim) == digest


# ----------------------------------------------------------------------------- model cards

def _card_mutations():
    """(id, mutate(card dict, folder) -> dict or str (raw text))."""
    def setter(path, value):
        def mutate(d, folder):
            target = d
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            return d
        return mutate

    def deep(kind):
        return lambda d, folder: ("[" * 100000 + "]" * 100000) if kind == "array" else \
            '{"name": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}"

    def pickle_weights(d, folder):
        # the bytes of pickle.dumps({"x": 1}), written literally: the suite never imports pickle
        w = folder / "evil.safetensors"
        w.write_bytes(b"\x80\x04\x95\n\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01x\x94K\x01s.")
        d["weights"] = {"file": w.name, "sha256": hashlib.sha256(w.read_bytes()).hexdigest(), "size": 10}
        return d

    def torch_weights(d, folder):
        w = folder / "weights.pt"
        w.write_bytes(b"PK\x03\x04" + b"\0" * 100)
        d["weights"] = {"file": w.name, "sha256": hashlib.sha256(w.read_bytes()).hexdigest()}
        return d

    def truncated_weights(d, folder):
        src = folder / d["weights"]["file"]
        w = folder / "cut.safetensors"
        w.write_bytes(src.read_bytes()[:5000])
        d["weights"] = {"file": w.name, "sha256": hashlib.sha256(w.read_bytes()).hexdigest()}
        return d

    def header_lies(d, folder):
        w = folder / "lie.safetensors"
        w.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
        d["weights"] = {"file": w.name, "sha256": hashlib.sha256(w.read_bytes()).hexdigest()}
        return d

    cases = [
        ("name_number", setter(["name"], 5)), ("name_empty", setter(["name"], "")),
        ("name_path", setter(["name"], "../../etc")), ("version_list", setter(["version"], [1])),
        ("architecture_string", setter(["architecture"], "lite")),
        ("architecture_unknown_field", setter(["architecture", "attention"], True)),
        ("stem_channels_huge", setter(["architecture", "stem_channels"], 10 ** 9)),
        ("stem_channels_zero", setter(["architecture", "stem_channels"], 0)),
        ("stage_widths_huge", setter(["architecture", "stage_widths"], [100000, 100000, 100000, 100000])),
        ("stage_blocks_many", setter(["architecture", "stage_blocks"], [10000, 1, 1, 1])),
        ("stage_widths_float", setter(["architecture", "stage_widths"], [24.5, 32, 48, 64])),
        ("block_unknown", setter(["architecture", "block"], "transformer")),
        ("stem_stride_short", setter(["architecture", "stem_stride"], [2, 2])),
        ("negative_slope_string", setter(["architecture", "negative_slope"], "0.01")),
        ("weight_std_string", setter(["architecture", "weight_std"], "yes")),
        ("spacing_zero", setter(["spacing"], [0, 1, 1])), ("spacing_negative", setter(["spacing"], [1, -1, 1])),
        ("spacing_strings", setter(["spacing"], ["1", "1", "1"])), ("spacing_two", setter(["spacing"], [1, 1])),
        ("spacing_huge", setter(["spacing"], [1e9, 1, 1])),
        ("overlap_one", setter(["overlap"], 1)), ("overlap_above", setter(["overlap"], 1.5)),
        ("overlap_negative", setter(["overlap"], -0.1)), ("overlap_string", setter(["overlap"], "1/3")),
        ("overlap_bool", setter(["overlap"], True)),
        ("patch_huge", setter(["patch_size"], [100000, 64, 64])), ("patch_zero", setter(["patch_size"], [0, 64, 64])),
        ("patch_float", setter(["patch_size"], [64.5, 64, 64])), ("patch_scalar", setter(["patch_size"], 64)),
        ("labels_unknown", setter(["label_convention"], "brats2030")),
        ("modalities_string", setter(["modalities"], "T1,T1ce,T2,FLAIR")),
        ("modalities_other", setter(["modalities"], ["T1", "T1ce", "T2", "PD"])),
        ("clip_percentiles_bad", setter(["preprocessing", "clip_percentiles"], [0.5, 200])),
        ("weights_not_object", setter(["weights"], "lckd.safetensors")),
        ("weights_outside_folder", setter(["weights", "file"], "../model_elsewhere.safetensors")),
        ("weights_absolute", setter(["weights", "file"], "/etc/passwd")),
        ("weights_sha_malformed", setter(["weights", "sha256"], "abc")),
        ("weights_missing_sha", lambda d, f: (d["weights"].pop("sha256"), d)[1]),
        ("format_version_2", setter(["format_version"], 2)),
        ("evaluation_list", setter(["evaluation"], [1, 2])),
        ("missing_architecture", lambda d, f: (d.pop("architecture"), d)[1]),
        ("pickle_as_safetensors", pickle_weights), ("torch_pt_weights", torch_weights),
        ("truncated_weights_matching_sha", truncated_weights), ("safetensors_header_lies", header_lies),
        ("deep_array", deep("array")), ("deep_object", deep("object")),
        ("not_an_object", lambda d, f: "[1, 2, 3]"), ("empty_file", lambda d, f: ""),
        ("nan_constant", lambda d, f: json.dumps(d).replace('"overlap": 0.3333333333333333', '"overlap": NaN')),
        ("not_utf8", lambda d, f: b"\xff\xfe{".decode("latin-1")),
        # text no file name can hold (issue 23): refused by name, not an InternalError
        ("weights_nul_byte", setter(["weights", "file"], "lckd\u0000.safetensors")),
        ("weights_lone_surrogate", setter(["weights", "file"], "lckd\ud800.safetensors")),
    ]
    return cases


CARDS = _card_mutations()


@pytest.mark.parametrize("case", CARDS, ids=[c[0] for c in CARDS])
def test_fuzz_bad_model_card(case, capsys, good, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(good["card"].parent, folder)
    card = folder / good["card"].name
    data = json.loads(card.read_text())
    result = case[1](copy.deepcopy(data), folder)
    text = result if isinstance(result, str) else json.dumps(result)
    card.write_text(text, encoding="latin-1" if case[0] == "not_utf8" else "utf-8")
    before = _files(tmp_path)
    t = time.perf_counter()
    _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--flair", good["paths"]["FLAIR"], "--model", card),
                    before=before)
    _assert_refused(capsys, good, tmp_path, ["info", "--model", str(card)], command="info", before=before) \
        if not case[0].startswith(("pickle", "torch", "truncated", "safetensors", "weights_missing")) else None
    assert time.perf_counter() - t < 10


def test_card_schema_is_valid_and_agrees_with_jsonschema(good):
    """The bundled card passes; our checker and the reference `jsonschema` agree on every mutation."""
    jsonschema = pytest.importorskip("jsonschema")
    from lckd.model.modelcard import card_schema
    from lckd.model.schema import validate

    schema = card_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    data = json.loads(good["card"].read_text())
    assert validate(data, schema) == []
    checker = jsonschema.Draft202012Validator(schema)
    agree = 0
    for name, mutate in CARDS:
        result = mutate(copy.deepcopy(data), good["card"].parent / "_unused")  \
            if not name.startswith(("pickle", "torch", "truncated", "safetensors")) else None
        if not isinstance(result, dict) or name.endswith("_float"):  # ours refuses 64.5-like integers too
            continue
        assert bool(validate(result, schema)) == (not checker.is_valid(result)), name
        agree += 1
    assert agree >= 30


# ----------------------------------------------------------------------------- worker lines

def _bad_lines(good_input: str, tmp: Path):
    deep = "[" * 200000 + "]" * 200000
    deep_obj = '{"id": "d", "op": "ping", "x": ' + '{"a": ' * 100000 + "1" + "}" * 100000 + "}"
    return [
        ("deep_array", deep), ("deep_object", deep_obj), ("not_utf8", b"\xff\xfe\x00garbage"),
        ("not_json", "segment please"), ("json_list", "[1, 2]"), ("json_string", '"ping"'),
        ("op_missing", '{"id": "1"}'), ("op_unknown", '{"id": "1", "op": "format_disk"}'),
        ("op_number", '{"id": "1", "op": 7}'), ("id_object", '{"id": {"a": 1}, "op": "ping"}'),
        ("segment_no_id", json.dumps({"op": "segment", "inputs": {"T1": good_input}})),
        ("inputs_list", json.dumps({"id": "s1", "op": "segment", "inputs": [good_input]})),
        ("inputs_empty", json.dumps({"id": "s2", "op": "segment", "inputs": {}})),
        ("inputs_number_path", json.dumps({"id": "s3", "op": "segment", "inputs": {"T1": 5}})),
        ("options_list", json.dumps({"id": "s4", "op": "segment", "inputs": {"T1": good_input}, "options": [1]})),
        ("option_unknown", json.dumps({"id": "s5", "op": "segment", "inputs": {"T1": good_input},
                                       "options": {"rm": True}})),
        ("option_register_string", json.dumps({"id": "s6", "op": "segment", "inputs": {"T1": good_input},
                                               "options": {"register": "false"}})),
        ("output_number", json.dumps({"id": "s7", "op": "segment", "inputs": {"T1": good_input},
                                      "options": {"output": 3}})),
        ("huge_line", '{"id": "h", "op": "ping", "pad": "' + "x" * (2 << 20) + '"}'),
        ("nan_constant", '{"id": NaN, "op": "ping"}'),
    ]


def _job_lines(good_input: str, tmp: Path):
    """Well-formed requests the job must refuse (reply: error, nothing written)."""
    return [
        ("output_is_input", {"inputs": {"FLAIR": good_input}, "options": {"output": good_input}}, "input"),
        ("output_is_input_in_list", {"inputs": {"FLAIR": good_input},
                                     "options": {"output": [str(tmp / "ok.nii.gz"), good_input]}}, "input"),
        ("probabilities_onto_input", {"inputs": {"FLAIR": good_input},
                                      "options": {"output": str(tmp / "a.nii.gz"), "probabilities": True,
                                                  "probabilities_output": good_input}}, "input"),
        ("input_missing", {"inputs": {"FLAIR": str(tmp / "nope.nii.gz")},
                           "options": {"output": str(tmp / "b.nii.gz")}}, "nope"),
        ("bad_reference", {"inputs": {"FLAIR": good_input},
                           "options": {"output": str(tmp / "c.nii.gz"), "reference": "T1"}}, "reference"),
        ("bad_labels", {"inputs": {"FLAIR": good_input},
                        "options": {"output": str(tmp / "d.nii.gz"), "labels": "x"}}, "x"),
        ("non_utf8_output", {"inputs": {"FLAIR": good_input},
                             "options": {"output": os.fsdecode(bytes(tmp) + b"/s\xff.nii.gz")}}, "UTF-8"),
        ("id_is_a_path", {"inputs": {"FLAIR": good_input}, "options": {"output": str(tmp / "e.png")}}, "e.png"),
        # text no file name can hold (issue 23): one error naming it, never InternalError with a traceback
        ("nul_in_input", {"inputs": {"FLAIR": good_input + "\0x"}, "options": {"output": str(tmp / "f.nii.gz")}},
         "NUL"),
        ("surrogate_in_input", {"inputs": {"FLAIR": good_input[:-7] + "\ud800.nii.gz"},
                                "options": {"output": str(tmp / "g.nii.gz")}}, "surrogate"),
        ("nul_in_output", {"inputs": {"FLAIR": good_input}, "options": {"output": str(tmp / "h\0.nii.gz")}}, "NUL"),
        ("surrogate_in_output_list", {"inputs": {"FLAIR": good_input},
                                      "options": {"output": [str(tmp / "i.nii.gz"), str(tmp / "\udfff.nii.gz")]}},
         "surrogate"),
        ("nul_in_probabilities_output", {"inputs": {"FLAIR": good_input},
                                         "options": {"output": str(tmp / "j.nii.gz"), "probabilities": True,
                                                     "probabilities_output": str(tmp / "p\0.nrrd")}}, "NUL"),
    ]


@pytest.fixture(scope="module")
def live_worker(good):
    """A real `Worker` serving the bundled model; replies collected from its real line writer."""
    from lckd.frontends import worker as worker_mod
    from lckd.inference import Segmenter

    stream = io.StringIO()
    lock = threading.Lock()
    writer = worker_mod._Writer(stream)
    w = worker_mod.Worker(Segmenter.load(good["card"], device="cpu", threads=1), writer)

    def replies():
        with lock:
            return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    yield w, replies
    w.stop()


WORKER_LINES = [name for name, _ in _bad_lines("/x.nii.gz", Path("/tmp"))]
WORKER_JOBS = [name for name, _, _ in _job_lines("/x.nii.gz", Path("/tmp"))]


@pytest.mark.parametrize("name", WORKER_LINES)
def test_fuzz_worker_line(name, live_worker, good, tmp_path):
    """A malformed line gets exactly one one-line error reply, and the worker still answers a ping."""
    w, replies = live_worker
    line = dict(_bad_lines(str(good["paths"]["FLAIR"]), tmp_path))[name]
    n = len(replies())
    try:
        alive = w.handle_line(line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line)
    except BaseException as e:
        pytest.fail(f"the worker raised {type(e).__name__}")
    new = replies()[n:]
    assert alive and len(new) == 1 and new[0]["event"] == "error" and "\n" not in new[0]["message"], new
    w.handle_line(json.dumps({"id": f"p-{name}", "op": "ping"}).encode())
    assert any(r.get("id") == f"p-{name}" and r.get("pong") for r in replies()), "no pong afterwards"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", WORKER_JOBS)
def test_fuzz_worker_job(name, live_worker, good, tmp_path):
    """A well-formed request that must fail: one error reply naming the problem, nothing written."""
    w, replies = live_worker
    body, needle = {n: (b, k) for n, b, k in _job_lines(str(good["paths"]["FLAIR"]), tmp_path)}[name]
    rid = f"j-{name}-{tmp_path.name}"
    w.handle_line(json.dumps({"id": rid, "op": "segment", **body}).encode("utf-8", "surrogateescape"))
    deadline = time.time() + 120
    while time.time() < deadline and not any(r.get("id") == rid and r["event"] in ("error", "result")
                                              for r in replies()):
        time.sleep(0.05)
    final = [r for r in replies() if r.get("id") == rid and r["event"] in ("error", "result")]
    assert len(final) == 1 and final[0]["event"] == "error" and final[0]["error"] != "InternalError", final
    assert needle in final[0]["message"], final
    assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())
    for p, d in good["digests"].items():
        assert _digest(p) == d


def test_fuzz_worker_stream_survives_an_endless_line(live_worker):
    """Over stdin, a 3 MB line is read in bounded pieces, refused once, and the next request is served."""
    from lckd.frontends import worker as worker_mod

    w, _ = live_worker
    stream = io.StringIO()
    lines = (b'{"id": "x", "op": "ping", "pad": "' + b"x" * (3 << 20) + b'"}\n'
             b'{"id": "p", "op": "ping"}\n{"id": "s", "op": "shutdown"}\n')
    code = worker_mod.serve(io.BytesIO(lines), worker_mod._Writer(stream), lambda: w.segmenter)
    replies = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert code == 0
    seen = [(r["id"], r["event"]) for r in replies if "cancelled" not in r]  # shutdown also reports its cancel
    assert seen == [(None, "ready"), (None, "error"), ("p", "result"), ("s", "result")], replies


# ----------------------------------------------------------------------------- batch folders

def _bad_case_files():
    """(case id, what to write as its FLAIR) for a BraTS 2023 batch folder."""
    return [
        ("BAD-garbage", lambda t, g: b"definitely not an image"),
        ("BAD-empty-file", lambda t, g: b""),
        ("BAD-truncated", lambda t, g: t["gz"][: len(t["gz"]) // 3]),
        ("BAD-zero-spacing", lambda t, g: _nrrd((8, 8, 8), (0, 1, 1))),
        ("BAD-100mm-spacing", lambda t, g: _nrrd((60, 60, 40), (100, 100, 100))),
        ("BAD-2d", lambda t, g: _nrrd((40, 40), (1, 1))),
        ("BAD-all-zero", lambda t, g: t["zero"]),
        ("BAD-nan", lambda t, g: t["nan"]),
    ]


def test_fuzz_batch_survives_every_bad_case_and_resumes(capsys, good, tmp_path):
    """Bad cases are error rows, good ones ok; the summary is written; a re-run redoes only the failures."""
    from lckd.research.phantom import make_phantom

    root, out = tmp_path / "in", tmp_path / "out"
    images, _ = make_phantom(6, SHAPE).to_sitk()
    stash = {}
    src = tmp_path / "_x.nii.gz"
    sitk.WriteImage(images["FLAIR"], str(src))
    stash["gz"] = src.read_bytes()
    sitk.WriteImage(images["FLAIR"] * 0, str(src))
    stash["zero"] = src.read_bytes()
    arr = sitk.GetArrayFromImage(images["FLAIR"])
    arr[4, 4, 4] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "_x.nrrd"))
    stash["nan"] = (tmp_path / "_x.nrrd").read_bytes()
    src.unlink()
    (tmp_path / "_x.nrrd").unlink()
    for cid in ("GOOD-1", "GOOD-2"):
        (root / cid).mkdir(parents=True)
        sitk.WriteImage(images["FLAIR"], str(root / cid / f"{cid}-t2f.nii.gz"))
        sitk.WriteImage(images["T1ce"], str(root / cid / f"{cid}-t1c.nii.gz"))
    bad = _bad_case_files()
    for cid, make in bad:
        (root / cid).mkdir(parents=True)
        # the batch reads .nii.gz / .nii names: NRRD bytes under a NIfTI name are still a bad file
        (root / cid / f"{cid}-t2f.nii.gz").write_bytes(make(stash, good))
    digests = {p: _digest(p) for p in root.rglob("*") if p.is_file()}
    argv = ["batch", str(root), str(out), "--threads", "1", "--model", str(good["card"])]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    with open(out / "summary.csv", newline="") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert {c for c, _ in bad} | {"GOOD-1", "GOOD-2"} == set(rows)
    for cid, _ in bad:
        assert rows[cid]["status"] == "error" and rows[cid]["message"], rows[cid]
        assert "internal error" not in rows[cid]["message"], rows[cid]
        assert not (out / f"{cid}.nii.gz").exists()
    assert rows["GOOD-1"]["status"] == rows["GOOD-2"]["status"] == "ok"
    names = {p.name for p in out.iterdir()}
    assert {n for n in names if n.endswith(".nii.gz")} == {"GOOD-1.nii.gz", "GOOD-2.nii.gz"}, names
    assert "summary.csv" in names and not [n for n in names if n.startswith(".")], names
    # a leftover 0-byte output (as older versions left on a full disk) is not taken as done
    (out / "GOOD-2.nii.gz").write_bytes(b"")
    code = main(argv)
    capsys.readouterr()
    with open(out / "summary.csv", newline="") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert rows["GOOD-1"]["status"] == "skipped" and rows["GOOD-2"]["status"] == "ok"
    assert all(rows[cid]["status"] == "error" for cid, _ in bad)
    assert all(_digest(p) == d for p, d in digests.items())
    assert not [p for p in tmp_path.rglob(".*tmp-*")]


# ----------------------------------------------------------------------------- memory guard

def test_memory_estimate_matches_the_measured_peaks():
    """600x600x400 voxels at the model's 1 mm: 5.8 GB measured with one scan, 10.9 GB with four."""
    from lckd.inference.inputchecks import estimate_memory

    img = sitk.Image(60, 60, 40, sitk.sitkFloat32)
    img.SetSpacing((10.0, 10.0, 10.0))  # the same physical extent, small in memory
    one = estimate_memory({"FLAIR": img}, "FLAIR", (1.0, 1.0, 1.0))
    four = estimate_memory({m: img for m in ("T1", "T1ce", "T2", "FLAIR")}, "FLAIR", (1.0, 1.0, 1.0))
    assert 5.8e9 * 0.9 < one < 5.8e9 * 1.25, one
    assert 10.9e9 * 0.9 < four < 10.9e9 * 1.25, four


def test_memory_guard_refuses_then_the_user_raises_it(capsys, good, tmp_path, monkeypatch):
    """Above the limit: one line naming the size and how to raise it; raised, the same case runs."""
    flair = good["paths"]["FLAIR"]
    monkeypatch.setenv("LCKD_MAX_MEMORY_GB", "0.5")
    line = _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--flair", flair))
    assert "GB" in line and "--max-memory" in line and "LCKD_MAX_MEMORY_GB" in line, line
    monkeypatch.setenv("LCKD_MAX_MEMORY_GB", "lots")
    _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--flair", flair), "LCKD_MAX_MEMORY_GB")
    monkeypatch.setenv("LCKD_MAX_MEMORY_GB", "0.5")
    code = main(_segment(tmp_path, "--flair", flair, "--max-memory", "64"))  # the option wins over the variable
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "seg.nii.gz").is_file()


def test_memory_guard_in_the_python_api(good):
    from lckd.base.errors import InputError
    from lckd.inference import Segmenter

    seg = Segmenter.load(good["card"], device="cpu", threads=1)
    with pytest.raises(InputError, match="memory"):
        seg.segment({"FLAIR": good["paths"]["FLAIR"]}, max_memory_gb=0.01)


# ----------------------------------------------------------------------------- DICOM series

def _dicom_series(folder: Path, slices: int = 12) -> list:
    """Write a small DICOM series (one file per slice, positions 1 mm apart) with SimpleITK."""
    folder.mkdir(parents=True)
    img = sitk.GetImageFromArray((np.random.default_rng(3).random((slices, 32, 32)) * 1000).astype(np.int16))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for i in range(slices):
        s = img[:, :, i]
        for tag, value in (("0020|000e", "1.2.826.0.1.3680043.2.1125.1.4242"), ("0008|0060", "MR"),
                           ("0020|0013", str(i)), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, i)))))):
            s.SetMetaData(tag, value)
        paths.append(folder / f"{i:03d}.dcm")
        writer.SetFileName(str(paths[-1]))
        writer.Execute(s)
    return paths


def _cut(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-500])


DICOM_DAMAGE = [
    ("one_slice_truncated", lambda ps: _cut(ps[5]), "no readable series"),
    ("one_slice_missing", lambda ps: ps[5].unlink(), "unevenly spaced"),
    ("two_slices_missing", lambda ps: (ps[3].unlink(), ps[8].unlink()), "unevenly spaced"),
    ("first_slice_truncated", lambda ps: _cut(ps[0]), "no readable series"),
    ("slice_replaced_by_garbage", lambda ps: ps[6].write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64),
     "no readable series"),
    ("single_slice_left", lambda ps: [p.unlink() for p in ps[1:]], "2D"),
]


@pytest.mark.parametrize("case", DICOM_DAMAGE, ids=[c[0] for c in DICOM_DAMAGE])
def test_fuzz_damaged_dicom_series(case, capsys, good, tmp_path):
    """A series with a slice cut short or missing is refused, not read as a different volume."""
    paths = _dicom_series(tmp_path / "series")
    case[1](paths)
    _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--t1", tmp_path / "series"), "series", case[2])


def _pydicom_series(folder: Path, tilt_degrees: float, slices: int = 12, thickness: float = 1.5) -> Path:
    """A small axial MR series written with pydicom whose slice positions drift along y by
    tan(tilt) per mm of z while ImageOrientationPatient stays axial: a gantry-tilted acquisition."""
    import math

    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(4)
    for i in range(slices):
        uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, uid, "MR"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.InstanceNumber, ds.SeriesNumber = "Tilt^Test", "TILT", i + 1, 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        z = i * thickness
        ds.ImagePositionPatient = [-16.0, -16.0 + z * math.tan(math.radians(tilt_degrees)), z]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], thickness
        ds.Rows = ds.Columns = 32
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = (rng.random((32, 32)) * 1000).astype(np.int16).tobytes()
        pydicom.dcmwrite(folder / f"{i:03d}.dcm", ds, enforce_file_format=True)
    return folder


def test_fuzz_gantry_tilted_dicom_series_is_refused(capfd, good, tmp_path):
    """ITK reads a tilted series as a straight volume (slices 1.55 mm apart instead of 1.5, the tilt
    dropped): sheared geometry, refused as it is in every other format."""
    series = _pydicom_series(tmp_path / "tilted", 15.0)
    before = _files(tmp_path)
    line = _assert_refused(capfd, good, tmp_path, _segment(tmp_path, "--t1", series), "tilted", "series",
                           "sheared", "gantry tilt of 15.0 deg", "orthogonal grid", before=before)
    assert "slices step 4.4 mm sideways over 16 mm" in line, line


def test_an_untilted_pydicom_series_still_reads(tmp_path):
    from lckd.io.imageio import read_image

    img = read_image(_pydicom_series(tmp_path / "straight", 0.0))
    assert img.GetSize() == (32, 32, 12) and np.allclose(img.GetSpacing(), (1.0, 1.0, 1.5))


def test_an_intact_dicom_series_or_a_contiguous_part_still_reads(tmp_path):
    from lckd.io.imageio import read_image

    paths = _dicom_series(tmp_path / "series")
    assert read_image(tmp_path / "series").GetSize() == (32, 32, 12)
    for p in paths[:4]:
        p.unlink()
    assert read_image(tmp_path / "series").GetSize() == (32, 32, 8)


def _register_cases():
    def tiny(t, g):
        p = t / "four.nrrd"
        sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(1).random((4, 4, 4)).astype(np.float32) + 1),
                        str(p))
        return ["--t1ce", g["paths"]["T1ce"], "--flair", p]

    def barely(t, g):
        img = sitk.Image(g["image"])
        img.SetOrigin((img.GetOrigin()[0] + 0.93 * img.GetSize()[0] * img.GetSpacing()[0], *img.GetOrigin()[1:]))
        p = t / "barely.nii.gz"
        sitk.WriteImage(img, str(p))
        return ["--t1ce", g["paths"]["T1ce"], "--flair", p]

    return [("4x4x4_scan", tiny), ("barely_overlapping", barely)]


REGISTER = _register_cases()


@pytest.mark.parametrize("case", REGISTER, ids=[c[0] for c in REGISTER])
def test_fuzz_register_that_cannot_work(case, capsys, good, tmp_path):
    args = case[1](tmp_path, good)
    _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--register", *args), "register")


# ----------------------------------------------------------------------------- hostile inputs, round two
# (issue 23) Each class: the wrong file read silently, a header reading outside its folder, geometry
# changed silently, a mask taken for a scan, path text no file system takes, misleading lines, batch
# folders without a row, stale temporary files.

def _float_image(arr: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(spacing)
    return img


def _siblings():
    """(id, named file, the sibling files written beside it): ITK's NIfTI reader may take the other's voxels."""
    return [("nii.gz_beside_nii", "X.nii.gz", ["X.nii"]), ("nii_beside_nii.gz", "X.nii", ["X.nii.gz"]),
            ("nii.gz_beside_hdr_img", "X.nii.gz", ["X.hdr"]), ("hdr_beside_nii", "X.hdr", ["X.nii"]),
            ("nii.gz_beside_upper_NII", "X.nii.gz", ["X.NII"])]


SIBLINGS = _siblings()


@pytest.mark.parametrize("case", SIBLINGS, ids=[c[0] for c in SIBLINGS])
def test_fuzz_sibling_with_the_same_name_is_refused(case, capsys, good, tmp_path):
    """`X.nii` next to `X.nii.gz`: ITK reads the other file's voxels; refused naming both files."""
    _, named, others = case
    folder = tmp_path / "scans"
    folder.mkdir()
    sitk.WriteImage(good["image"], str(folder / named))
    blank = sitk.Image(good["image"]) * 0 + 1
    for other in others:
        suffix = other[other.index("."):]
        sitk.WriteImage(blank, str(tmp_path / ("_b" + suffix.lower())))   # ITK writes lower-case names only
        for made in list(tmp_path.glob("_b.*")):                           # (.hdr comes with its .img)
            made_suffix = made.name[2:]
            made.rename(folder / ("X" + (suffix if made_suffix == suffix.lower() else made_suffix)))
    before = _files(tmp_path)
    line = _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--flair", folder / named), named,
                           others[0], "ambiguous", before=before)
    assert "move or rename" in line


def test_a_named_file_without_siblings_still_reads(good, tmp_path):
    from lckd.io.imageio import read_image

    for name in ("X.nii.gz", "Y.hdr"):
        sitk.WriteImage(good["image"], str(tmp_path / name))
        assert read_image(tmp_path / name).GetSize() == good["image"].GetSize()


def _data_file_headers():
    """(id, header name, header text, needle): headers whose data file lies outside their folder."""
    mhd = "ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_UCHAR\nElementDataFile = {}\n"
    nhdr = "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 8 8 8\nencoding: raw\ndata file: {}\n\n"
    return [
        ("mhd_absolute", "a.mhd", mhd.format("/etc/passwd"), "absolute"),
        ("mhd_dotdot", "b.mhd", mhd.format("../outside.raw"), ".."),
        ("mhd_dotdot_deep", "c.mhd", mhd.format("sub/../../outside.raw"), ".."),
        ("mha_absolute", "d.mha", mhd.format("/etc/passwd"), "absolute"),
        ("mhd_list_dotdot", "e.mhd", mhd.format("LIST").rstrip("\n") + "\n../outside.raw\n", ".."),
        ("mhd_link_outside", "f.mhd", mhd.format("link.raw"), "link"),
        ("nhdr_absolute", "g.nhdr", nhdr.format("/etc/passwd"), "absolute"),
        ("nhdr_dotdot", "h.nhdr", nhdr.format("../outside.raw"), ".."),
        ("nrrd_with_detached_data", "i.nrrd", nhdr.format("../outside.raw"), ".."),
        ("nhdr_list_absolute", "j.nhdr", nhdr.replace("data file: {}\n\n", "data file: LIST\n/etc/passwd\n"),
         "absolute"),
        ("nhdr_pattern_dotdot", "k.nhdr", nhdr.format("../s%03d.raw 1 8 1 2"), ".."),
    ]


DATA_FILES = _data_file_headers()


@pytest.mark.parametrize("case", DATA_FILES, ids=[c[0] for c in DATA_FILES])
def test_fuzz_header_data_file_outside_its_folder(case, capsys, good, tmp_path):
    """A header may only make us read a data file inside its own folder: no absolute path, no '..', no link out."""
    _, name, text, needle = case
    folder = tmp_path / "scans"
    folder.mkdir()
    (tmp_path / "outside.raw").write_bytes(bytes(range(256)) * 2)   # a file the header must not reach
    (folder / "link.raw").symlink_to(tmp_path / "outside.raw")
    (folder / name).write_text(text)
    before = _files(tmp_path)
    line = _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--flair", folder / name), name, needle,
                           "inside its own folder" if needle != "link" else "outside", before=before)
    assert "data file" in line


def test_a_header_with_its_data_file_beside_it_still_reads(good, tmp_path):
    from lckd.io.imageio import read_image

    arr = sitk.GetArrayFromImage(good["image"])
    sitk.WriteImage(good["image"], str(tmp_path / "ok.mhd"))          # writes ok.raw (or ok.zraw) beside it
    sub = tmp_path / "data"
    sub.mkdir()
    (sub / "v.raw").write_bytes(arr.astype("<f4").tobytes())
    z, y, x = arr.shape
    (tmp_path / "sub.nhdr").write_text(f"NRRD0004\ntype: float\ndimension: 3\nsizes: {x} {y} {z}\n"
                                       "encoding: raw\nendian: little\ndata file: data/v.raw\n\n")
    for name in ("ok.mhd", "sub.nhdr"):
        back = sitk.GetArrayFromImage(read_image(tmp_path / name))
        assert np.array_equal(back, arr), name


def _sheared():
    """(id, name, builder(tmp, image) -> bytes): the same 13-degree shear in each format's header."""
    shear = (0.225, 0.9744)

    def mha(t, img):
        p = t / "_s.mha"
        sitk.WriteImage(img, str(p))
        data = p.read_bytes()
        p.unlink()
        return data.replace(b"TransformMatrix = 1 0 0 0 1 0 0 0 1",
                            f"TransformMatrix = 1 0 0 {shear[0]} {shear[1]} 0 0 0 1".encode())

    def nrrd(t, img):
        p = t / "_s.nrrd"
        sitk.WriteImage(img, str(p))
        data = p.read_bytes()
        p.unlink()
        return data.replace(b"space directions: (1,0,0) (0,1,0) (0,0,1)",
                            f"space directions: (1,0,0) ({shear[0]},{shear[1]},0) (0,0,1)".encode())

    def nifti(t, img):
        d = _nifti_bytes(img, t)
        d = _patch(d, 252, "<h", 0)                             # no qform: only the sheared sform
        return _patch(d, 280, "<4f", -1.0, shear[0], 0.0, 0.0)

    return [("mha_transform_matrix", "shear.mha", mha), ("nrrd_space_directions", "shear.nrrd", nrrd),
            ("nifti_sform", "shear.nii", nifti)]


SHEARED = _sheared()


@pytest.mark.parametrize("case", SHEARED, ids=[c[0] for c in SHEARED])
def test_fuzz_sheared_direction_is_refused_in_every_format(case, capsys, good, tmp_path):
    """One rule for every format: a non-orthogonal direction matrix is refused with the same words."""
    _, name, build = case
    path = tmp_path / name
    path.write_bytes(build(tmp_path, good["image"]))
    before = _files(tmp_path)
    _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--flair", path), name, "sheared (non-orthogonal)",
                    before=before)


def _nan_block(good) -> np.ndarray:
    """The phantom with a 5 x 6 x 7 block of NaN (over the tumour's side) and one +Inf voxel."""
    arr = sitk.GetArrayFromImage(good["image"]).astype(np.float32)
    arr[10:15, 14:20, 16:23] = np.nan
    arr[20, 20, 20] = np.inf
    return arr


@pytest.mark.parametrize("name", ["block.nii", "block.nii.gz", "block.nrrd", "pair.hdr"])
def test_fuzz_nan_and_inf_are_refused_in_every_format_with_their_count(name, capfd, good, tmp_path):
    """NIfTI too: ITK's reader would set them to 0 (a NaN block over a tumour changed its core by 41 %);
    the same words and counts as for NRRD, naming the file."""
    path = tmp_path / name
    img = _float_image(_nan_block(good))
    img.CopyInformation(good["image"])
    sitk.WriteImage(img, str(path))
    before = _files(tmp_path)
    capfd.readouterr()
    line = _assert_refused(capfd, good, tmp_path, _segment(tmp_path, "--flair", path), name, before=before)
    assert f"has 210 NaN and 1 infinite voxel values (of {int(np.prod(SHAPE))}); fix or re-export" in line, line


def test_nifti_block_scan_counts_across_chunks_and_leaves_finite_files_alone(good, tmp_path, monkeypatch):
    from lckd.io import niftiblock

    monkeypatch.setattr(niftiblock, "CHUNK", 4093)        # items split between chunks
    for name in ("a.nii", "b.nii.gz"):
        sitk.WriteImage(_float_image(_nan_block(good)), str(tmp_path / name))
        scan = niftiblock.scan_nifti(tmp_path / name)
        assert (scan.problem, scan.nan, scan.inf, scan.voxels) == (None, 210, 1, int(np.prod(SHAPE)))
    sitk.WriteImage(good["image"], str(tmp_path / "ok.nii.gz"))
    scan = niftiblock.scan_nifti(tmp_path / "ok.nii.gz")
    assert (scan.problem, scan.nan, scan.inf) == (None, 0, 0)
    sitk.WriteImage(sitk.Cast(good["image"], sitk.sitkInt16), str(tmp_path / "int.nii"))
    assert niftiblock.scan_nifti(tmp_path / "int.nii").nan == 0    # integers hold no NaN: not scanned


def test_a_sheared_image_in_memory_is_refused_too(good):
    from lckd.base.errors import InputError
    from lckd.inference.inputchecks import read_and_check

    img = sitk.Image(good["image"])
    img.SetDirection((1, 0.225, 0, 0, 0.9744, 0, 0, 0, 1))
    with pytest.raises(InputError, match="sheared"):
        read_and_check({"FLAIR": img})


def _contrast_free():
    """(id, name, array maker from the phantom's array): images without contrast inside the brain."""
    def constant_brain(value):
        return lambda a: np.where(a > 0, np.float32(value), np.float32(0))

    return [("brain_1e30", "c30.nrrd", constant_brain(1e30)), ("brain_1", "mask.nii.gz", constant_brain(1.0)),
            ("brain_minus_5", "neg.mha", constant_brain(-5.0))]


CONTRAST_FREE = _contrast_free()


@pytest.mark.parametrize("case", CONTRAST_FREE, ids=[c[0] for c in CONTRAST_FREE])
def test_fuzz_image_without_contrast_inside_the_brain(case, capsys, good, tmp_path):
    """A constant brain on a zero background is a mask, not a scan: refused before the model loads."""
    _, name, make = case
    arr = make(sitk.GetArrayFromImage(good["image"]))
    path = tmp_path / name
    sitk.WriteImage(_float_image(arr), str(path))
    before = _files(tmp_path)
    _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--flair", path), name, "no contrast", "mask",
                    before=before)


def test_inputs_accepted_on_purpose_stay_accepted(good, tmp_path):
    """Values scaled by 1e20, zero pixdim with a valid sform and a NaN scl_slope are still read and checked."""
    from lckd.inference.inputchecks import read_and_check

    arr = sitk.GetArrayFromImage(good["image"]).astype(np.float32)
    sitk.WriteImage(_float_image(arr * np.float32(1e20)), str(tmp_path / "scaled.nrrd"))
    d = _nifti_bytes(good["image"], tmp_path)
    (tmp_path / "pixdim0.nii").write_bytes(_patch(d, 80, "<3f", 0.0, 0.0, 0.0))
    (tmp_path / "slope_nan.nii").write_bytes(_patch(d, 112, "<f", float("nan")))
    for name in ("scaled.nrrd", "pixdim0.nii", "slope_nan.nii"):
        checked = read_and_check({"FLAIR": tmp_path / name})
        assert checked.images["FLAIR"].GetSize() == good["image"].GetSize(), name


def test_fuzz_micrometre_spacing_names_the_file_and_the_problem(capsys, good, tmp_path):
    """0.001 mm spacing used to end in 'all inputs are empty' naming no file."""
    path = tmp_path / "tiny.nrrd"
    sitk.WriteImage(_float_image(sitk.GetArrayFromImage(good["image"]), (0.001, 0.001, 0.001)), str(path))
    before = _files(tmp_path)
    line = _assert_refused(capsys, good, tmp_path, _segment(tmp_path, "--flair", path), "tiny.nrrd", "spacing",
                           before=before)
    assert "empty" not in line


def _unusable_arguments(good):
    flair = str(good["paths"]["FLAIR"])
    return [
        ("nul_in_input", lambda t: _segment(t, "--flair", flair + "\0x"), "NUL"),
        ("surrogate_in_input", lambda t: _segment(t, "--flair", flair[:-7] + "\ud800.nii.gz"), "surrogate"),
        ("nul_in_output", lambda t: ["segment", "-q", "--flair", flair, "-o", str(t / "s\0.nii.gz")], "NUL"),
        ("surrogate_in_output", lambda t: ["segment", "-q", "--flair", flair, "-o", str(t / "\udfff.nii.gz")],
         "surrogate"),
        ("nul_in_probabilities", lambda t: _segment(t, "--flair", flair, "--probabilities", str(t / "p\0")), "NUL"),
        ("nul_in_json", lambda t: _segment(t, "--flair", flair, "--json", str(t / "r\0.json")), "NUL"),
        ("nul_in_model", lambda t: _segment(t, "--flair", flair, "--model", str(t / "m\0.json")), "NUL"),
        ("nul_in_labels", lambda t: _segment(t, "--flair", flair, "--labels", "brats\0"), "NUL"),
    ]


UNUSABLE = [c[0] for c in _unusable_arguments({"paths": {"FLAIR": Path("/x/flair.nii.gz")}})]


@pytest.mark.parametrize("name", UNUSABLE)
def test_fuzz_unusable_path_text_on_the_command_line(name, capsys, good, tmp_path):
    """A NUL byte or a lone surrogate is refused by name before any file-system call (was an internal error)."""
    make, needle = {n: (m, k) for n, m, k in _unusable_arguments(good)}[name]
    _assert_refused(capsys, good, tmp_path, make(tmp_path), needle)


def test_fuzz_unusable_path_text_in_batch_and_info(capsys, good, tmp_path):
    _assert_refused(capsys, good, tmp_path, ["batch", str(tmp_path / "in\0"), str(tmp_path / "out")], "NUL",
                    command="batch")
    _assert_refused(capsys, good, tmp_path, ["batch", str(tmp_path), str(tmp_path / "o\ud800")], "surrogate",
                    command="batch")
    _assert_refused(capsys, good, tmp_path, ["info", "--model", "m\0.json"], "NUL", command="info")


def test_path_text_checks_touch_no_file_system():
    from lckd.base.errors import InputError
    from lckd.io.pathcheck import check_path_text, path_problem

    assert path_problem("/data/t1.nii.gz") is None
    assert "NUL" in path_problem("a\0b")
    assert "surrogate" in path_problem("a\ud800b")
    assert "UTF-8" in path_problem(os.fsdecode(b"a\xffb"))   # the documented non-UTF-8 refusal stays
    with pytest.raises(InputError, match="NUL"):
        check_path_text("x\0y", "T1")


def _dash_names(good):
    flair = str(good["paths"]["FLAIR"])
    return [
        ("input", lambda t: ["segment", "--t1", "-x.nii.gz", "-o", str(t / "s.nii.gz")], "-x.nii.gz",
         "--t1=-x.nii.gz"),
        ("output", lambda t: ["segment", "--flair", flair, "-o", "-seg.nii.gz"], "-seg.nii.gz", "-o=-seg.nii.gz"),
        ("batch_folder", lambda t: ["batch", "-in", str(t / "out")], "-in", "./-in"),
    ]


DASH = [c[0] for c in _dash_names({"paths": {"FLAIR": Path("/x.nii.gz")}})]


@pytest.mark.parametrize("name", DASH)
def test_fuzz_name_beginning_with_a_dash(name, capsys, good, tmp_path):
    """A usage error, status 2, in one line that names the file and how to pass it (was 12 lines of usage)."""
    make, *needles = {c[0]: c[1:] for c in _dash_names(good)}[name]
    code = main(make(tmp_path))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not list(tmp_path.iterdir())


def test_dash_check_leaves_valid_command_lines_alone():
    from lckd.frontends.cli import build_parser, dash_name_problem

    for argv in (["segment", "--t1=-x.nii.gz", "-o", "s.nii.gz"], ["segment", "--t1", "./-x.nii.gz", "-o", "s.nii.gz"],
                 ["segment", "--t1", "a.nii.gz", "--overlap", "-0.5", "-o", "s.nii.gz"],
                 ["segment", "--t1", "a.nii.gz", "-oseg.nii.gz"], ["segment", "--t1", "a.nii.gz", "--prob", "d"],
                 ["batch", "in", "out", "-q"]):
        assert dash_name_problem(build_parser(argv), argv) is None, argv


def test_fuzz_read_only_file_system_is_not_permission_denied(good, tmp_path):
    """A new output folder on a read-only file system is worded from the real errno."""
    import subprocess
    import sys

    ro = tmp_path / "ro"
    ro.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o ro,size=1m tmpfs '{ro}'"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot mount a read-only file system here (needs unshare -rm and mount)")
    script = (f"mount -t tmpfs -o ro,size=1m tmpfs '{ro}' && exec {sys.executable} -m lckd.frontends.cli segment -q "
              f"--flair '{good['paths']['FLAIR']}' -o '{ro}/new/seg.nii.gz'")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "Read-only file system" in lines[0] and "Permission denied" not in lines[0], lines[0]
    assert "seg.nii.gz" in lines[0]


def test_fuzz_batch_gives_every_folder_a_row(capsys, good, tmp_path):
    """Folders named '..dots' or with a newline hold valid scans and are segmented; a folder without
    scans is an error row saying so; hidden folders without scans and the output folder are not cases."""
    from lckd.research.phantom import make_phantom

    root = tmp_path / "in"
    out = root / "out"                      # the output inside the input: not a case folder
    images, _ = make_phantom(6, SHAPE).to_sitk()
    for cid in ("..dots", "new\nline"):
        (root / cid).mkdir(parents=True)
        sitk.WriteImage(images["FLAIR"], str(root / cid / f"{cid}-t2f.nii.gz"))
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("no scans here")
    (root / "piped").mkdir()
    os.mkfifo(root / "piped" / "piped-t1n.nii.gz")      # a scan's name on a named pipe: no scan, say why
    (root / ".git").mkdir()
    code = main(["batch", str(root), str(out), "-q", "--threads", "1", "--model", str(good["card"])])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    with open(out / "summary.csv", newline="") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"..dots", "new\\nline", "notes", "piped"}, rows
    assert rows["..dots"]["status"] == rows["new\\nline"]["status"] == "ok", rows
    assert rows["notes"]["status"] == "error" and "no scan" in rows["notes"]["message"]
    assert rows["piped"]["status"] == "error"
    assert "'piped-t1n.nii.gz' is a named pipe, not a regular file" in rows["piped"]["message"], rows["piped"]
    assert (out / "..dots.nii.gz").is_file() and (out / "new\nline.nii.gz").is_file()


def test_fuzz_batch_folder_holding_only_a_named_pipe_names_it(capsys, good, tmp_path):
    """Not 'no BraTS case found' alone: the entry that looked like a scan is named with what it is."""
    for where in ("flat", "case"):
        root = tmp_path / where
        folder = root / "C1" if where == "case" else root
        folder.mkdir(parents=True)
        os.mkfifo(folder / "C1-t1n.nii.gz")
        line = _assert_refused(capsys, good, tmp_path, ["batch", str(root), str(tmp_path / f"out-{where}"), "-q",
                                                        "--threads", "1"], "no BraTS case found",
                               command="batch")
        shown = "C1/C1-t1n.nii.gz" if where == "case" else "C1-t1n.nii.gz"
        assert f"'{shown}' is a named pipe, not a regular file" in line, line


def test_fuzz_stale_temporary_files_are_removed_carefully(good, tmp_path):
    """A write removes the temporary files a killed run left for the same name: only our own naming,
    only old ones, never one a live process holds."""
    import subprocess
    import sys

    from lckd.io.imageio import STALE_TEMP_SECONDS, write_image

    old = time.time() - STALE_TEMP_SECONDS - 60
    stale = tmp_path / ".seg.tmp-0123abcd.nii.gz"
    fresh = tmp_path / ".seg.tmp-4567cdef.nii.gz"
    held = tmp_path / ".seg.tmp-89abcdef.nii.gz"
    other = tmp_path / ".other.tmp-0123abcd.nii.gz"          # another output's: not ours to judge
    mine = tmp_path / ".seg.tmp-notours.nii.gz"              # not our naming
    for p in (stale, fresh, held, other, mine):
        p.write_bytes(b"partial")
    for p in (stale, held, other, mine):
        os.utime(p, (old, old))
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\n"
                               f"f = open({str(held)!r}, 'rb'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                               "print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        write_image(good["image"], tmp_path / "seg.nii.gz")
    finally:
        holder.kill()
        holder.wait()
    assert not stale.exists()
    assert fresh.exists() and held.exists() and other.exists() and mine.exists()
    assert (tmp_path / "seg.nii.gz").is_file()
