"""Non-saturating GAN losses (NeAT's patch discriminator; any recipe with a discriminator)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Non-saturating GAN loss for the discriminator."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating GAN loss for the generator."""
    return F.softplus(-fake_logits).mean()



__all__ = ["discriminator_loss", "generator_adversarial_loss"]
