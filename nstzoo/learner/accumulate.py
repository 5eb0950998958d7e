"""Logit accumulation: a contrastive loss over a target batch larger than fits in memory.

ALADIN (paper 002 §3.2.1) and ALADIN-NST (paper 000 §4.5) train with a target batch of 1024 by
"logit accumulation", the gradient-cache technique of Gao et al. (2021, luyug/GradCache). Plain
gradient accumulation would be wrong for a contrastive loss, which couples every pair of the batch;
here the loss always sees the *full* batch of embeddings, and only the encoder's activations are
chunked:

1. **Embed.** Each chunk is embedded under ``torch.no_grad()`` (no activations kept), after saving
   the CPU and CUDA RNG states it starts from.
2. **Cache the gradient.** The chunk embeddings are concatenated into one leaf tensor that requires
   grad; ``loss_fn`` is evaluated on all of them at once and back-propagated (through a
   ``GradScaler`` when given), leaving ``d loss / d embedding`` for every item.
3. **Re-embed with grad.** Each chunk is embedded again with autograd on, under its saved RNG
   state so that dropout (and any other randomness) draws the same values as in step 1, and the
   chunk's cached gradient is back-propagated into the parameters. Parameter ``.grad`` then holds
   exactly the gradient of the full-batch loss, and activation memory is that of one chunk.

The caller does the optimizer step (``optimizer.step()``, or ``scaler.step(optimizer)`` followed
by ``scaler.update()``, once per target batch) and zeroes the gradients.

Requirements on the model: its output for an item must not depend on the other items of its chunk.
``BatchNorm`` in training mode breaks this (batch statistics differ per chunk, and the second pass
updates the running statistics a second time), so :func:`accumulated_step` refuses such models;
BatchNorm in eval mode, LayerNorm, GroupNorm and dropout are fine.

Distributed training (not implemented here): after step 1, all-gather the embeddings of every rank
(keeping the local shard's autograd path, e.g. ``torch.distributed.nn.all_gather``), evaluate the
loss on the gathered batch with this rank's rows as anchors (``supcon_loss(..., anchor_slice=...)``)
and back-propagate; the local leaf then holds this rank's cached gradients. In step 3, wrap every
chunk but the last in ``model.no_sync()`` so DDP all-reduces the parameter gradients once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import get_device_states, set_device_states

__all__ = ["RandContext", "accumulated_step", "split_into_chunks", "ChunkInput", "Accumulated"]

#: One chunk of model input: a tensor, or a tuple of tensors passed as ``model(*chunk)``
#: (e.g. ``(images_224, images_256)`` for a two-branch encoder). Leading dimension = chunk size.
ChunkInput = Tensor | tuple[Tensor, ...]


def _as_tuple(chunk: ChunkInput) -> tuple[Tensor, ...]:
    return chunk if isinstance(chunk, tuple) else (chunk,)


class RandContext:
    """The CPU and CUDA RNG states at construction, replayed inside ``with``.

    Construct it just before a forward pass; entering it later sets the RNG to the same states, so
    the same random numbers (dropout masks, stochastic depth, ...) are drawn again. On exit the RNG
    states in force before entering are restored, so replaying does not shift the RNG stream.

    Args:
        *tensors: tensors whose CUDA devices must be captured (CPU tensors are ignored; the CPU
            state is always captured). Pass the chunk inputs and a model parameter, so a model that
            moves CPU inputs to the GPU itself is still covered.
    """

    def __init__(self, *tensors: Tensor):
        self.cpu_state = torch.get_rng_state()
        self.devices, self.device_states = get_device_states(*tensors)
        self._fork: AbstractContextManager | None = None

    def __enter__(self) -> RandContext:
        if self._fork is not None:
            raise RuntimeError("RandContext is not re-entrant")
        self._fork = torch.random.fork_rng(devices=self.devices, enabled=True)
        self._fork.__enter__()
        torch.set_rng_state(self.cpu_state)
        set_device_states(self.devices, self.device_states)
        return self

    def __exit__(self, *exc_info) -> None:
        fork, self._fork = self._fork, None
        assert fork is not None
        fork.__exit__(*exc_info)


def split_into_chunks(batch: ChunkInput, chunk_size: int) -> list[ChunkInput]:
    """Split a batch along dim 0 into chunks of ``chunk_size`` (the last may be smaller).

    Args:
        batch: ``[N, ...]`` tensor, or a tuple of tensors that all have the same ``N``.
        chunk_size: items per chunk, >= 1.

    Returns:
        A list of ``ceil(N / chunk_size)`` chunks, tensors or tuples like ``batch`` (views, no copy).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    parts = _as_tuple(batch)
    if not parts:
        raise ValueError("batch is an empty tuple")
    sizes = {p.shape[0] if p.dim() else None for p in parts}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"all batch tensors need the same leading dimension, got shapes "
                         f"{[tuple(p.shape) for p in parts]}")
    splits = [p.split(chunk_size) for p in parts]
    if isinstance(batch, tuple):
        return [tuple(s) for s in zip(*splits)]
    return list(splits[0])


