"""Training losses of PAMA (Luo et al., ACCV 2022) and of nstzoo's NeAT re-implementation.

Feature losses take VGG feature maps ``[B,C,H,W]``; image losses take images ``[B,3,H,W]`` in
[0, 1]. Every loss returns a scalar tensor averaged over the batch.

PAMA (from the paper and the public luoxuan-cs/PAMA code):

- :func:`self_similarity_loss`: content structure as cosine self-distance matrices (STROTSS style).
- :func:`relaxed_emd_loss`: relaxed earth mover's distance between output and style features.
- :func:`moment_loss`: first and second moments (mean and channel covariance).
- :class:`RGBuvHistogram` / :func:`histogram_loss`: HistoGAN's differentiable RGB-uv colour
  histogram with a Hellinger distance.

NeAT extras (re-implemented from the ALADIN-NST / NeAT descriptions):

- :func:`gram_loss`: Gatys-style Gram-matrix distance (used for identity terms).
- :func:`group_contrastive_loss`: supervised InfoNCE over groups sharing a style or a content.
- :func:`sobel_edge_patches` + :class:`CooccurrenceDiscriminator`: a patch discriminator that
  judges the most edge-rich output patches against patches of the style image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..stats import mean_std

# PAMA stage weights (main.py defaults): content (self-similarity), REMD, moment, colour.
PAMA_STAGE_WEIGHTS: tuple[dict[str, float], ...] = (
    {"content": 12.0, "remd": 2.0, "moment": 2.0, "color": 0.25},
    {"content": 9.0, "remd": 2.0, "moment": 2.0, "color": 0.5},
    {"content": 7.0, "remd": 2.0, "moment": 2.0, "color": 1.0},
)
PAMA_LOSS_LAYERS = ("relu3_1", "relu4_1", "relu5_1")
# Reconstruction: 0.5 * feature MSE per layer and image, 25 * pixel MSE per image.
RECONSTRUCTION_FEATURE_WEIGHT = 0.5
RECONSTRUCTION_PIXEL_WEIGHT = 25.0


def _flat(feat: Tensor) -> Tensor:
    return feat.reshape(feat.shape[0], feat.shape[1], -1)


def cosine_distance_matrix(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - cos`` between every position of ``a`` ``[B,C,N...]`` and of ``b`` ``[B,C,M...]`` -> ``[B,N,M]``."""
    a = F.normalize(_flat(a), dim=1, eps=eps)
    b = F.normalize(_flat(b), dim=1, eps=eps)
    return 1.0 - torch.bmm(a.transpose(1, 2), b)


def self_similarity_loss(output_feat: Tensor, content_feat: Tensor) -> Tensor:
    """Mean absolute difference of the two maps' cosine self-distance matrices.

    Both ``[B,C,H,W]`` of the same size. Zero when the features are equal, and unchanged by a
    positive global scale of either map (cosine distances ignore magnitude).
    """
    if output_feat.shape != content_feat.shape:
        raise ValueError(f"self_similarity_loss: shapes differ, {tuple(output_feat.shape)} vs "
                         f"{tuple(content_feat.shape)}")
    return (cosine_distance_matrix(output_feat, output_feat)
            - cosine_distance_matrix(content_feat, content_feat)).abs().mean()


def relaxed_emd_loss(output_feat: Tensor, style_feat: Tensor) -> Tensor:
    """Relaxed EMD with cosine cost: ``max(mean_i min_j C_ij, mean_j min_i C_ij)``.

    ``output_feat`` ``[B,C,H,W]`` and ``style_feat`` ``[B,C,H',W']`` may differ in size. Zero when
    every output feature has an identical style feature and vice versa (e.g. identical sets).
    """
    cost = cosine_distance_matrix(output_feat, style_feat)  # [B,N,M]
    return torch.maximum(cost.min(dim=2).values.mean(), cost.min(dim=1).values.mean())


def moment_loss(output_feat: Tensor, style_feat: Tensor) -> Tensor:
    """L1 distance of per-channel means plus L1 distance of ``C x C`` covariances over positions.

    Note: the reference code averages over the *channel* axis before centring; here the mean is
    taken over positions (the first moment the paper describes), which also lets output and style
    differ in size.
    """
    a, b = _flat(output_feat), _flat(style_feat)
    mu_a, mu_b = a.mean(dim=2, keepdim=True), b.mean(dim=2, keepdim=True)
    a_c, b_c = a - mu_a, b - mu_b
    cov_a = torch.bmm(a_c, a_c.transpose(1, 2)) / max(a.shape[2] - 1, 1)
    cov_b = torch.bmm(b_c, b_c.transpose(1, 2)) / max(b.shape[2] - 1, 1)
    return (mu_a - mu_b).abs().mean() + (cov_a - cov_b).abs().mean()


