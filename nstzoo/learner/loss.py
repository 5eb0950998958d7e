"""Supervised contrastive loss over style ids, with weighted "ground-truth" source-style terms.

ALADIN-NST (paper 000, §3.2, eq. 5-6) trains with a standard contrastive loss: the anchor is a
stylized image, its positive is the other image stylized with the same style in the batch, and
the negatives are the rest of the batch; further contrastive terms compare each stylized image
with the embedding of its source style image ("ground truth", as in CAST and NeAT; Fig. 3).

This module writes all of those terms as one supervised contrastive loss over style ids
(SupCon, Khosla et al., 2020, the ``L_out`` form, as in pytorch-metric-learning's
``SupConLoss``): every batch item is an anchor; its positives are the other members of its style
group (the other stylization and the source style image); the softmax denominator runs over every
other item of the batch (the anchor itself excluded); the anchor's loss is the mean of
``-log softmax`` over its positives, and the loss is the mean over anchors that have positives.

Source style images and ``gt_weight``
-------------------------------------
Source style images are ordinary members of their style group: they are anchors too, and they
appear in every denominator. ``gt_weight`` (``w``) gives each source item a *mass* ``w`` while
stylized items have mass 1, and every sum over items is mass-weighted:

* the denominator of anchor ``i`` is ``sum_{k != i} m_k exp(s_ik)``;
* the loss of anchor ``i`` is the ``m_p``-weighted mean of ``-log(exp(s_ip) / denominator_i)``
  over its positives ``p``;
* the batch loss is the ``m_i``-weighted mean over anchors that have positives.

So every term that involves a source style image, as anchor or as positive, is scaled by ``w``.
``w = 1`` is exactly SupCon on the whole batch (source images included); ``w = 0`` is exactly
SupCon on the batch with the source images removed (they are then neither anchors, positives nor
negatives), which is the "no ground-truth terms" ablation; values in between interpolate.

Distributed training (not implemented here)
-------------------------------------------
Negatives should be gathered across ranks. The loss is written so that this needs no change
here: pass the all-gathered ``embeddings``/``labels``/``is_source`` (with the local shard's
autograd path kept, e.g. ``torch.distributed.nn.all_gather``) and ``anchor_slice`` selecting this
rank's rows; only those rows are anchors, all rows are positives/negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SupConLoss", "supcon_loss"]


def _check_inputs(embeddings: Tensor, labels: Tensor, is_source: Tensor | None) -> None:
    # Shape checks only: they read metadata, never tensor values, so they never sync with the GPU.
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {tuple(embeddings.shape)}")
    n = embeddings.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must be [N]={n}, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer style ids, got dtype {labels.dtype}")
    if is_source is not None:
        if is_source.shape != (n,):
            raise ValueError(f"is_source must be [N]={n}, got shape {tuple(is_source.shape)}")
        if is_source.dtype != torch.bool:
            raise ValueError(f"is_source must be a bool tensor, got dtype {is_source.dtype}")


def _check_hparams(temperature: float, gt_weight: float) -> None:
    if not temperature > 0:  # also rejects NaN
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not gt_weight >= 0:
        raise ValueError(f"gt_weight must be >= 0, got {gt_weight!r}")


def supcon_loss(
    embeddings: Tensor,
    labels: Tensor,
    is_source: Tensor | None = None,
    *,
    temperature: float = 0.1,
    gt_weight: float = 1.0,
    anchor_slice: slice | None = None,
) -> Tensor:
    """Supervised contrastive loss (SupCon ``L_out``) with mass-weighted source style images.

    See the module docstring for the exact formula (ALADIN-NST, paper 000 §3.2 eq. 5-6, written
    as SupCon, Khosla et al. 2020).

    Args:
        embeddings: ``[N, D]`` float embeddings, any scale: they are L2-normalised here (a no-op
            when the encoder already normalises), so similarities are cosines in ``[-1, 1]``.
            Any float dtype; the loss is computed in float32 (float64 stays float64) with autocast
            disabled, so it is safe inside a bf16/fp16 ``torch.autocast`` region.
        labels: ``[N]`` integer style ids; items with equal ids are positives of each other.
        is_source: optional ``[N]`` bool, True for source style images ("ground truth" members
            of their style group). None means no item is a source image.
        temperature: ``tau`` of eq. 5, > 0. Logits are ``cos / tau``.
        gt_weight: mass ``>= 0`` of source items; scales every term with a source image as anchor
            or positive. 0 removes source images from the loss entirely.
        anchor_slice: rows of ``embeddings`` that act as anchors (default: all). For DDP, pass the
            all-gathered batch and this rank's slice; every row is still a positive/negative.

    Returns:
        Scalar loss (float32, or float64 for float64 input), ``>= 0``. Anchors without positives
        (a style seen once, or every positive of mass 0) are skipped; if no anchor has a
        positive the loss is 0, still attached to the graph with zero gradient, never NaN.
    """
    _check_hparams(temperature, gt_weight)
    _check_inputs(embeddings, labels, is_source)
    n = embeddings.shape[0]
    device = embeddings.device
    rows = torch.arange(n, device=device)[anchor_slice if anchor_slice is not None else slice(None)]

    compute_dtype = torch.float64 if embeddings.dtype == torch.float64 else torch.float32
    # Autocast would run the matmul below in bf16; the softmax over a large batch needs float32.
    with torch.autocast(device_type=device.type, enabled=False):
        z = F.normalize(embeddings.to(compute_dtype), dim=1)
        logits = z[rows] @ z.T / temperature  # [A, N], in [-1/tau, 1/tau]

        if is_source is None:
            mass = torch.ones(n, dtype=compute_dtype, device=device)
        else:
            mass = torch.where(is_source, torch.as_tensor(float(gt_weight), dtype=compute_dtype, device=device),
                               torch.ones((), dtype=compute_dtype, device=device))
        not_self = rows[:, None] != torch.arange(n, device=device)[None, :]  # [A, N]
        kept = not_self & (mass > 0)[None, :]

        # Mass-weighted log-sum-exp: log(sum_k m_k exp(s_k)) = logsumexp(s_k + log m_k). Excluded
        # entries get the most negative finite value rather than -inf so that an empty row gives a
        # finite (and unused) value and no NaN gradient; any kept entry dominates it.
        very_negative = torch.finfo(compute_dtype).min
        log_mass = mass.clamp_min(torch.finfo(compute_dtype).tiny).log()
        masked = torch.where(kept, logits + log_mass[None, :], very_negative)
        log_denominator = torch.logsumexp(masked, dim=1, keepdim=True)  # [A, 1]
        log_prob = logits - log_denominator  # [A, N]

        positive = kept & (labels[rows][:, None] == labels[None, :])
        pos_weight = torch.where(positive, mass[None, :], 0.0)  # [A, N]
        pos_mass = pos_weight.sum(dim=1)  # [A]
        # where (not multiply) so that the values of excluded entries never reach the sum.
        weighted = torch.where(positive, pos_weight * log_prob, 0.0).sum(dim=1)
        tiny = torch.finfo(compute_dtype).tiny
        per_anchor = -weighted / pos_mass.clamp_min(tiny)  # [A]

        anchor_weight = torch.where(pos_mass > 0, mass[rows], 0.0)
        # Dividing by a clamped total instead of branching on it keeps the loss free of host syncs;
        # with no valid anchor the numerator is exactly 0.
        return (anchor_weight * per_anchor).sum() / anchor_weight.sum().clamp_min(tiny)


class SupConLoss(nn.Module):
    """Module form of :func:`supcon_loss` (ALADIN-NST's contrastive loss over style ids).

    Args:
        temperature: ``tau`` > 0 (paper 000 eq. 5 does not give it; 0.1 is pytorch-metric-learning's
            SupCon default, 0.07 the SupCon paper's).
        gt_weight: mass >= 0 of the source style images; 1 = plain SupCon over the whole batch,
            0 = the ground-truth terms ablated.

    Example:
        >>> loss_fn = SupConLoss(temperature=0.1)
        >>> emb = torch.randn(6, 16)
        >>> labels = torch.tensor([0, 0, 1, 1, 0, 1])
        >>> is_source = torch.tensor([False, False, False, False, True, True])
        >>> loss = loss_fn(emb, labels, is_source)
    """

    def __init__(self, temperature: float = 0.1, gt_weight: float = 1.0):
        super().__init__()
        _check_hparams(temperature, gt_weight)
        self.temperature = float(temperature)
        self.gt_weight = float(gt_weight)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        is_source: Tensor | None = None,
        anchor_slice: slice | None = None,
    ) -> Tensor:
        """Scalar loss for ``embeddings [N, D]``, ``labels [N]``, ``is_source [N]`` (see :func:`supcon_loss`)."""
        return supcon_loss(embeddings, labels, is_source, temperature=self.temperature,
                           gt_weight=self.gt_weight, anchor_slice=anchor_slice)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gt_weight={self.gt_weight}"
