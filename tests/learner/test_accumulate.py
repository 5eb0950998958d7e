"""Logit accumulation (GradCache) gives the gradients of the full-batch loss, chunk by chunk."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nstzoo.learner.accumulate as accumulate_module
from nstzoo.learner.accumulate import RandContext, accumulated_step, split_into_chunks
from nstzoo.learner.loss import SupConLoss


class DropoutNet(nn.Module):
    """Conv + MLP encoder with dropout in two places: its gradients depend on the RNG."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.drop1 = nn.Dropout(0.3)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.GELU(), nn.Dropout(0.5),
                                nn.Linear(16, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop1(torch.relu(self.conv(x))))


class TwoBranchNet(nn.Module):
    """Takes ``(small, large)`` views like the ALADIN-NST encoder's (224, 256) pair."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.a = DropoutNet(dim)
        self.b = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(3 * 10 * 10, dim))

    def forward(self, small: torch.Tensor, large: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(small), self.b(large)], dim=1)


def make_batch(dtype=torch.float64, seed: int = 0):
    """13 items in shuffled order: 4 styles x 2 stylizations, their 4 source images, one loner.
    With chunks of 5 (5 + 5 + 3) pairs and sources straddle the chunk boundaries."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.arange(4).repeat_interleave(2), torch.arange(4), torch.tensor([4])])
    is_source = torch.cat([torch.zeros(8, dtype=torch.bool), torch.ones(4, dtype=torch.bool),
                           torch.zeros(1, dtype=torch.bool)])
    perm = torch.randperm(13, generator=g)
    small = torch.randn(13, 3, 8, 8, generator=g, dtype=dtype)
    large = torch.randn(13, 3, 10, 10, generator=g, dtype=dtype)
    return small, large, labels[perm], is_source[perm]


def param_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def reference_step(model, chunks, loss_fn):
    """The memory-hungry truth: every chunk's forward kept with grad, one loss on the full batch."""
    model.zero_grad(set_to_none=True)
    emb = torch.cat([model(*c) if isinstance(c, tuple) else model(c) for c in chunks])
    loss = loss_fn(emb)
    loss.backward()
    return loss.detach(), emb.detach(), param_grads(model)


def run_both(model, chunks, loss_fn, seed=123, **kwargs):
    torch.manual_seed(seed)
    ref_loss, ref_emb, ref_grads = reference_step(model, chunks, loss_fn)
    ref_next = torch.rand(3)  # where the RNG stream stands afterwards
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    loss, emb, _ = accumulated_step(model, chunks, loss_fn, **kwargs)
    next_ = torch.rand(3)
    return (ref_loss, ref_emb, ref_grads, ref_next), (loss, emb, param_grads(model), next_)


def assert_grads_close(got, expected, rtol, atol):
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("two_branch", [False, True], ids=["tensor_chunks", "tuple_chunks"])
def test_gradients_equal_full_batch_loss_float64(two_branch):
    torch.manual_seed(0)
    small, large, labels, is_source = make_batch()
    model = (TwoBranchNet() if two_branch else DropoutNet()).double().train()
    batch = (small, large) if two_branch else small
    chunks = split_into_chunks(batch, 5)
    assert [len(c[0]) if two_branch else len(c) for c in chunks] == [5, 5, 3]
    loss_mod = SupConLoss(temperature=0.1, gt_weight=0.5)
    loss_fn = lambda e: loss_mod(e, labels, is_source)  # noqa: E731

    (ref_loss, ref_emb, ref_grads, ref_next), (loss, emb, grads, next_) = run_both(model, chunks, loss_fn)

    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    torch.testing.assert_close(emb, ref_emb, rtol=1e-12, atol=0)
    assert_grads_close(grads, ref_grads, rtol=1e-10, atol=1e-13)
    # Replaying the RNG for pass 2 leaves the stream where one forward pass would have left it.
    torch.testing.assert_close(next_, ref_next, rtol=0, atol=0)