class RGBuvHistogram(nn.Module):
    """HistoGAN's RGB-uv histogram (Afifi et al., CVPR 2021), as PAMA configures it.

    ``forward(images [B,3,H,W] in [0,1]) -> [B,3,bins,bins]``, each sample summing to 1. Images
    larger than ``max_size`` are resized bilinearly to ``max_size x max_size`` first. Pixels vote
    with an inverse-quadratic kernel (width ``sigma``) in log-chroma space over [-3, 3], weighted
    by intensity, so the histogram is differentiable.
    """

    EPS = 1e-6

    def __init__(self, bins: int = 256, max_size: int = 64, sigma: float = 0.02):
        super().__init__()
        self.max_size = max_size
        self.sigma = sigma
        self.register_buffer("centres", torch.linspace(-3.0, 3.0, bins), persistent=False)

    def _kernel(self, values: Tensor) -> Tensor:  # [B,N] -> [B,N,bins]
        return 1.0 / (1.0 + (values.unsqueeze(-1) - self.centres) ** 2 / self.sigma ** 2)

    def forward(self, images: Tensor) -> Tensor:
        x = images.clamp(0.0, 1.0)
        if x.shape[-2] > self.max_size or x.shape[-1] > self.max_size:
            x = F.interpolate(x, size=(self.max_size, self.max_size), mode="bilinear", align_corners=False)
        pixels = x[:, :3].flatten(2)  # [B,3,N]
        intensity = (pixels.pow(2).sum(dim=1) + self.EPS).sqrt()  # [B,N]
        log_rgb = torch.log(pixels + self.EPS)
        planes = []
        for c, (u, v) in enumerate(((1, 2), (0, 2), (0, 1))):
            k_u = self._kernel(log_rgb[:, c] - log_rgb[:, u]) * intensity.unsqueeze(-1)
            k_v = self._kernel(log_rgb[:, c] - log_rgb[:, v])
            planes.append(torch.bmm(k_u.transpose(1, 2), k_v))  # [B,bins,bins]
        hist = torch.stack(planes, dim=1)
        return hist / (hist.sum(dim=(1, 2, 3), keepdim=True) + self.EPS)


def histogram_loss(output: Tensor, style: Tensor, histogram: RGBuvHistogram) -> Tensor:
    """Hellinger-type distance ``(1/sqrt 2) * ||sqrt H_s - sqrt H_o||_2 / B`` of RGB-uv histograms.

    Images ``[B,3,H,W]`` in [0, 1] (sizes may differ). Zero for identical images; grows as the
    output's colours move away from the style's.
    """
    h_out, h_style = histogram(output), histogram(style)
    distance = (h_style.sqrt() - h_out.sqrt()).pow(2).sum()
    return distance.clamp_min(0).sqrt() / (2.0 ** 0.5) / output.shape[0]


