"""Two gloo processes compute, chunk by chunk, exactly the gradient one process computes on the whole batch.

The weights test (test_distributed.py) goes through Adam, which is blind to a gradient's scale; this one
compares gradients themselves, so a mean instead of a sum, or a loss over local rows only, fails here.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nstzoo.learner.accumulate import accumulated_step, split_into_chunks
from nstzoo.learner.distributed import Distributed, all_gather_rows, all_reduce_gradients, all_reduce_sum
from nstzoo.learner.loss import SupConLoss

WORLD = 2


def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 10, generator=g, dtype=torch.float64)
    labels = torch.arange(6).repeat_interleave(2)
    is_source = torch.zeros(12, dtype=torch.bool)
    is_source[1::4] = True
    return x, labels, is_source


def model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(10, 16), nn.GELU(), nn.Linear(16, 8)).double()


class Reconstructing(nn.Module):
    """Embeddings plus a per-item auxiliary objective, like ALADIN's reconstruction."""

    def __init__(self):
        super().__init__()
        self.net = model()

    def forward(self, x):
        return self.net(x)

    def training_forward(self, x):
        z = self.net(x)
        return z, (z.pow(2).sum(1) * 0.1).mean()


def worker(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    job = Distributed(rank=rank, world_size=WORLD)
    x, labels, is_source = batch()
    local = x[rank * 6:(rank + 1) * 6]
    net = Reconstructing()
    loss = SupConLoss(0.1)
    result = accumulated_step(net, split_into_chunks(local, 4), lambda e: loss(e, *gathered_labels(labels, is_source)),
                              training_forward=lambda m, c: m.training_forward(c),
                              gather=lambda e: all_gather_rows(e, job))
    all_reduce_gradients(net, job)
    auxiliary = all_reduce_sum(result.auxiliary, job)
    if rank == 0:
        torch.save({"grads": [p.grad for p in net.parameters()], "loss": result.loss, "aux": auxiliary}, out)
    dist.destroy_process_group()


def gathered_labels(labels, is_source):
    # Rows arrive rank by rank, each rank's slice in order: the same order as the global batch here.
    return labels, is_source


def test_two_processes_give_the_full_batch_gradient(tmp_path):
    x, labels, is_source = batch()
    net = Reconstructing()
    loss = SupConLoss(0.1)
    z, _ = net.training_forward(x)
    aux = (z.pow(2).sum(1) * 0.1).mean()
    total = loss(z, labels, is_source) + aux
    total.backward()
    expected = [p.grad.clone() for p in net.parameters()]

    out = tmp_path / "rank0.pt"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=(str(tmp_path / "init"), str(out)), nprocs=WORLD, join=True)
    got = torch.load(out, weights_only=True)
    for g, e in zip(got["grads"], expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got["loss"] + got["aux"], total.detach(), rtol=1e-10, atol=1e-12)