def test_without_rng_replay_gradients_differ(monkeypatch):
    # Control for the test above: dropout makes the gradients depend on the replay, so a broken
    # replay would be caught.
    class NoReplay:
        def __init__(self, *tensors):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    torch.manual_seed(0)
    small, _, labels, is_source = make_batch()
    model = DropoutNet().double().train()
    chunks = split_into_chunks(small, 5)
    loss_fn = lambda e: SupConLoss()(e, labels, is_source)  # noqa: E731
    monkeypatch.setattr(accumulate_module, "RandContext", NoReplay)
    (_, _, ref_grads, _), (_, _, grads, _) = run_both(model, chunks, loss_fn)
    assert not torch.allclose(grads["fc.4.weight"], ref_grads["fc.4.weight"], rtol=1e-3)


def test_gradients_equal_single_forward_without_randomness():
    # A deterministic per-item model: accumulation equals one plain full-batch forward/backward.
    torch.manual_seed(1)
    small, _, labels, is_source = make_batch()
    model = DropoutNet().double().eval()
    loss_fn = lambda e: SupConLoss(temperature=0.2)(e, labels, is_source)  # noqa: E731
    model.zero_grad(set_to_none=True)
    loss_fn(model(small)).backward()
    expected = param_grads(model)
    model.zero_grad(set_to_none=True)
    accumulated_step(model, split_into_chunks(small, 4), loss_fn)
    assert_grads_close(param_grads(model), expected, rtol=1e-10, atol=1e-13)


def test_gradients_equal_full_batch_loss_float32():
    torch.manual_seed(2)
    small, large, labels, is_source = make_batch(dtype=torch.float32, seed=3)
    model = TwoBranchNet().train()
    chunks = split_into_chunks((small, large), 6)
    loss_fn = lambda e: SupConLoss(temperature=0.1)(e, labels, is_source)  # noqa: E731
    (ref_loss, _, ref_grads, _), (loss, _, grads, _) = run_both(model, chunks, loss_fn)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    assert_grads_close(grads, ref_grads, rtol=1e-5, atol=1e-7)


