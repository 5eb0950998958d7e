"""Properties each PAMA / NeAT training loss must have."""

import torch

from nstzoo.nn.losses import adversarial, histogram, manifold, statistics
from nstzoo.stylizers import neat


def test_self_similarity_zero_for_identical_and_scale_invariant():
    torch.manual_seed(0)
    a, b = torch.randn(2, 16, 5, 6), torch.randn(2, 16, 5, 6)
    assert manifold.self_similarity_loss(a, a).abs() < 1e-6
    assert manifold.self_similarity_loss(a, b) > 0.05
    assert torch.allclose(manifold.self_similarity_loss(3.7 * a, b), manifold.self_similarity_loss(a, b), atol=1e-5)


def test_relaxed_emd_zero_for_identical_sets_and_positive_otherwise():
    torch.manual_seed(0)
    a = torch.randn(2, 8, 4, 4)
    shuffled = a.flatten(2)[..., torch.randperm(16)].view_as(a)  # same set, other order and size
    assert manifold.relaxed_emd_loss(a, shuffled).abs() < 1e-5
    assert manifold.relaxed_emd_loss(a, torch.randn(2, 8, 3, 7)) > 0.1


def test_moment_loss_zero_for_same_statistics_and_grows_with_shift():
    torch.manual_seed(0)
    a = torch.randn(1, 4, 6, 6)
    assert manifold.moment_loss(a, a).abs() < 1e-6
    assert manifold.moment_loss(a, a + 2.0) > manifold.moment_loss(a, a + 0.5) > 0


def test_histogram_loss_zero_for_identical_images_and_grows_with_colour_shift():
    torch.manual_seed(0)
    hist = histogram.RGBuvHistogram()
    image = torch.rand(2, 3, 24, 24) * 0.5 + 0.25
    warmer = image.clone()
    warmer[:, 0] *= 1.2
    hotter = image.clone()
    hotter[:, 0] *= 1.6
    assert histogram.histogram_loss(image, image, hist) < 1e-6
    assert 0 < histogram.histogram_loss(warmer, image, hist) < histogram.histogram_loss(hotter, image, hist)
    h = hist(image)
    assert h.shape == (2, 3, 256, 256) and torch.allclose(h.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-4)


def test_gram_loss_zero_for_identical_inputs():
    torch.manual_seed(0)
    feats = [torch.randn(2, 8, 6, 6), torch.randn(2, 16, 3, 3)]
    assert statistics.gram_loss(feats, feats) == 0
    assert statistics.gram_loss(feats, [f * 2 for f in feats]) > 0


def test_group_contrastive_lower_when_positives_align():
    torch.manual_seed(0)
    groups = torch.tensor([0, 1, 2, 0, 1, 2])
    centres = torch.randn(3, 32)
    aligned = centres[groups] + 0.01 * torch.randn(6, 32)
    scrambled = torch.randn(6, 32)
    assert neat.group_contrastive_loss(aligned, groups) < neat.group_contrastive_loss(scrambled, groups)


def test_sobel_selector_picks_strongest_edges():
    image = torch.full((1, 3, 32, 32), 0.5)
    # 4x4 grid of 8 px patches. Features stay inside their patch (2 px margin) so no edge spills over:
    # hard stripes in patch (2, 1), a faint square in patch (0, 3), flat grey elsewhere.
    image[:, :, 18:22, 10:12] = 0.0
    image[:, :, 18:22, 12:14] = 1.0
    image[:, :, 2:6, 26:30] = 0.6
    patches, index = neat.sobel_edge_patches(image, 8, 2)
    assert index.tolist() == [[2 * 4 + 1, 0 * 4 + 3]]
    assert torch.equal(patches[0, 0], image[0, :, 16:24, 8:16])
    assert patches.shape == (1, 2, 3, 8, 8)


def test_cooccurrence_discriminator_shapes_and_gradients():
    disc = neat.CooccurrenceDiscriminator(width=16)
    patches = torch.rand(2, 3, 3, 8, 8, requires_grad=True)
    logits = disc(patches, torch.rand(2, 4, 3, 8, 8))
    assert logits.shape == (2, 3)
    adversarial.generator_adversarial_loss(logits).backward()
    assert patches.grad.abs().sum() > 0
