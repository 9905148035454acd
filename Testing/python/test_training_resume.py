"""Training checkpoints: N steps straight == N/2 steps, stop, --resume, N/2 more (bit for bit);
and two gloo processes under torchrun end with identical weights."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lckd.io.datasets import write_split
from lckd.model.modelcard import load_model
from lckd.research.phantom import write_phantom_dataset
from lckd.research.training.presets import TrainConfig
from lckd.research.training.trainer import RunOptions, Trainer

TINY = (48, 64, 64)   # (z, y, x): brain crop about 40 x 56 x 48, a few 32^3 windows
CFG = TrainConfig(patch=(32, 32, 32), batch=2, warmup_steps=2, missing_steps=2, optimizer="sgd", lr=1e-2,
                  momentum=0.99, election_every=2, election_cases=1, election_box=32, checkpoint_every=100,
                  bottleneck_weight=0.5)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    ids = [p.name for p in write_phantom_dataset(root / "data", 3, seed=500, shape=TINY)]
    write_split(root / "split.csv", {"train": ids[:2], "val": ids[2:]})
    return root / "data", root / "split.csv"


def _opts(tiny_data, out: Path, **kw) -> RunOptions:
    return RunOptions(data=str(tiny_data[0]), split=str(tiny_data[1]), out=str(out), progress=False,
                      final_eval=False, threads=2, log=lambda s: None, **kw)


def test_resume_continues_the_schedule_exactly(tiny_data, tmp_path):
    straight = Trainer(CFG, _opts(tiny_data, tmp_path / "straight"))
    straight.train()
    half = Trainer(CFG, _opts(tiny_data, tmp_path / "split", stop_at=2))
    assert half.train() is None                      # stopped early: no model yet, a checkpoint
    resumed = Trainer(TrainConfig(), _opts(tiny_data, tmp_path / "split", resume=True))
    assert resumed.step == 2 and resumed.cfg == CFG  # the stored schedule wins over the given one
    resumed.train()
    a = load_file(str(tmp_path / "straight" / "checkpoint" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    assert any(k.endswith("momentum_buffer") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight.meta["history"] == resumed.meta["history"]
    assert [h["step"] for h in resumed.meta["history"]] == [0, 2, 4]
    card = tmp_path / "split" / "lckd-model.json"
    assert card.is_file()
    net, _ = load_model(card)                        # the head is part of the saved architecture
    assert net.bottleneck_head is not None
    assert torch.equal(net.bottleneck_head.weight, a["model.bottleneck_head.weight"])


def test_init_from_starts_from_a_trained_model_and_refuses_another_network(tiny_data, tmp_path):
    from lckd.base.errors import InputError
    from lckd.model.registry import resolve_model

    phantom, phantom_card = load_model(resolve_model("lckd-lite-phantom", allow_download=False))
    logged: list[str] = []
    opts = RunOptions(data=str(tiny_data[0]), split=str(tiny_data[1]), out=str(tmp_path / "pre"), progress=False,
                      final_eval=False, threads=2, log=logged.append)
    cfg = CFG.with_overrides(init_from="lckd-lite-phantom")           # CFG's network is lite
    t = Trainer(cfg, opts)
    theirs = phantom.state_dict()
    for k, v in t.net.state_dict().items():
        if k in theirs:
            assert torch.equal(v, theirs[k]), k
    # the phantom model has no bottleneck head: only that starts fresh, and the log says so
    assert any("weights from lckd-lite-phantom; new: bottleneck_head.bias, bottleneck_head.weight" in s
               for s in logged), logged
    t.train()                                        # trains on from there; the card records where it began
    _, card = load_model(tmp_path / "pre" / "lckd-model.json")
    assert card.training["config"]["init_from"] == "lckd-lite-phantom"
    assert card.training["init_from"] == {"name": "lckd-lite-phantom", "version": phantom_card.version,
                                          "weights_sha256": phantom_card.weights["sha256"]}
    fresh = Trainer(CFG, _opts(tiny_data, tmp_path / "fresh"))
    assert not torch.equal(fresh.net.state_dict()["decoder.head.weight"], theirs["decoder.head.weight"])
    with pytest.raises(InputError, match="--init-from lckd-lite-phantom: its network is not"):
        Trainer(CFG.with_overrides(network="lite-small", init_from="lckd-lite-phantom"),
                _opts(tiny_data, tmp_path / "small"))


WORKER = textwrap.dedent("""
    import os, sys
    from safetensors.torch import save_file
    from lckd.research.training.presets import TrainConfig
    from lckd.research.training.trainer import RunOptions, Trainer, close_distributed
    data, split, out = sys.argv[1:4]
    cfg = TrainConfig(patch=(32, 32, 32), batch=1, warmup_steps=2, missing_steps=1, optimizer="sgd",
                      lr=1e-2, election_every=2, election_cases=1, election_box=32, checkpoint_every=100,
                      bottleneck_weight=0.5)
    t = Trainer(cfg, RunOptions(data=data, split=split, out=out, progress=False, final_eval=False, threads=1))
    t.train()
    rank = os.environ["RANK"]
    save_file({k: v.contiguous() for k, v in t.net.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    with open(f"{out}/rank{rank}.txt", "w") as f:
        f.write(f"{len(t.train_cases)} {','.join(t.meta['teachers'])}")
    close_distributed()
""")


def test_two_gloo_processes_end_with_identical_weights(tiny_data, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "ddp"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2] / "LCKDSegmentation"),
                                         env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           str(script), str(tiny_data[0]), str(tiny_data[1]), str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    w0, w1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    torch.manual_seed(0)
    from lckd.model.network import build_network
    init = build_network("lite", bottleneck_head=True).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in w0)       # it did train
    # each rank sampled from its own shard; both elected the same teachers; only rank 0 wrote
    info = [(out / f"rank{r}.txt").read_text().split(" ") for r in (0, 1)]
    assert info[0][0] == info[1][0] == "1" and info[0][1] == info[1][1]
    assert (out / "checkpoint" / "checkpoint.json").is_file()
    assert not list(out.glob("*.tmp-*"))
