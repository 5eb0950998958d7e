"""Every encoder of this package passes nstzoo's own encoder contract (nstzoo.testing.check_encoder) at tiny sizes."""

from __future__ import annotations

import pytest

from nstzoo.encoders import aladin, aladin_vit, color_hist, csd, fused, vgg_gram
from nstzoo.testing import check_encoder

from .helpers import registry_with

TINY_OPTIONS = {
    "aladin": {"backbone": "small", "widths": [8, 16], "size": 32, "proj_hidden": 16, "embed_dim": 8},
    "aladin-vit": {"random_init": True, "img_size": 32, "patch_size": 8, "width": 32, "depth": 1, "num_heads": 2,
                   "mlp_dim": 64, "proj_hidden": 16, "proj_dim": 8},
    "csd": {"random_init": True, "img_size": 28, "patch_size": 14, "width": 32, "depth": 1, "num_heads": 2,
            "mlp_dim": 64, "proj_dim": 8, "resize": "crop"},
    "color-hist": {"bins": 4},
    "vgg-gram": {"vgg": "normalised-vgg19", "size": 32, "taps": ["relu1_1", "relu2_1"], "random_init": True},
    "fused": {"encoders": [{"name": "color-hist", "options": {"bins": 4}},
                           {"name": "aladin", "options": {"backbone": "small", "widths": [8], "size": 16,
                                                          "proj_hidden": 8, "embed_dim": 4}}],
              "weights": [0.5, 1.0]},
}


@pytest.mark.parametrize("name", sorted(TINY_OPTIONS))
def test_encoder_contract(name):
    registry = registry_with(aladin, aladin_vit, csd, color_hist, vgg_gram, fused, install=True)
    report = check_encoder(name, registry=registry, options=TINY_OPTIONS[name], batch=2, size=32)
    assert report.ok, report.failures
