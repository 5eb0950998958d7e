"""SupConLoss: the ALADIN-NST contrastive loss over style ids (paper 000 eq. 5-6, SupCon L_out)."""

from __future__ import annotations

import math

import pytest
import torch

from nstzoo.learner.loss import SupConLoss, supcon_loss


def loop_reference(emb: torch.Tensor, labels, is_source, tau: float, gt_weight: float) -> float:
    """The documented formula, one anchor and one positive at a time, in Python floats."""
    z = torch.nn.functional.normalize(emb.double(), dim=1).tolist()
    n = len(z)
    mass = [gt_weight if (is_source is not None and bool(is_source[i])) else 1.0 for i in range(n)]

    def s(i, k):
        return sum(a * b for a, b in zip(z[i], z[k])) / tau

    total, anchors_mass = 0.0, 0.0
    for i in range(n):
        if mass[i] == 0:
            continue
        denom = sum(mass[k] * math.exp(s(i, k)) for k in range(n) if k != i and mass[k] > 0)
        positives = [p for p in range(n) if p != i and int(labels[p]) == int(labels[i]) and mass[p] > 0]
        if not positives:
            continue
        terms = [mass[p] * -math.log(math.exp(s(i, p)) / denom) for p in positives]
        total += mass[i] * sum(terms) / sum(mass[p] for p in positives)
        anchors_mass += mass[i]
    return total / anchors_mass if anchors_mass else 0.0


