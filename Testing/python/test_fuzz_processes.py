"""Fuzz suite, process part: full disks, short writes, SIGTERM, hostile file names, named pipes, races.

These run `python -m lckd.frontends.cli` in child processes, because what they exercise kills or
hangs a process (SIGABRT inside ITK on a non-UTF-8 name, a named pipe that never ends,
a signal) or needs a resource limit or a small file system of its own. Each asserts the
exit status, one line on stderr, no traceback, and that no output or temporary file is
left. The full-disk tests mount a small tmpfs in a user namespace (`unshare -rm`) and
skip where the machine does not allow it.
"""
from __future__ import annotations

import csv
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

SHAPE = (32, 40, 40)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A small phantom case: modality -> NIfTI path."""
    from phantom_files import write_phantom_files

    return write_phantom_files(tmp_path_factory.mktemp("proc_case"), 8, SHAPE)[0]


def _lckd(*args, timeout=120, preexec=None, cwd=None):
    cmd = [sys.executable, "-m", "lckd.frontends.cli", *map(os.fsdecode, args)]
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=ENV, preexec_fn=preexec, cwd=cwd)


def _one_error_line(proc, command="segment", status=1) -> str:
    err = proc.stderr.decode("utf-8", "replace")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == status, (proc.returncode, err[-800:])
    assert "Traceback" not in err
    assert len(lines) == 1, err
    if status == 1:
        assert lines[0].startswith(f"lckd {command}: error: "), lines[0]
    return lines[0]


def _no_files(folder: Path) -> list:
    return [p for p in Path(folder).rglob("*") if p.is_file()] if Path(folder).exists() else []


# ----------------------------------------------------------------------------- full disk

def _can_mount_tmpfs(tmp_path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = tmp_path / "_probe"
    probe.mkdir()
    r = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{probe}'"],
                       capture_output=True, timeout=30)
    probe.rmdir()
    return r.returncode == 0


def _in_small_fs(tmp_path, script: str, size: str = "8k") -> subprocess.CompletedProcess:
    """Run `script` (sh) with $DISK a fresh tmpfs of `size`, in a private mount namespace."""
    disk = tmp_path / "disk"
    disk.mkdir()
    full = f"mount -t tmpfs -o size={size} tmpfs '{disk}' && DISK='{disk}' && export DISK && {script}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", full], capture_output=True, timeout=240, env=ENV)


@pytest.fixture()
def small_fs(tmp_path):
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("this machine does not allow mounting a tmpfs in a user namespace")
    return lambda script, size="8k": _in_small_fs(tmp_path, script, size)


def _py(*args) -> str:
    return " ".join([f"'{sys.executable}'", "-m", "lckd.frontends.cli", *[f"'{a}'" for a in map(str, args)]])


def test_full_disk_segment_writes_nothing_and_says_so(small_fs, case):
    """On a full file system every output type fails with one line and leaves no file behind."""
    flair = case["FLAIR"]
    runs = []
    outs = ("seg.nii", "seg.nii.gz", "seg.mha", "seg.nrrd", "seg.seg.nrrd")
    for out in outs:
        runs.append(f"{_py('segment', '-q', '--threads', '1', '--flair', flair, '-o', f'$DISK/{out}')}"
                    .replace("'$DISK/", '"$DISK"\'/'))
    # fill the disk first: even a compressed labelmap of a few hundred bytes no longer fits
    fill = 'head -c 7800 /dev/zero > "$DISK/filler"'
    sep = '; echo "::status=$?"; '
    script = fill + "; " + sep.join(runs) + sep + 'rm "$DISK/filler"; ls -A "$DISK"; echo "::listed"'
    r = small_fs(script)
    out = r.stdout.decode()
    err = [ln for ln in r.stderr.decode().splitlines() if ln.strip()]
    statuses = [ln for ln in out.splitlines() if ln.startswith("::status=")]
    assert statuses == ["::status=1"] * len(outs), (out, err)
    assert len(err) == len(outs) and all(ln.startswith("lckd segment: error: cannot write") for ln in err), err
    assert all("No space left on device" in ln for ln in err), err
    listing = out.split("::status=1")[-1].replace("::listed", "").split()
    assert listing == [], f"left on the full disk: {listing}"


def test_disk_filling_mid_write_is_no_space_left_in_every_format(small_fs, tmp_path):
    """A BraTS-size labelmap on a disk with a little room left: the writers fail in their own words
    (NRRD: '_nrrdGzWrite: failed to write to file') or leave a file cut short; every format says
    'No space left on device'."""
    code = (
        "import os, numpy as np, SimpleITK as sitk\n"
        "from lckd.inference.resultfiles import write_labelmap\nfrom lckd.base.errors import OutputError\n"
        "a = (np.random.default_rng(0).random((155, 240, 240)) < 0.05).astype(np.uint8) * 2\n"
        "img, disk = sitk.GetImageFromArray(a), os.environ['DISK']\n"
        "for room in (2000, 100000, 300000):\n"
        "    for ext in ('nii', 'nii.gz', 'mha', 'nrrd', 'seg.nrrd'):\n"
        "        for f in os.listdir(disk): os.remove(os.path.join(disk, f))\n"
        "        with open(os.path.join(disk, 'filler'), 'wb') as fh: fh.write(bytes(4 * 1024 * 1024 - room))\n"
        "        try:\n            write_labelmap(img, os.path.join(disk, 'seg.' + ext)); print('WROTE', ext)\n"
        "        except OutputError as e: print('REFUSED', ext, '|', e)\n"
        "        print('LEFT', sorted(os.listdir(disk)))\n")
    (tmp_path / "w.py").write_text(code)
    r = small_fs(f"'{sys.executable}' '{tmp_path / 'w.py'}'", size="4m")
    out = r.stdout.decode().splitlines()
    refused = [ln for ln in out if ln.startswith("REFUSED")]
    assert len(refused) == 15 and not [ln for ln in out if ln.startswith("WROTE")], (out, r.stderr.decode()[-800:])
    assert all("No space left on device" in ln for ln in refused), refused
    assert all(ln == "LEFT ['filler']" for ln in out if ln.startswith("LEFT")), out
    assert r.stderr.decode().strip() == "", r.stderr.decode()[-800:]


def test_matplotlib_says_nothing_when_home_and_tmpdir_cannot_be_written(tmp_path):
    """A preview picture under a HOME and TMPDIR that cannot be written: the picture, and not a word
    on stderr (matplotlib logged 'mkdir -p failed' and 'created a temporary cache directory')."""
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    env = {k: v for k, v in ENV.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    env.update(HOME=str(blocked / "home"), TMPDIR=str(blocked / "tmp"))
    code = ("import numpy as np\nfrom lckd.frontends.preview import Panel, save_outline_figure\n"
            f"save_outline_figure([Panel(np.random.default_rng(0).random((20, 20)), 'x')], r'{tmp_path}/fig.png')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, env=env)
    assert r.returncode == 0 and r.stderr.decode() == "", r.stderr.decode()[-800:]
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_full_disk_probabilities_leave_no_labelmap(small_fs, case):
    """The labelmap fits but the probability maps do not: nothing at all is written."""
    cmd = _py("segment", "-q", "--threads", "1", "--flair", case["FLAIR"], "-o", "DISKSEG", "--probabilities",
              "DISKPROB").replace("'DISKSEG'", '"$DISK/seg.nii.gz"').replace("'DISKPROB'", '"$DISK/prob"')
    r = small_fs(cmd + '; echo "::status=$?"; cd "$DISK" && find . -mindepth 1', size="64k")
    out = r.stdout.decode()
    err = [ln for ln in r.stderr.decode().splitlines() if ln.strip()]
    assert "::status=1" in out, (out, err)
    assert len(err) == 1 and "probability" in err[0], err
    assert out.split("::status=1")[-1].split() == [], f"left on the disk: {out}"


def test_full_disk_batch_never_marks_a_failed_write_ok_and_resumes(small_fs, case, tmp_path):
    """A batch on a full disk records no case as done; on a disk with room a re-run does them all."""
    src = tmp_path / "in"
    for cid in ("C-1", "C-2"):
        (src / cid).mkdir(parents=True)
        shutil.copy(case["FLAIR"], src / cid / f"{cid}-t2f.nii.gz")
    batch = _py("batch", src, "DISKOUT", "--threads", "1").replace("'DISKOUT'", '"$DISK/out"')
    script = (f'head -c 7000 /dev/zero > "$DISK/filler"; {batch}; echo "::first=$?"; ls -A "$DISK/out"; '
              f'echo "::after-first"; rm "$DISK/filler"; mount -o remount,size=4m "$DISK"; {batch}; '
              f'echo "::second=$?"; cat "$DISK/out/summary.csv"')
    r = small_fs(script)
    out = r.stdout.decode()
    err = r.stderr.decode()
    assert "::first=1" in out and "Traceback" not in err, (out, err[-800:])
    first_listing = out.split("::first=1")[1].split("::after-first")[0].split()
    assert not [n for n in first_listing if n.endswith(".nii.gz") or "tmp-" in n], first_listing
    assert "::second=0" in out, (out, err[-800:])
    rows = list(csv.DictReader(out.split("::second=0", 1)[1].strip().splitlines()))
    assert {r["case"]: r["status"] for r in rows} == {"C-1": "ok", "C-2": "ok"}


def test_short_write_is_caught_before_the_rename(case, tmp_path):
    """A file-size limit cuts every write short (as a full disk does): no labelmap, one line, exit 1."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG / short writes instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    out = tmp_path / "out"
    for name in ("seg.nii", "seg.seg.nrrd"):
        r = _lckd("segment", "-q", "--threads", "1", "--t2", case["T2"], "--flair", case["FLAIR"],
                  "-o", out / name, "--probabilities", out / "p", preexec=limit)
        line = _one_error_line(r)
        assert "cannot write" in line, line
        assert _no_files(out) == [], _no_files(out)
    # the same run without the limit works: the failure came from the short write alone
    r = _lckd("segment", "-q", "--threads", "1", "--t2", case["T2"], "-o", out / "seg.nii")
    assert r.returncode == 0, r.stderr.decode()[-500:]
    assert sitk.ReadImage(str(out / "seg.nii")).GetSize() == sitk.ReadImage(str(case["T2"])).GetSize()


