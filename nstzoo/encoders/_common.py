"""Helpers shared by the encoder plugins in this package (not a plugin itself: no entry point, no hooks).

- :func:`resize_square`: the "squash" (and "center-crop") input handling the released models use.
- :func:`check_file`: a weights path that must exist, as a :class:`~nstzoo.errors.WeightsError`.
- :func:`key_list`: the "a, b, c ... (N in all)" form every strict-loading error uses.
- :func:`build_timm_vit`: a timm ``VisionTransformer`` with an *exact* MLP width, so an imported
  checkpoint of any depth/width maps onto it.
- :func:`convert_by_table`: renames a released state dict through a table of every key it must
  hold, so that a missing, unexpected or misshapen key is named *in the released layout*.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, WeightsError

StateDict = dict[str, Tensor]


def key_list(keys: Sequence[str], limit: int = 8) -> str:
    """``"a, b, c"`` or ``"a, ..., h ... (12 in all)"``: long key lists stay readable in one line."""
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def check_file(owner: str, path: str | None, what: str, how: str) -> Path | None:
    """``Path(path)`` when given and present; None when not given; WeightsError naming it when absent."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"{owner}: {what} file not found: {p}", hint=how)
    return p


def resize_square(images: Tensor, size: int, mode: str = "bilinear", crop: bool = False) -> Tensor:
    """``[B,3,H,W]`` -> ``[B,3,size,size]`` with antialiasing.

    ``crop=False`` squashes (aspect ratio not kept: what ALADIN-ViT's ``Resize((224, 224))`` does and
    what nstzoo's evaluation does once for every encoder). ``crop=True`` resizes the shorter side to
    ``size`` and takes the centre square (torchvision ``Resize(size)`` + ``CenterCrop(size)``, CSD's
    preprocessing). ``mode`` is an ``F.interpolate`` mode ("bilinear" or "bicubic"). Bicubic can
    overshoot [0, 1] slightly, as PIL's does; the value is not clamped, like torchvision's tensors.
    """
    h, w = images.shape[-2:]
    if crop:
        scale = size / min(h, w)
        # torchvision's Resize(int) rounds the long side down (int(size * long / short)).
        nh, nw = (size, max(size, int(size * w / h))) if h <= w else (max(size, int(size * h / w)), size)
        if (nh, nw) != (h, w):
            images = F.interpolate(images, size=(nh, nw), mode=mode, align_corners=False, antialias=scale < 1)
        top, left = (nh - size) // 2, (nw - size) // 2
        return images[..., top:top + size, left:left + size]
    if (h, w) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode=mode, align_corners=False, antialias=True)


