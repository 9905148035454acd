"""The LCKD training loop: schedule, elections, distillation, checkpoints, DistributedDataParallel.

Run as one process, or one process per device under `torchrun` (RANK / WORLD_SIZE in the
environment): then the network is wrapped in DistributedDataParallel (NCCL on GPUs, gloo on
CPU), each rank samples from its own shard of the training cases, rank 0 alone holds the
validation cases, runs the elections (broadcasting the single-modality table, a plain
tensor, so every rank elects the same teachers), logs and writes.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from ...base.labels import REGIONS
from ...base.threads import ThreadGovernor, configure_threads, governor_possible
from ...inference.segmenter import Segmenter, pick_device
from ...model.modelcard import ModelCard, save_model
from ...model.network import build_network
from . import checkpoint as ckpt
from .data import LoadedCase, PatchSampler, load_cases, select_cases
from .election import elect, format_table, single_modality_table, tumour_box
from .losses import bottleneck_loss, lckd_loss
from .presets import TrainConfig


@dataclass
class RunOptions:
    """Where and how to run (not part of the schedule, so not stored as config)."""

    data: str
    out: str
    split: str | None = None
    name: str = "lckd-model"
    version: str = "0.1.0"
    description: str = ""
    data_description: str = ""
    device: str = "cpu"
    threads: int | None = None
    resume: bool = False
    stop_at: int | None = None          # stop (and checkpoint) after this many steps
    progress: bool = True
    final_eval: bool = True
    log: Callable[[str], None] = print
    extra_training: dict = field(default_factory=dict)


def poly_lr(cfg: TrainConfig, step: int) -> float:
    """Poly decay over the whole schedule (warm-up + missing-modality phase)."""
    return cfg.lr * (1 - min(step, cfg.total_steps) / cfg.total_steps) ** cfg.poly_power


def make_optimizer(cfg: TrainConfig, net: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer '{cfg.optimizer}': use sgd or adamw")


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (single process: 0, 1, 0)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


class Trainer:
    """One LCKD training run (possibly one rank of several)."""

    def __init__(self, cfg: TrainConfig, opts: RunOptions):
        self.opts = opts
        self.rank, self.world, local = _dist_env()
        self.device = pick_device(opts.device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        self.out = Path(opts.out)
        self.ckpt_dir = self.out / "checkpoint"
        self.meta: dict = {"history": [], "teachers": [], "wall_seconds": 0.0, "init_from": None}
        resume = None
        if opts.resume:
            resume = ckpt.read_checkpoint(self.ckpt_dir)
            cfg = TrainConfig.from_dict(resume[1]["config"])   # the stored schedule wins
        self.cfg = cfg
        n_threads = configure_threads(opts.threads, world=int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        # the same rule as inference: without --threads, follow the cores others leave free
        self.governor = (ThreadGovernor(n_threads) if opts.threads is None and self.device.type == "cpu"
                         and governor_possible() else None)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        torch.manual_seed(cfg.seed)                  # same initial weights on every rank
        self.net = build_network(cfg.network, bottleneck_head=cfg.bottleneck_weight > 0).to(self.device)
        mult = self.net.size_multiple
        if any(p % m for p, m in zip(cfg.patch, mult)):
            raise ValueError(f"patch {tuple(cfg.patch)} must be a multiple of {mult} for network '{cfg.network}'")
        self.order = list(self.net.modalities)
        if cfg.init_from and resume is None:      # (a resumed run's checkpoint holds the weights)
            from .pretrained import start_from
            fresh, self.meta["init_from"] = start_from(self.net, cfg.init_from, partial=cfg.init_partial)
            self._log(f"weights from {cfg.init_from}" + (f"; new: {', '.join(fresh)}" if fresh else ""))
        self.optimizer = make_optimizer(cfg, self.net)
        self.step = 0
        if resume is not None:
            ckpt.restore(resume[0], resume[1], self.net, self.optimizer)
            self.step = int(resume[1]["step"])
            for k in ("history", "teachers", "wall_seconds", "init_from"):
                self.meta[k] = resume[1].get(k, self.meta[k])
        self.model: torch.nn.Module = self.net   # the network, or its DDP wrapper
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.model = DDP(self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.fixed_teachers:
            self.meta["teachers"] = [m for m in self.order if m in cfg.fixed_teachers]
        self._load_data()

    # -- set-up ------------------------------------------------------------------------
    def _log(self, text: str) -> None:
        if self.rank == 0:
            self.opts.log(text)

    def _load_data(self) -> None:
        cfg, o = self.cfg, self.opts
        train = select_cases(o.data, o.split, "train")
        self.train_ids = [c.case_id for c in train]
        shard = train[self.rank::self.world]             # each rank samples from its own cases
        self._log(f"training cases: {len(train)} ({len(shard)} on this rank of {self.world}); loading into memory")
        self.train_cases = load_cases(shard, cfg, self.order, progress=o.progress and self.rank == 0)
        self.sampler = PatchSampler(self.train_cases, cfg, rank=self.rank, order=self.order)
        self.val_cases: list[LoadedCase] = []
        needs_val = (cfg.election_every > 0 and not cfg.fixed_teachers) or o.final_eval
        if self.rank == 0 and needs_val and o.split is not None:
            val = [c for c in select_cases(o.data, o.split, "val") if c.label is not None]
            self.val_cases = load_cases(val, cfg, self.order, dtype=np.float32)
            self._log(f"validation cases: {len(self.val_cases)}")

    def card(self) -> ModelCard:
        """A card describing the network as it is now (used for sliding-window validation too)."""
        cfg = self.cfg
        return ModelCard(name=self.opts.name, version=self.opts.version, architecture=self.net.cfg.to_dict(),
                         patch_size=list(cfg.patch), spacing=list(cfg.spacing),
                         preprocessing={"normalisation": "z-score over non-zero voxels",
                                        "clip_percentiles": list(cfg.clip_percentiles)},
                         postprocessing=dict(cfg.postprocessing),
                         description=self.opts.description)

    # -- election ------------------------------------------------------------------------
    def run_election(self) -> None:
        """Score single modalities on rank 0, share the table, elect on every rank."""
        table = torch.zeros(len(self.order), len(REGIONS), dtype=torch.float64)
        if self.rank == 0:
            cases = self.val_cases[: self.cfg.election_cases or None]
            if self.cfg.election_box:
                cases = [tumour_box(c, self.cfg.election_box) for c in cases]
            self.net.eval()
            seg = Segmenter(self.net, self.card(), self.device)
            t = single_modality_table(seg, cases)
            self.net.train()
            table = torch.tensor([[t[m][r] for r in REGIONS] for m in self.order], dtype=torch.float64)
        if self.world > 1:
            dist.broadcast(table, 0)
        tab = {m: {r: round(float(table[i, j]), 4) for j, r in enumerate(REGIONS)} for i, m in enumerate(self.order)}
        elected = elect(tab, self.order)
        self.meta["teachers"] = elected
        self.meta["history"].append({"step": self.step, "elected": elected, "table": tab})
        self._log(f"election at step {self.step}: teachers {', '.join(elected)}\n{format_table(tab, elected)}")

    # -- loop ------------------------------------------------------------------------------
    def train(self) -> Path | None:
        """Run (or continue) the schedule; returns the saved model card path on rank 0 at the end."""
        cfg, o = self.cfg, self.opts
        end = cfg.total_steps if o.stop_at is None else min(o.stop_at, cfg.total_steps)
        # decided from the options alone so every rank agrees (rank 0 alone holds the val cases)
        elections = cfg.election_every > 0 and not cfg.fixed_teachers and o.split is not None
        bar = None
        if o.progress and self.rank == 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        log_path = self.out / "train_log.jsonl"
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        t_start, wall0 = time.perf_counter(), self.meta["wall_seconds"]
        self.net.train()
        try:
            while self.step < end:
                if elections and self.step % cfg.election_every == 0:
                    self.run_election()
                lr = poly_lr(cfg, self.step)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                if self.governor is not None:
                    self.governor.update()
                x, y, present = self.sampler.batch(self.step)
                x, y, present = x.to(self.device), y.to(self.device), present.to(self.device)
                out = self.model(x, present)
                teachers = [self.order.index(m) for m in self.meta["teachers"]]
                loss, seg, kd = lckd_loss(out.logits, y, out.features, out.present, teachers, cfg.kd_weight)
                coarse = None
                if cfg.bottleneck_weight > 0:
                    coarse = bottleneck_loss(out.bottleneck_logits, y)
                    loss = loss + cfg.bottleneck_weight * coarse
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.step += 1
                self.meta["wall_seconds"] = wall0 + time.perf_counter() - t_start
                if self.rank == 0:
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss.item():.3f}", kd=f"{kd.item():.3f}", lr=f"{lr:.2e}",
                                        teachers="+".join(self.meta["teachers"]) or "-", refresh=False)
                    if self.step % 10 == 0 or self.step == end:
                        entry = {"step": self.step, "loss": round(loss.item(), 5), "seg": round(seg.item(), 5),
                                 "kd": round(kd.item(), 5)}
                        if coarse is not None:
                            entry["bottleneck"] = round(coarse.item(), 5)
                        entry.update(lr=lr, teachers=self.meta["teachers"],
                                     seconds=round(self.meta["wall_seconds"], 1))
                        with open(log_path, "a") as f:
                            f.write(json.dumps(entry) + "\n")
                if self.step % cfg.checkpoint_every == 0 and self.step < end:
                    self.save_checkpoint()
            if elections and self.step == cfg.total_steps and self.meta["history"][-1]["step"] != self.step:
                self.run_election()                  # the card's teachers describe the final network
        finally:
            if bar is not None:
                bar.close()
        self.save_checkpoint()
        if self.step < cfg.total_steps:
            return None
        return self.finish()

    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        meta = {"step": self.step, "config": self.cfg.to_dict(), "history": self.meta["history"],
                "teachers": self.meta["teachers"], "wall_seconds": self.meta["wall_seconds"],
                "world_size": self.world, "init_from": self.meta["init_from"]}
        ckpt.save_checkpoint(self.ckpt_dir, self.net, self.optimizer, meta)

    def finish(self) -> Path | None:
        """Rank 0: 15-subset table on the validation cases into the card, then save the model."""
        if self.rank != 0:
            return None
        from ...inference.options import SegmentOptions
        from ..evaluate import card_evaluation, evaluate_cases
        from ..evaluate import format_table as eval_table
        card = self.card()
        card.teachers = {"elected": self.meta["teachers"],
                         "table": self.meta["history"][-1]["table"] if self.meta["history"] else {},
                         "history": self.meta["history"],
                         "fixed": bool(self.cfg.fixed_teachers)}
        card.training = {"preset": self.cfg.preset, "steps": self.step,
                         "wall_seconds": round(self.meta["wall_seconds"], 1),
                         "processes": self.world, "device": self.device.type,
                         "data": self.opts.data_description or str(self.opts.data),
                         "config": self.cfg.to_dict(), "cases": self.train_ids,
                         "validation_cases": [c.case_id for c in self.val_cases], **self.opts.extra_training}
        if self.meta["init_from"]:                 # the weights the run began from, pinned by sha256
            card.training["init_from"] = self.meta["init_from"]
        cases = self.val_cases[: self.cfg.final_eval_cases or None]
        if self.opts.final_eval and cases:
            self.net.eval()
            # the raw labels, as this table was always scored (the card's clean-up is judged by cross-validation)
            report = evaluate_cases(Segmenter(self.net, card, self.device), cases,
                                    options=SegmentOptions(postprocess=False))
            card.evaluation = card_evaluation(report, f"{len(cases)} validation cases (training's val split)")
            self._log("validation, 15 subsets:\n" + eval_table(report, markdown=False))
        path = save_model(self.net, card, self.out)
        self._log(f"saved {path}")
        return path


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