def test_write_image_refuses_a_short_write_in_the_api(tmp_path):
    """`lckd.io.imageio.write_image` itself (Python API, worker, batch) never renames a short file."""
    code = (
        "import resource, signal, SimpleITK as sitk, numpy as np\n"
        "from lckd.io.imageio import write_image\nfrom lckd.base.errors import OutputError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (30000, 30000))\n"
        "img = sitk.GetImageFromArray(np.random.default_rng(0).random((40, 40, 40)).astype(np.float32))\n"
        f"for ext in ('.nii', '.nii.gz', '.nrrd', '.mha'):\n"
        f"    try:\n        write_image(img, r'{tmp_path}/x' + ext)\n        print('WROTE', ext)\n"
        "    except OutputError as e:\n        print('REFUSED', ext, str(e).count(chr(10)))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, env=ENV)
    out = r.stdout.decode().split()
    assert r.returncode == 0, r.stderr.decode()[-800:]
    assert out.count("REFUSED") == 4, r.stdout.decode()
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- signals

def test_sigterm_mid_run_exits_130_and_leaves_nothing(tmp_path):
    """What schedulers send: the run unwinds like Ctrl-C, exit 130, no output and no temporary file."""
    from lckd.research.phantom import make_phantom

    images, _ = make_phantom(9, (70, 96, 96)).to_sitk()  # many windows at overlap 0.95: seconds of work
    args = []
    for m in ("T1ce", "FLAIR"):
        sitk.WriteImage(images[m], str(tmp_path / f"{m}.nii.gz"))
        args += [f"--{m.lower()}", str(tmp_path / f"{m}.nii.gz")]
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "lckd.frontends.cli", "segment", "--threads", "1", "--overlap", "0.95", *args,
           "-o", str(out / "seg.nii.gz"), "--probabilities", str(out / "p")]
    # Unbuffered: the first byte the child prints (on either stream) comes after `main` has set
    # its SIGTERM handler, whatever the progress display looks like; the run then has seconds to go.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**ENV, "PYTHONUNBUFFERED": "1"})
    seen = bytearray()

    def pump():
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            seen.extend(chunk)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    deadline = time.time() + 90
    while not seen and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert seen and proc.poll() is None, bytes(seen)[-500:]
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=60)
    t.join(timeout=5)
    text = bytes(seen).decode("utf-8", "replace")
    assert rc == 130, text[-500:]
    assert "Traceback" not in text and text.strip().splitlines()[-1].strip().endswith("interrupted")
    assert _no_files(out) == [] and not list(out.glob(".*")), list(out.rglob("*"))


