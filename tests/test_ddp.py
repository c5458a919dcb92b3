"""DDP: two CPU processes (gloo) give the gradients and the run of one process with the same global batch."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from test_train_hmr import write_consistent_h36m

from mocap.body.smpl import load_body_model
from mocap.train import hmr as H

BATCH = 4


def _config(tmp: Path, name: str, data: list[str], mean: str, smpl: str) -> H.TrainConfig:
    # Dropout off: per-process dropout masks cannot match a single process's (equal in law only).
    return H.TrainConfig(
        out=str(tmp / name), data=data, variant="vitpose-deformable", size="tiny", mean_params=mean, smpl=smpl,
        steps=3, batch_size=BATCH, lr=1e-3, warmup_steps=1, precision="fp32", log_every=1, checkpoint_every=3,
        augment=False, feature_cache=str(tmp / "cache"), num_workers=0, dropout=0.0,
    )  # fmt: skip


def _trainer(cfg: H.TrainConfig, rank: int, world_size: int) -> H.Trainer:
    torch.manual_seed(cfg.seed)
    model = H.build_model(cfg)
    body = H.load_body(cfg.smpl, "cpu")
    dataset, pools, weights = H.build_dataset(cfg, model, "cpu")
    return H.Trainer(cfg, model, body, dataset, pools, weights, None, rank, world_size)


def _gradients(trainer: H.Trainer) -> dict[str, torch.Tensor]:
    """Gradients of the decoder for global batch 0 (this rank's slice, DDP-averaged)."""
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.forward_backward(next(trainer.batches()))
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def _worker(rank: int, world_size: int, port: int, cfg_json: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        cfg = H.TrainConfig.from_json(cfg_json)
        grads = _gradients(_trainer(cfg, rank, world_size))
        torch.save(grads, Path(out) / f"grads_rank{rank}.pt")
        H.train(cfg)  # the whole loop: sampling, logging and checkpoints on rank 0 only
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path, shared_data: Path, smpl_dir: Path) -> None:
    body = load_body_model(smpl_dir / "SMPL_NEUTRAL.pkl", required=True)
    assert body is not None
    data = [write_consistent_h36m(shared_data, tmp_path / "h36m.npz", body)]
    mean = str(shared_data / "spin_npz" / "smpl_mean_params.npz")
    smpl = str(smpl_dir / "SMPL_NEUTRAL.pkl")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single_cfg = _config(tmp_path, "single", data, mean, smpl)
        reference = _gradients(_trainer(single_cfg, 0, 1))  # also builds the shared feature cache
        single = H.train(single_cfg)
    finally:
        torch.set_num_threads(threads)
    ddp_cfg = _config(tmp_path, "ddp", data, mean, smpl)
    # torch.multiprocessing's spawn API; forked where the OS has fork: the children then skip
    # re-importing torch and mocap (~40 s on a shared 2-core machine). DDP itself is the same.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    args = (2, _free_port(), ddp_cfg.to_json(), str(tmp_path))
    mp.start_processes(_worker, args=args, nprocs=2, join=True, start_method=method)

    grads = [torch.load(tmp_path / f"grads_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert reference.keys() == grads[0].keys() == grads[1].keys() and len(reference) > 10
    for name, g in reference.items():
        torch.testing.assert_close(grads[0][name], g, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=0, msg=name)
    # The whole run: same logged (global-batch) losses and the same weights after 3 AdamW steps.
    ddp_lines = [
        json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [x["step"] for x in ddp_lines] == [1, 2, 3]  # rank 0 alone wrote the log
    for a, b in zip(ddp_lines, single, strict=True):
        for key in ("total", "smpl", "keypoints_2d", "keypoints_3d", "vertices"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
    final = "checkpoints/step_0000003.safetensors"
    one, two = load_file(str(tmp_path / "single" / final)), load_file(str(tmp_path / "ddp" / final))
    for name, t in one.items():
        torch.testing.assert_close(two[name], t, rtol=1e-4, atol=1e-5, msg=name)
