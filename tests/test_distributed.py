"""torch.distributed on the CPU (gloo): the CLIP-style all-gather and a real 2-process torchrun training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[1]


def _gather_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from training.losses import InfoNCELoss
    from training.model import CezsarModel, ModelConfig
    from training.train import _Objective

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tiny", frames=4, fps=1.0, d_model=32, joint_dim=16, text_dim=8)
    model = CezsarModel(cfg)
    loss_fn = InfoNCELoss()
    seen: dict[str, list[int]] = {}
    loss_fn.register_forward_hook(
        lambda m, args, kw, out: seen.update(video=list(args[0].shape), texts=[len(args[1]) + len(args[2])]),
        with_kwargs=True,
    )
    obj = _Objective(model, loss_fn, "frozen")
    b = 3
    feats = torch.randn(b, 4, model.frame_encoder.feature_dim) + rank
    ids = torch.arange(b) + rank * b  # caption ids and clip ids: all distinct across the ranks
    pos = torch.randn(b, 8)
    loss = obj(feats, pos, torch.randn(b, 8), ids, ids, pos, None, True)  # raw: the positives' sentence embeddings
    (loss * world).backward()
    grad = model.temporal_head.parameters().__next__().grad
    assert grad is not None
    res = {"video": seen["video"], "texts": seen["texts"], "loss": float(loss), "grad_norm": float(grad.norm())}
    Path(out, f"{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def test_infonce_negatives_are_gathered_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'rdv'}"
    mp.spawn(_gather_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    # each rank scores its 3 clips... against 2 ranks x 3: the logits are (6, 6 positives + 6 negatives)
    assert r0["video"][0] == r1["video"][0] == 6
    assert r0["texts"] == r1["texts"] == [12]
    assert r0["loss"] == pytest.approx(r1["loss"], rel=1e-5)  # one global loss
    assert r0["grad_norm"] > 0 and r1["grad_norm"] > 0


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from cezsar.data.synthset import synthesize

    out = tmp_path_factory.mktemp("dworld") / "w"
    synthesize(out, seed=5, train_clips_per_class=2, eval_clips_per_class=1)
    return out


@pytest.mark.slow
def test_torchrun_two_process_training_writes_a_model_that_evaluates(world, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CEZSAR_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    out = tmp_path / "m"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "cezsar", "train", "--data", str(world), "--out", str(out), "--mode", "frozen",
        "--loss", "infonce", "--epochs", "2", "--frames", "4", "--fps", "2", "--image-size", "32",
        "--resize", "32", "--batch-size", "4", "--threads", "1", "--json",
    ]  # fmt: skip
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])  # one summary: rank 0's
    assert summary["epochs_run"] == 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["world_size"] == 2
    assert not (out / ".resume").exists()
    from training.evaluate import evaluate

    rep = evaluate(out, world, progress=False)
    assert rep.n_videos > 0 and 0.0 <= rep.top1 <= 1.0


@pytest.mark.slow
def test_resume_after_a_killed_two_process_run_on_one_process(world, tmp_path):
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT), "CEZSAR_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "m"
    args = ["train", "--data", str(world), "--out", str(out), "--mode", "end2end", "--frames", "4", "--fps", "2",
            "--image-size", "32", "--resize", "32", "--batch-size", "4", "--threads", "1",
            "--patience", "100"]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cezsar"]
    proc = subprocess.Popen([*cmd, *args, "--epochs", "200"], env=env, start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and not (out / ".resume" / "state.json").exists():
            time.sleep(0.1)
        time.sleep(0.5)
        assert proc.poll() is None, "the 2-process run ended before it could be killed"
    finally:
        # torchrun starts each worker in its own session: kill the workers by pid, then torchrun
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        pids = [int(x) for x in children.read_text().split()] if children.exists() else []
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
        for pid in pids:  # wait until they are gone (or zombies)
            status = Path(f"/proc/{pid}/status")
            while True:
                try:
                    if "zombie" in status.read_text():
                        break
                except OSError:
                    break
                time.sleep(0.1)
    done = json.loads((out / ".resume" / "state.json").read_text())["epoch"]
    assert done < 199
    p = subprocess.run(
        [sys.executable, "-m", "cezsar", *args, "--epochs", str(done + 3), "--resume", "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(done + 3))
    assert json.loads((out / "config.json").read_text())["training"]["world_size"] == 1