def test_concurrent_runs_in_one_folder_do_not_race(case, tmp_path):
    out = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-m", "lckd.frontends.cli", "segment", "-q", "--threads", "1",
                               "--flair", str(case["FLAIR"]), "-o", str(out / f"seg{i}.nii.gz")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV) for i in range(2)]
    results = [(p.wait(timeout=180), p.stderr.read().decode()) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    assert sorted(p.name for p in out.iterdir()) == ["seg0.nii.gz", "seg1.nii.gz"]


# ----------------------------------------------------------------------------- hostile names

def _raw(tmp_path: Path, name: bytes) -> bytes:
    return os.fsencode(tmp_path) + b"/" + name


def test_non_utf8_names_are_one_line_not_sigabrt(case, tmp_path):
    bad_input = _raw(tmp_path, b"scan\xff\xfe.nii.gz")
    shutil.copy(case["FLAIR"], bad_input)
    runs = {
        "input": ["segment", "-q", "--flair", bad_input, "-o", tmp_path / "o1.nii.gz"],
        "output": ["segment", "-q", "--flair", case["FLAIR"], "-o", _raw(tmp_path, b"out\xff.nii.gz")],
        "output_folder": ["segment", "-q", "--flair", case["FLAIR"], "-o", _raw(tmp_path, b"d\xe9/seg.nii.gz")],
        "probabilities": ["segment", "-q", "--flair", case["FLAIR"], "-o", tmp_path / "o2.nii.gz",
                          "--probabilities", _raw(tmp_path, b"p\xff")],
        "model": ["segment", "-q", "--flair", case["FLAIR"], "-o", tmp_path / "o3.nii.gz",
                  "--model", _raw(tmp_path, b"card\xff.json")],
        "info_model": ["info", "--model", _raw(tmp_path, b"card\xff.json")],
    }
    before = set(os.listdir(os.fsencode(tmp_path)))
    for name, args in runs.items():
        r = _lckd(*args)
        assert r.returncode != -signal.SIGABRT, f"{name}: SIGABRT"
        line = _one_error_line(r, command=args[0])
        assert "\\x" in line or "UTF-8" in line or "not found" in line, (name, line)
    assert set(os.listdir(os.fsencode(tmp_path))) == before


def test_batch_with_a_non_utf8_case_folder_goes_on(case, tmp_path):
    root = tmp_path / "in"
    good = root / "GOOD-1"
    good.mkdir(parents=True)
    shutil.copy(case["FLAIR"], good / "GOOD-1-t2f.nii.gz")
    bad = _raw(root, b"BAD\xff")
    os.mkdir(bad)
    shutil.copy(case["FLAIR"], bad + b"/BAD\xff-t2f.nii.gz")
    r = _lckd("batch", root, tmp_path / "out", "--threads", "1")
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 1 and "Traceback" not in err and r.returncode != -signal.SIGABRT, err[-800:]
    rows = {row["case"]: row for row in csv.DictReader((tmp_path / "out" / "summary.csv").open(encoding="utf-8"))}
    assert rows["GOOD-1"]["status"] == "ok"
    assert rows["BAD\\xff"]["status"] == "error" and "UTF-8" in rows["BAD\\xff"]["message"]


def test_named_pipe_is_refused_at_once(tmp_path):
    fifo = tmp_path / "t1.nii.gz"
    os.mkfifo(fifo)
    t = time.perf_counter()
    r = _lckd("segment", "-q", "--t1", fifo, "-o", tmp_path / "seg.nii.gz", timeout=60)
    line = _one_error_line(r)
    assert "named pipe" in line and time.perf_counter() - t < 30
    assert [p.name for p in tmp_path.iterdir()] == ["t1.nii.gz"]