def test_grad_scaler_scales_then_unscales_to_the_same_gradients():
    torch.manual_seed(4)
    small, _, labels, is_source = make_batch()
    model = DropoutNet().double().train()
    chunks = split_into_chunks(small, 5)
    loss_fn = lambda e: SupConLoss()(e, labels, is_source)  # noqa: E731
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    (ref_loss, _, ref_grads, _), (loss, _, grads, _) = run_both(model, chunks, loss_fn, scaler=scaler)

    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)  # reported unscaled
    assert_grads_close(grads, {n: g * 1024.0 for n, g in ref_grads.items()}, rtol=1e-10, atol=1e-10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler.unscale_(opt)
    assert_grads_close(param_grads(model), ref_grads, rtol=1e-10, atol=1e-13)
    before = [p.detach().clone() for p in model.parameters()]
    scaler.step(opt)
    scaler.update()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_autocast_runs_both_passes_in_bf16():
    torch.manual_seed(5)
    small, _, labels, is_source = make_batch(dtype=torch.float32)
    model = DropoutNet().train()
    chunks = split_into_chunks(small, 5)
    loss_fn = lambda e: SupConLoss()(e, labels, is_source)  # noqa: E731
    ctx = torch.autocast("cpu", dtype=torch.bfloat16)  # one instance, entered once per chunk per pass

    def ref_model(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)

    torch.manual_seed(9)
    model.zero_grad(set_to_none=True)
    ref_loss = loss_fn(torch.cat([ref_model(c) for c in chunks]))
    ref_loss.backward()
    ref_grads = param_grads(model)
    torch.manual_seed(9)
    model.zero_grad(set_to_none=True)
    loss, emb, _ = accumulated_step(model, chunks, loss_fn, autocast=ctx)
    assert emb.dtype == torch.bfloat16
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    assert_grads_close(param_grads(model), ref_grads, rtol=1e-2, atol=1e-4)
    assert not torch.is_autocast_enabled("cpu")


def test_batchnorm_in_training_mode_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 8))
    x = torch.randn(6, 3, 8, 8)
    loss_fn = lambda e: SupConLoss()(e, torch.arange(6) // 2)  # noqa: E731
    with pytest.raises(ValueError, match="BatchNorm2d"):
        accumulated_step(model, split_into_chunks(x, 3), loss_fn)
    model.eval()  # running statistics: per-item, allowed
    accumulated_step(model, split_into_chunks(x, 3), loss_fn)
    assert model[0].weight.grad is not None


def test_bad_model_output_and_empty_chunks_are_reported():
    loss_fn = lambda e: e.sum()  # noqa: E731
    with pytest.raises(ValueError, match="empty"):
        accumulated_step(nn.Linear(2, 2), [], loss_fn)
    with pytest.raises(ValueError, match=r"\[n, D\]"):
        accumulated_step(nn.Identity(), [torch.randn(2, 3, 4)], loss_fn)


def test_split_into_chunks():
    x = torch.arange(10)
    assert [c.tolist() for c in split_into_chunks(x, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    pairs = split_into_chunks((x, x * 10), 6)
    assert [tuple(t.tolist() for t in p) for p in pairs] == [
        ([0, 1, 2, 3, 4, 5], [0, 10, 20, 30, 40, 50]), ([6, 7, 8, 9], [60, 70, 80, 90])]
    assert len(split_into_chunks(x, 100)) == 1
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            split_into_chunks(x, bad)
    with pytest.raises(ValueError, match="leading dimension"):
        split_into_chunks((x, torch.arange(9)), 3)


def test_rand_context_replays_and_restores():
    torch.manual_seed(7)
    ctx = RandContext()
    first = torch.rand(5)
    after = torch.rand(5)
    torch.manual_seed(8)
    with ctx:
        replay = torch.rand(5)
    outside = torch.rand(5)
    torch.manual_seed(8)
    torch.testing.assert_close(replay, first, rtol=0, atol=0)
    torch.testing.assert_close(outside, torch.rand(5), rtol=0, atol=0)
    assert not torch.equal(after, first)


class ReconstructingNet(nn.Module):
    """An encoder with a per-item auxiliary objective (like ALADIN's reconstruction) and dropout."""

    def __init__(self):
        super().__init__()
        self.enc = DropoutNet(6)
        self.dec = nn.Linear(6, 3 * 8 * 8)

    def forward(self, x: torch.Tensor, frozen: torch.Tensor | None = None) -> torch.Tensor:
        return self.enc(x)

    def training_forward(self, x: torch.Tensor, frozen: torch.Tensor | None = None):
        z = self.enc(x)
        reconstruction = (self.dec(z).view_as(x) - x).abs().flatten(1).mean(1)  # [n] per-item L1
        return z, 0.01 * reconstruction.mean()


def test_auxiliary_loss_gradients_equal_the_full_batch_objective():
    """contrastive(full batch) + mean over all items of the auxiliary term, chunked 5 + 5 + 3."""
    small, _, labels, is_source = make_batch()
    model = ReconstructingNet().double().train()
    loss_fn = lambda e: SupConLoss(0.1)(e, labels, is_source)  # noqa: E731

    # The truth, chunk by chunk as in reference_step (dropout masks are drawn per chunk).
    torch.manual_seed(7)
    model.zero_grad(set_to_none=True)
    outputs = [model.training_forward(c) for c in split_into_chunks(small, 5)]
    z = torch.cat([o[0] for o in outputs])
    aux = sum(o[1] * (len(o[0]) / len(small)) for o in outputs)
    (loss_fn(z) + aux).backward()
    expected = param_grads(model)

    torch.manual_seed(7)
    model.zero_grad(set_to_none=True)
    chunks = [(c, None) for c in split_into_chunks(small, 5)]
    result = accumulated_step(model, chunks, loss_fn, forward=lambda m, c: m(*c),
                              training_forward=lambda m, c: m.training_forward(*c))
    assert_grads_close(param_grads(model), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(result.auxiliary, aux.detach(), rtol=1e-10, atol=1e-12)