class Accumulated(NamedTuple):
    """What :func:`accumulated_step` returns (all detached): the contrastive loss on the full batch,
    the pass-1 embeddings ``[N, D]``, and the auxiliary loss averaged over all items (None if none)."""

    loss: Tensor
    embeddings: Tensor
    auxiliary: Tensor | None


def _default_forward(model: nn.Module, chunk: ChunkInput) -> Tensor:
    return model(*_as_tuple(chunk))


def _check_model(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"logit accumulation needs per-item outputs, but {name or type(model).__name__!r} is "
                f"{type(module).__name__} in training mode: its batch statistics would differ per chunk "
                "and its running statistics would be updated twice. Put it in eval mode or use "
                "LayerNorm/GroupNorm.")


def accumulated_step(
    model: nn.Module,
    chunks: Sequence[ChunkInput],
    loss_fn: Callable[[Tensor], Tensor],
    *,
    scaler: torch.amp.GradScaler | None = None,
    autocast: AbstractContextManager | Callable[[], AbstractContextManager] | None = None,
    forward: Callable[[nn.Module, Any], Tensor] | None = None,
    training_forward: Callable[[nn.Module, Any], tuple[Tensor, Tensor | None]] | None = None,
    gather: Callable[[Tensor], tuple[Tensor, slice]] | None = None,
) -> Accumulated:
    """Accumulate into ``.grad`` the gradient of ``loss_fn`` on the full batch, chunk by chunk.

    See the module docstring for the algorithm (GradCache, Gao et al. 2021; ALADIN §3.2.1). The
    resulting parameter gradients equal those of ``loss_fn(cat([model(c) for c in chunks]))
    .backward()`` (and of a single full-batch forward, for a model whose randomness does not depend
    on how the batch is split), while activations are kept for one chunk at a time. Gradients are
    *added* to ``.grad``, like ``backward``; zero them before. No optimizer step is taken.

    Args:
        model: maps one chunk to embeddings ``[n, D]`` (a tensor ``model(x)`` or, for a tuple
            chunk, ``model(*chunk)``). Must not contain BatchNorm in training mode (ValueError).
        chunks: the target batch, split along dim 0 (see :func:`split_into_chunks`); chunk sizes
            may differ. Embeddings are concatenated in this order.
        loss_fn: maps all embeddings ``[N, D]`` to a scalar loss, e.g.
            ``lambda e: loss(e, labels, is_source)`` with labels for the whole batch in chunk order.
        scaler: optional ``torch.amp.GradScaler``: the loss is scaled before the cache backward,
            so the parameter gradients come out scaled; call ``scaler.step`` and ``scaler.update``
            once afterwards.
        forward: ``forward(model, chunk) -> [n, D]`` for pass 1; default ``model(*chunk)``. Callers
            customise how a chunk reaches the model by passing functions, not by the model being probed.
        training_forward: ``training_forward(model, chunk) -> (embeddings, auxiliary)`` for pass 2;
            ``auxiliary`` is None or a scalar, the mean of a per-item objective over the chunk (e.g.
            ALADIN's reconstruction). The full objective is ``loss_fn(all embeddings) + mean over all
            items of the auxiliary term``: each chunk's term is weighted by its share of the batch.
            Default: ``(forward(model, chunk), None)``.
        gather: for multi-process training: ``gather(local [n, D]) -> (all ranks' rows [N, D], this
            rank's slice)``; the loss is evaluated on all rows and this rank keeps the gradient of
            its own (:func:`nstzoo.learner.distributed.all_gather_rows`). The caller sums the
            parameter gradients over ranks afterwards. ``loss_fn`` then takes all ``N`` rows.
        autocast: optional autocast for the model's forward passes (both passes), either a context
            manager instance that can be entered repeatedly (``torch.autocast("cuda",
            dtype=torch.bfloat16)``) or a zero-argument factory returning one. The loss runs
            outside it.

    Returns:
        :class:`Accumulated` ``(loss, embeddings, auxiliary)``: the full-batch loss (detached,
        unscaled), the pass-1 embeddings ``[N, D]`` (detached), for logging and metrics, and the
        batch-mean auxiliary loss (or None).
    """
    if len(chunks) == 0:
        raise ValueError("chunks is empty")
    _check_model(model)
    forward = forward or _default_forward
    if training_forward is None:
        training_forward = lambda m, c: (forward(m, c), None)  # noqa: E731

    def autocast_ctx() -> AbstractContextManager:
        if autocast is None:
            return contextlib.nullcontext()
        return autocast if hasattr(autocast, "__enter__") else autocast()

    # Any parameter tensor lets RandContext capture the CUDA RNG of a model that moves CPU inputs
    # onto its own device inside forward.
    anchor_param = next((p for p in model.parameters()), None)
    extra = (anchor_param,) if anchor_param is not None else ()

    # Pass 1: embeddings without activations, each chunk's starting RNG state saved.
    rng_states: list[RandContext] = []
    pass1: list[Tensor] = []
    with torch.no_grad():
        for chunk in chunks:
            inputs = _as_tuple(chunk)
            rng_states.append(RandContext(*[t for t in inputs if isinstance(t, Tensor)], *extra))
            with autocast_ctx():
                emb = forward(model, chunk)
            if not isinstance(emb, Tensor) or emb.dim() != 2 or emb.shape[0] != inputs[0].shape[0]:
                raise ValueError(f"model must return [n, D] embeddings for a chunk of {inputs[0].shape[0]}, "
                                 f"got {type(emb).__name__} {tuple(getattr(emb, 'shape', ()))}")
            pass1.append(emb)

    # The loss on the *full* batch: averaging per chunk would be a different (wrong) objective.
    # DDP would all-gather here and pass the gathered batch with this rank's anchor slice.
    local = torch.cat(pass1).detach()
    everyone, mine = gather(local) if gather is not None else (local, slice(0, local.shape[0]))
    embeddings = everyone.detach().requires_grad_(True)
    loss = loss_fn(embeddings)
    if loss.dim() != 0:
        raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
    (scaler.scale(loss) if scaler is not None else loss).backward()
    cached = embeddings.grad
    if cached is None:
        raise ValueError("loss_fn's output does not depend on the embeddings")
    cached_chunks = cached[mine].split([e.shape[0] for e in pass1])

    # Pass 2: the same forward with autograd, under the same RNG, fed the cached gradient.
    total = embeddings.shape[0]
    auxiliary_sum: Tensor | None = None
    for chunk, rng, grad in zip(chunks, rng_states, cached_chunks):
        with rng, autocast_ctx():
            emb, auxiliary = training_forward(model, chunk)
        if not emb.requires_grad:
            raise ValueError("model output does not require grad: no trainable parameter reaches it")
        # emb.backward(grad) is the vector-Jacobian product of sum(emb * grad) without forming it.
        outputs, grads = [emb], [grad.to(emb.dtype)]
        if auxiliary is not None:
            share = auxiliary * (emb.shape[0] / total)
            outputs.append(scaler.scale(share) if scaler is not None else share)
            grads.append(torch.ones_like(outputs[-1]))
            auxiliary_sum = share.detach() if auxiliary_sum is None else auxiliary_sum + share.detach()
        torch.autograd.backward(outputs, grads)

    return Accumulated(loss.detach(), local, auxiliary_sum)