def mse_feature_loss(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """Sum over layers of the MSE between matching feature maps."""
    return sum((F.mse_loss(x, y) for x, y in zip(a, b, strict=True)), torch.zeros(()))


def pama_stage_loss(output_feats: list[Tensor], content_feats: list[Tensor], style_feats: list[Tensor],
                    output: Tensor, style: Tensor, weights: dict[str, float],
                    histogram: RGBuvHistogram | None) -> dict[str, Tensor]:
    """One PAMA stage's terms (already weighted) and their normalised sum under ``"total"``.

    Features are lists over :data:`PAMA_LOSS_LAYERS`; ``output``/``style`` are images in [0, 1].
    ``histogram=None`` turns the colour term off (PAMA's "without colour" release).
    """
    terms = {
        "content": weights["content"] * sum(self_similarity_loss(o, c) for o, c in zip(output_feats, content_feats)),
        "remd": weights["remd"] * sum(relaxed_emd_loss(o, s) for o, s in zip(output_feats, style_feats)),
        "moment": weights["moment"] * sum(moment_loss(o, s) for o, s in zip(output_feats, style_feats)),
    }
    used = ["content", "remd", "moment"]
    if histogram is not None:
        terms["color"] = weights["color"] * histogram_loss(output, style, histogram)
        used.append("color")
    terms["total"] = sum(terms[k] for k in used) / sum(weights[k] for k in used)
    return terms


def gram_matrix(feat: Tensor) -> Tensor:
    """``[B,C,H,W] -> [B,C,C]``, normalised by ``C*H*W`` so layers are comparable."""
    flat = _flat(feat)
    return torch.bmm(flat, flat.transpose(1, 2)) / flat.shape[1] / flat.shape[2]


def gram_loss(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """Gatys style distance: sum over layers of the MSE between Gram matrices (zero for equal inputs)."""
    return sum((F.mse_loss(gram_matrix(x), gram_matrix(y)) for x, y in zip(a, b, strict=True)), torch.zeros(()))


def group_contrastive_loss(embeddings: Tensor, groups: Tensor, temperature: float = 0.1) -> Tensor:
    """Supervised InfoNCE: embeddings ``[N,D]`` sharing a ``groups`` id ``[N]`` are positives.

    For each anchor with at least one positive: the mean over its positives of the log-softmax of
    cosine similarity / ``temperature`` against every other embedding. Lower when positives align.
    """
    if temperature <= 0:
        raise ValueError(f"group_contrastive_loss: temperature must be > 0, got {temperature}")
    z = F.normalize(embeddings, dim=1)
    logits = z @ z.t() / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits.log_softmax(dim=1).masked_fill(self_mask, 0.0)
    positives = (groups.unsqueeze(0) == groups.unsqueeze(1)) & ~self_mask
    counts = positives.sum(dim=1)
    per_anchor = -(log_prob * positives).sum(dim=1) / counts.clamp_min(1)
    has_positive = (counts > 0).to(per_anchor.dtype)
    return (per_anchor * has_positive).sum() / has_positive.sum().clamp_min(1.0)


class ProjectionHead(nn.Module):
    """Small MLP ``[N,in] -> [N,out]`` (Linear, ReLU, Linear) for contrastive losses."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def style_descriptor(feats: list[Tensor]) -> Tensor:
    """Per-channel mean and std of each feature map, concatenated: ``[B, 2 * sum(C)]``."""
    parts = []
    for feat in feats:
        mean, std = mean_std(feat)
        parts += [mean.flatten(1), std.flatten(1)]
    return torch.cat(parts, dim=1)


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(images: Tensor) -> Tensor:
    """Gradient magnitude of the luminance: ``[B,3,H,W]`` -> ``[B,1,H,W]``."""
    grey = (images * images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1).to(images)
    grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return (grad.pow(2).sum(dim=1, keepdim=True) + 1e-12).sqrt()


def sobel_edge_patches(images: Tensor, patch_size: int, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` non-overlapping ``patch_size`` patches of each image with the strongest edges.

    Args:
        images: ``[B,3,H,W]``; H and W are cropped down to multiples of ``patch_size``.
    Returns:
        patches ``[B,count,3,p,p]`` (strongest first) and their grid indices ``[B,count]``
        (row-major over the ``H//p x W//p`` grid). Selection has no gradient; the patches do.
    """
    p = patch_size
    rows, cols = images.shape[-2] // p, images.shape[-1] // p
    if rows * cols < count or count < 1:
        raise ValueError(f"sobel_edge_patches: a {tuple(images.shape[-2:])} image has {rows * cols} "
                         f"patches of {p} px, cannot pick {count}")
    images = images[..., : rows * p, : cols * p]
    with torch.no_grad():
        scores = F.avg_pool2d(sobel_magnitude(images), p).flatten(1)  # [B,rows*cols]
        index = scores.topk(count, dim=1).indices
    columns = F.unfold(images, kernel_size=p, stride=p)  # [B,3*p*p,rows*cols]
    picked = columns.gather(2, index.unsqueeze(1).expand(-1, columns.shape[1], -1))
    patches = picked.transpose(1, 2).reshape(images.shape[0], count, images.shape[1], p, p)
    return patches, index


class CooccurrenceDiscriminator(nn.Module):
    """Judges whether a patch co-occurs with a set of reference patches from the style image.

    ``forward(patches [B,K,3,p,p], references [B,R,3,p,p]) -> logits [B,K]``: each patch's code is
    concatenated with the mean code of its image's references (Swapping-Autoencoder style), so the
    discriminator asks "does this texture belong to that style?" rather than "is this realistic?".
    """

    def __init__(self, width: int = 64):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, 2, 1), act(), nn.Conv2d(width // 2, width, 3, 2, 1), act(),
            nn.Conv2d(width, width, 3, 1, 1), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(2 * width, width), act(), nn.Linear(width, 1))

    def _codes(self, patches: Tensor) -> Tensor:
        b, k = patches.shape[:2]
        return self.encoder(patches.flatten(0, 1)).view(b, k, -1)

    def forward(self, patches: Tensor, references: Tensor) -> Tensor:
        codes = self._codes(patches)
        context = self._codes(references).mean(dim=1, keepdim=True).expand_as(codes)
        return self.head(torch.cat([codes, context], dim=2)).squeeze(-1)


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Non-saturating GAN loss for the discriminator."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating GAN loss for the generator."""
    return F.softplus(-fake_logits).mean()


__all__ = [
    "PAMA_STAGE_WEIGHTS", "PAMA_LOSS_LAYERS", "cosine_distance_matrix", "self_similarity_loss", "relaxed_emd_loss",
    "moment_loss", "RGBuvHistogram", "histogram_loss", "mse_feature_loss", "pama_stage_loss", "gram_matrix",
    "gram_loss", "group_contrastive_loss", "ProjectionHead", "style_descriptor", "sobel_magnitude",
    "sobel_edge_patches", "CooccurrenceDiscriminator", "discriminator_loss", "generator_adversarial_loss",
]
