"""`lckd batch`: every case of a BraTS-layout folder, sharded over processes or torchrun ranks.

Each process handles cases[k::n]; a case that fails for any reason (bad input, a full
disk, an internal error, running out of memory) is recorded and the batch goes on. Each
process writes its own summary part (CSV), also when interrupted (Ctrl-C, SIGTERM), and,
under torchrun, rank 0 waits for the others and merges the parts into `summary.csv`
(files, not pickled objects, cross ranks). A case counts as done, and is skipped on the
next run, only when its output reads back as a complete image: outputs are written
atomically and verified, so a failed write never leaves a file that looks done.
"""
from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import InputError, LCKDError
from .imageio import printable

FIELDS = ("case", "modalities", "NCR_ml", "ED_ml", "ET_ml", "TC_ml", "WT_ml", "seconds", "status", "message")


@dataclass
class Shard:
    """Which share of the cases this process takes: cases[index::count]."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> "Shard":
        if not text:
            return cls()
        try:
            k, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise InputError(f"--shard must look like K/N (for example 0/4), got '{text}'") from None
        if n < 1 or not 0 <= k < n:
            raise InputError(f"--shard {text}: need N >= 1 and 0 <= K < N")
        return cls(k, n)

    def take(self, items: Sequence) -> list:
        return list(items[self.index::self.count])


def distributed_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def output_path(out_dir: Path, case_id: str, fmt: str) -> Path:
    return out_dir / f"{case_id}.{fmt}"


def write_summary(rows: Sequence[dict], path: Path) -> None:
    """Write the summary CSV atomically and check it reads back complete (`OutputError` if not)."""
    from .errors import OutputError
    from .imageio import atomic_path, shown_path

    def verify(tmp: Path) -> None:
        try:
            with open(tmp, newline="", encoding="utf-8") as f:
                back = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error):
            back = None
        if back is None or len(back) != len(rows) or any(b["case"] != r["case"] for b, r in zip(back, rows)):
            raise OutputError(f"cannot write summary '{shown_path(path)}': the written file is incomplete "
                              "(is the disk full?)")

    with atomic_path(path, "summary", verify=verify) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)


def output_complete(path: Path) -> bool:
    """True when `path` holds a complete image (header and every voxel readable): a case really done."""
    from .imageio import read_back

    return path.is_file() and read_back(path)[0] is not None


def print_summary(rows: Sequence[dict]) -> None:
    print(f"\n{'case':<28}{'modalities':<22}{'ET':>8}{'TC':>8}{'WT':>8}{'s':>7}  status")
    for r in rows:
        vols = "".join(f"{r[k]:>8}" for k in ("ET_ml", "TC_ml", "WT_ml"))
        print(f"{r['case'][:27]:<28}{r['modalities'][:21]:<22}{vols}{r['seconds']:>7}  {r['status']}"
              + (f": {r['message']}" if r["message"] else ""))
    done = sum(r["status"] == "ok" for r in rows)
    failed = sum(r["status"] == "error" for r in rows)
    skipped = sum(r["status"] == "skipped" for r in rows)
    print(f"{done} segmented, {skipped} skipped (already done), {failed} failed")


def _segment_case(seg, case, out_path: Path, args) -> dict:
    """Segment and write one case; any failure becomes an 'error' row, never an exception."""
    from .output import write_result

    row = dict.fromkeys(FIELDS, "")
    row.update(case=printable(case.case_id), modalities="+".join(case.images))
    t = time.perf_counter()
    try:
        res = seg.segment(case.images, labels=args.labels, register=args.register,
                          postprocess=args.postprocess, overlap=args.overlap, sw_batch_size=args.sw_batch_size,
                          max_memory_gb=getattr(args, "max_memory", None))
        write_result(res, [out_path])
        row.update({f"{k}_ml": f"{v:.2f}" for k, v in res.volumes_ml.items()})
        row.update(status="ok", message=printable("; ".join(res.warnings)))
    except LCKDError as e:
        row.update(status="error", message=printable(e))
    except MemoryError:
        row.update(status="error", message="out of memory (lower --max-memory to refuse such cases early)")
    except Exception as e:  # one unexpected failure must not cost the other cases or the summary
        first = (str(e).strip().splitlines() or [""])[0][:200]
        row.update(status="error", message=printable(f"internal error: {type(e).__name__}: {first}"))
    row["seconds"] = f"{time.perf_counter() - t:.1f}"
    return row


def run_batch(args) -> int:
    """Run `lckd batch`; returns the exit status (1 if any case failed)."""
    from tqdm import tqdm

    from .datasets import find_cases
    from .imageio import check_path_text
    from .labels import check_convention
    from .modelcard import read_card
    from .options import check_run_options
    from .registry import resolve_model

    check_convention(args.labels)
    check_run_options(overlap=args.overlap, sw_batch_size=args.sw_batch_size, threads=args.threads,
                      device=args.device, max_memory_gb=getattr(args, "max_memory", None))
    check_path_text(args.output_dir, f"output folder '{printable(args.output_dir)}'", LCKDError)
    check_path_text(args.input_dir, f"input folder '{printable(args.input_dir)}'", InputError)
    out_dir = Path(args.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LCKDError(f"cannot create output folder '{out_dir}': {e.strerror or e}") from None
    rank, world, local_rank = distributed_rank()
    shard = Shard.parse(args.shard)
    if world > 1:
        if shard.count > 1:
            raise InputError("use either torchrun or --shard, not both")
        shard = Shard(rank, world)
    cases = shard.take(find_cases(args.input_dir))
    device = args.device
    if world > 1 and device in ("auto", "cuda", "gpu"):
        import torch
        if torch.cuda.is_available():
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
    card_path = resolve_model(args.model)
    read_card(card_path)  # a bad card is refused before the weights load
    from .inference import Segmenter

    seg = Segmenter.load(card_path, device=device, threads=args.threads)
    rows = []
    part = out_dir / ("summary.csv" if shard.count == 1 else f"summary-part-{shard.index}-of-{shard.count}.csv")
    try:
        for case in tqdm(cases, desc=f"segmenting (share {shard.index + 1}/{shard.count})" if shard.count > 1
                         else "segmenting", unit="case", file=sys.stderr):
            out_path = output_path(out_dir, case.case_id, args.format)
            if not args.overwrite and output_complete(out_path):
                row = dict.fromkeys(FIELDS, "")
                row.update(case=printable(case.case_id), modalities="+".join(case.images), status="skipped",
                           message="output exists")
                rows.append(row)
                continue
            rows.append(_segment_case(seg, case, out_path, args))
    finally:
        # Also on Ctrl-C / SIGTERM: the cases done so far are on record (the rest simply run next time).
        write_summary(rows, part)
    if world > 1:
        rows = _merge_parts(out_dir, rank, world)
    if rank == 0:
        print_summary(rows)
        print(f"summary: {out_dir / 'summary.csv' if world > 1 or shard.count == 1 else part}")
    return 1 if any(r["status"] == "error" for r in rows) else 0


def _merge_parts(out_dir: Path, rank: int, world: int) -> list:
    """Wait for every rank's part (a gloo barrier), then rank 0 merges them into summary.csv."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
    rows: list = []
    if rank == 0:
        for k in range(world):
            with open(out_dir / f"summary-part-{k}-of-{world}.csv", newline="") as f:
                rows += list(csv.DictReader(f))
        rows.sort(key=lambda r: r["case"])
        write_summary(rows, out_dir / "summary.csv")
    dist.barrier()
    dist.destroy_process_group()
    return rows