def check_images(owner: str, images: Tensor) -> Tensor:
    """Validate ``[B,3,H,W]`` and return it as float32 (the encoders' input contract)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{owner}: expected images [B,3,H,W], got shape {tuple(images.shape)}")
    return images if images.dtype == torch.float32 else images.float()


def positive_int(owner: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{owner}: {key} must be a positive integer, got {value!r}")
    return value


def build_timm_vit(*, img_size: int, patch_size: int, width: int, depth: int, num_heads: int, mlp_dim: int,
                   **kwargs: Any) -> nn.Module:
    """A timm ``VisionTransformer`` (class token, no classifier, CLS pooling) of exactly these sizes.

    timm sizes the MLP as ``int(width * mlp_ratio)``; ``(mlp_dim + 0.5) / width`` makes that product
    land inside ``[mlp_dim, mlp_dim + 1)`` whatever the float rounding, so any checkpoint's MLP width
    is reproduced exactly. ``kwargs`` go to the constructor (``pre_norm``, ``norm_layer``, ``act_layer``).
    """
    from timm.models.vision_transformer import VisionTransformer

    if width % num_heads:
        raise ConfigError(f"width {width} is not divisible by num_heads {num_heads}")
    if img_size % patch_size:
        raise ConfigError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
    net = VisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=width, depth=depth,
                            num_heads=num_heads, mlp_ratio=(mlp_dim + 0.5) / width, num_classes=0,
                            global_pool="token", class_token=True, **kwargs)
    built = net.blocks[0].mlp.fc1.out_features if depth else mlp_dim
    assert built == mlp_dim, (built, mlp_dim)
    return net


def grid_side(tokens: int, owner: str, key: str) -> int:
    """The side of a square patch grid holding ``tokens`` patches (a position table minus the class token)."""
    side = int(round(tokens ** 0.5))
    if side * side != tokens:
        raise WeightsError(f"{owner}: {key} holds {tokens} patch positions, not a square grid")
    return side


def anchor(owner: str, source: str, state: Mapping[str, Tensor], key: str, ndim: int) -> Tensor:
    """A released tensor the architecture is read from; WeightsError naming it when absent or of the wrong rank."""
    if key not in state:
        raise WeightsError(f"{source}: {owner} checkpoint is missing key {key} (needed to read the architecture)")
    t = state[key]
    if t.dim() != ndim:
        raise WeightsError(f"{source}: key {key} has shape {tuple(t.shape)}, expected {ndim} dimensions")
    return t


#: One released key: (this project's key, expected shape, optional reshaping of the tensor). A target
#: key ending in ``#k`` is part ``k`` of a tensor concatenated along dim 0 (e.g. q, k, v -> qkv).
TableEntry = tuple[str, tuple[int, ...], Callable[[Tensor], Tensor] | None]


def convert_by_table(owner: str, source: str, state: Mapping[str, Tensor],
                     table: Mapping[str, TableEntry]) -> StateDict:
    """Map ``state`` (released key -> tensor) to this project's layout through ``table``.

    ``table`` lists every key the released file must hold. Raises :class:`WeightsError` naming the
    released keys that are missing, unexpected, or of the wrong shape (all of them, not the first).
    Floating tensors come out float32 and contiguous.
    """
    missing = [k for k in table if k not in state]
    unexpected = sorted(k for k in state if k not in table)
    misshapen = [f"{k} {tuple(state[k].shape)} != {table[k][1]}" for k in table
                 if k in state and tuple(state[k].shape) != table[k][1]]
    if missing or unexpected or misshapen:
        found = (("missing key(s)", missing), ("unexpected key(s)", unexpected), ("shape mismatch", misshapen))
        parts = [f"{label}: {key_list(keys)}" for label, keys in found if keys]
        raise WeightsError(f"{source}: does not match the {owner} checkpoint layout — " + "; ".join(parts))
    out: StateDict = {}
    pieces: dict[str, dict[int, Tensor]] = {}
    for key, (target, _, reshape) in table.items():
        value = state[key]
        value = value.float() if value.is_floating_point() else value
        if reshape is not None:
            value = reshape(value)
        if "#" in target:
            name, index = target.split("#")
            pieces.setdefault(name, {})[int(index)] = value
        else:
            out[target] = value.contiguous()
    for name, parts_by_index in pieces.items():
        out[name] = torch.cat([parts_by_index[i] for i in sorted(parts_by_index)], dim=0).contiguous()
    return out


def resolve_arch(owner: str, given: Mapping[str, int | None], inferred: Mapping[str, int] | None,
                 defaults: Mapping[str, int], source: str = "") -> dict[str, int]:
    """Architecture sizes: those read from a weights file, else the options, else the defaults.

    An option that contradicts the file is a :class:`ConfigError` naming both values (a silent
    override would build a model the file cannot fill). Every value is checked to be a positive int.
    """
    out: dict[str, int] = {}
    for key, default in defaults.items():
        value = given.get(key)
        if inferred is not None and key in inferred:
            if value is not None and value != inferred[key]:
                raise ConfigError(f"{owner}: option {key}={value} contradicts the weights file {source}, "
                                  f"which has {key}={inferred[key]}", hint=f"drop the {key} option")
            value = inferred[key]
        out[key] = positive_int(owner, key, default if value is None else value)
    return out


__all__ = ["key_list", "check_file", "resize_square", "check_images", "positive_int", "build_timm_vit",
           "grid_side", "anchor", "TableEntry", "convert_by_table", "resolve_arch"]