def aladin_batch(n_styles: int = 4, dim: int = 16, seed: int = 0, dtype=torch.float64):
    """An ALADIN-NST-shaped batch: each style stylized twice, plus its source image, plus one
    stylized image whose style is alone in the batch (an anchor without positives)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.arange(n_styles).repeat_interleave(2), torch.arange(n_styles),
                        torch.tensor([n_styles])])
    is_source = torch.cat([torch.zeros(2 * n_styles, dtype=torch.bool), torch.ones(n_styles, dtype=torch.bool),
                           torch.zeros(1, dtype=torch.bool)])
    emb = torch.randn(labels.numel(), dim, generator=g, dtype=dtype)
    return emb, labels, is_source


@pytest.mark.parametrize("tau", [0.07, 0.5])
@pytest.mark.parametrize("gt_weight", [0.0, 0.3, 1.0, 2.5])
def test_matches_loop_reference(tau, gt_weight):
    emb, labels, is_source = aladin_batch(seed=1)
    got = SupConLoss(temperature=tau, gt_weight=gt_weight)(emb, labels, is_source)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(loop_reference(emb, labels, is_source, tau, gt_weight), rel=1e-12)


def test_matches_loop_reference_without_sources():
    emb, labels, _ = aladin_batch(seed=2)
    got = supcon_loss(emb, labels, temperature=0.1)
    assert got.item() == pytest.approx(loop_reference(emb, labels, None, 0.1, 1.0), rel=1e-12)


def test_closed_form_two_orthogonal_pairs():
    # Items 0,1 share one direction, 2,3 an orthogonal one: every anchor sees its positive at
    # cos 1 and the two negatives at cos 0, so L = -log(e^{1/t} / (e^{1/t} + 2)).
    tau = 0.2
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 0.5]], dtype=torch.float64)
    labels = torch.tensor([7, 7, 3, 3])
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2))
    assert supcon_loss(emb, labels, temperature=tau).item() == pytest.approx(expected, rel=1e-12)


def test_closed_form_with_weighted_sources():
    # Two orthogonal style groups, each = two stylized images + the source, all at cos 1 inside
    # the group. With source mass w and e = exp(1/t):
    #   stylized anchor: both positives at cos 1, denominator (1 + w) e + (2 + w)
    #   source anchor:   two stylized positives,  denominator 2 e + (2 + w)
    # and the batch loss is the mass-weighted mean over 4 stylized anchors and 2 source anchors.
    tau, w = 0.25, 0.4
    e = math.exp(1 / tau)
    emb = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    is_source = torch.tensor([False, False, True, False, False, True])
    l_stylized = math.log(((1 + w) * e + (2 + w)) / e)
    l_source = math.log((2 * e + (2 + w)) / e)
    expected = (4 * l_stylized + 2 * w * l_source) / (4 + 2 * w)
    got = supcon_loss(emb, labels, is_source, temperature=tau, gt_weight=w)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_invariant_to_batch_permutation():
    emb, labels, is_source = aladin_batch(seed=3)
    perm = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(5))
    loss = SupConLoss(temperature=0.1, gt_weight=0.7)
    assert loss(emb[perm], labels[perm], is_source[perm]).item() == pytest.approx(
        loss(emb, labels, is_source).item(), rel=1e-12)


def test_invariant_to_embedding_scale():
    # Embeddings are L2-normalised inside, so a per-row rescaling changes nothing.
    emb, labels, is_source = aladin_batch(seed=4)
    scale = torch.rand(labels.numel(), 1, dtype=torch.float64) * 10 + 0.1
    assert supcon_loss(emb * scale, labels, is_source).item() == pytest.approx(
        supcon_loss(emb, labels, is_source).item(), rel=1e-12)


def test_gt_weight_zero_is_the_batch_without_source_images():
    # gt_weight=0 removes source images from the loss: they are no anchors, no positives and no
    # negatives, so the loss (and its gradient w.r.t. the stylized items) equals the loss on the
    # batch with the source rows deleted, and the source rows get no gradient at all.
    emb, labels, is_source = aladin_batch(seed=6)
    emb.requires_grad_(True)
    with_sources = supcon_loss(emb, labels, is_source, gt_weight=0.0)
    (grad_all,) = torch.autograd.grad(with_sources, emb)

    stylized = emb.detach()[~is_source].clone().requires_grad_(True)
    without = supcon_loss(stylized, labels[~is_source], gt_weight=1.0)
    (grad_stylized,) = torch.autograd.grad(without, stylized)

    assert with_sources.item() == pytest.approx(without.item(), rel=1e-12)
    torch.testing.assert_close(grad_all[~is_source], grad_stylized, rtol=1e-10, atol=1e-12)
    assert torch.count_nonzero(grad_all[is_source]) == 0


def test_gt_weight_changes_the_loss_when_sources_present():
    emb, labels, is_source = aladin_batch(seed=7)
    values = {w: supcon_loss(emb, labels, is_source, gt_weight=w).item() for w in (0.0, 0.5, 1.0)}
    assert len({round(v, 9) for v in values.values()}) == 3


def test_anchor_slices_average_to_full_loss():
    # The DDP path: every rank passes the gathered batch and its own anchor rows; with equally many
    # anchors (all with positives) per rank, the mean of the rank losses is the full-batch loss.
    emb, labels, _ = aladin_batch(seed=8)
    emb, labels = emb[:8], labels[:8]  # 4 styles x 2 stylizations, every anchor has a positive
    full = supcon_loss(emb, labels).item()
    halves = [supcon_loss(emb, labels, anchor_slice=s).item() for s in (slice(0, 4), slice(4, 8))]
    assert sum(halves) / 2 == pytest.approx(full, rel=1e-12)
    assert halves[0] != pytest.approx(halves[1])


def test_gradient_finite_and_correct():
    emb, labels, is_source = aladin_batch(seed=9, dim=6)
    emb.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: supcon_loss(x, labels, is_source, temperature=0.3, gt_weight=0.6), (emb,))


@pytest.mark.parametrize("case", ["all_singletons", "one_item", "identical", "tiny_temperature", "zero_vector"])
def test_no_nan_on_degenerate_batches(case):
    g = torch.Generator().manual_seed(10)
    emb = torch.randn(64, 32, generator=g)
    labels = torch.arange(64) // 2
    tau = 0.1
    if case == "all_singletons":
        labels = torch.arange(64)
    elif case == "one_item":
        emb, labels = emb[:1], labels[:1]
    elif case == "identical":
        emb = emb[:1].expand(64, -1).clone()
    elif case == "tiny_temperature":
        tau = 1e-3
    elif case == "zero_vector":
        emb[3] = 0
    emb.requires_grad_(True)
    loss = supcon_loss(emb, labels, temperature=tau)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(emb.grad).all()
    if case in ("all_singletons", "one_item"):
        # No anchor has a positive: the loss is 0 and pushes nothing.
        assert loss.item() == 0.0
        assert torch.count_nonzero(emb.grad) == 0
    if case == "identical":
        # All 64 at cos 1: each anchor's positive gets probability 1/63.
        assert loss.item() == pytest.approx(math.log(63), rel=1e-5)


def test_bf16_autocast_computes_in_float32():
    emb, labels, is_source = aladin_batch(seed=11, dim=32, dtype=torch.float32)
    emb_bf16 = emb.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = supcon_loss(emb_bf16, labels, is_source, temperature=0.05)
    assert got.dtype == torch.float32
    # Same as float32 on the bf16-rounded inputs: nothing inside ran in bf16.
    expected = supcon_loss(emb_bf16.float(), labels, is_source, temperature=0.05)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(temperature=float("nan"))
    with pytest.raises(ValueError, match="gt_weight"):
        SupConLoss(gt_weight=-0.1)
    emb = torch.randn(4, 3)
    with pytest.raises(ValueError, match="labels"):
        supcon_loss(emb, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="labels"):
        supcon_loss(emb, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="is_source"):
        supcon_loss(emb, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="embeddings"):
        supcon_loss(emb[None], torch.tensor([0, 0, 1, 1]))


def test_matches_pytorch_metric_learning_supcon():
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    emb, labels, is_source = aladin_batch(n_styles=6, dim=24, seed=12)
    # gt_weight=1 is plain SupCon over the whole batch: source images are just members of their
    # style id, which is how pytorch-metric-learning sees them.
    ours = supcon_loss(emb, labels, is_source, temperature=0.07, gt_weight=1.0)
    theirs = pml_losses.SupConLoss(temperature=0.07)(emb, labels)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10)
