"""Multi-process training with PyTorch's own engine: ``torchrun`` sets the environment, this reads it.

One node, N GPUs::

    torchrun --nproc_per_node=N -m nstzoo train -c configs/paper.yaml --content C --style S --out RUN

Several nodes (the same command on each, one rendezvous endpoint)::

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
        -m nstzoo train ...

``batch_size`` is the *global* target batch: each of the W processes decodes, stylizes and embeds
B/W stylized images and their B/(2W) source styles (B must be a multiple of 2W), the contrastive loss
sees the embeddings of every process, and one optimizer step is taken per global batch. What each
process does:

- Data: the step's plan is global (same on every rank, from ``(seed, step)``); rank r decodes its slice.
- Stylizers: the stylizer of every sample is drawn globally, then sliced, so the batch is the same
  whatever W is.
- Loss: after the no-grad pass the embeddings are all-gathered; every rank evaluates the SupCon loss
  on the full batch (the similarity matrix of 1536 rows is cheap) and keeps the gradient of its own
  rows; the gradient pass back-propagates those.
- Gradients: summed over ranks with one all-reduce per step (:func:`all_reduce_gradients`). The
  gradient pass calls the encoder's ``training_forward``, which ``DistributedDataParallel`` cannot
  intercept, and with logit accumulation DDP would only synchronise on the last chunk anyway (its
  ``no_sync`` on the others), so one explicit all-reduce after the last chunk is the same algorithm.
- Rank 0 alone writes the run folder (checkpoints, metrics, export) and shows progress; a resume
  may use another W.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job (``world_size == 1``: a plain single-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment(device_type: str) -> Distributed:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ...).

    NCCL on CUDA, gloo on CPU. Without torchrun's variables this is a single process.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(job: Distributed) -> None:
    if job.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_rows(local: Tensor, job: Distributed) -> tuple[Tensor, slice]:
    """Concatenate every rank's ``[n, ...]`` rows (same n on each) and say which rows are this rank's."""
    if not job.enabled:
        return local, slice(0, local.shape[0])
    parts = [torch.empty_like(local) for _ in range(job.world_size)]
    dist.all_gather(parts, local.contiguous())
    n = local.shape[0]
    return torch.cat(parts), slice(job.rank * n, (job.rank + 1) * n)


def all_reduce_gradients(model: nn.Module, job: Distributed) -> None:
    """Sum every parameter's ``.grad`` over ranks, as one flat all-reduce."""
    if not job.enabled:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_sum(value: Tensor | None, job: Distributed) -> Tensor | None:
    """A scalar summed over ranks (e.g. each rank's share of a batch-mean auxiliary loss, for the log)."""
    if value is None or not job.enabled:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def broadcast_parameters(model: nn.Module, job: Distributed) -> None:
    """Every rank starts from rank 0's weights (and buffers)."""
    if not job.enabled:
        return
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=0)


def any_rank(flag: bool, job: Distributed, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is true on some rank (e.g. a SIGTERM that reached only one process)."""
    if not job.enabled:
        return flag
    value = torch.tensor([1 if flag else 0], device=device)  # NCCL reduces device tensors only
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_object(obj: Any, job: Distributed) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. an error that must stop all of them)."""
    if not job.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


__all__ = ["Distributed", "from_environment", "shutdown", "all_gather_rows", "all_reduce_gradients", "all_reduce_sum",
           "broadcast_parameters", "any_rank", "broadcast_object"]
