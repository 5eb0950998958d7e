"""CSD: Contrastive Style Descriptors (Somepalli et al., "Measuring Style Similarity in Diffusion Models", 2024).

Inference as released in github.com/learn2phoenix/CSD (MIT; ``CSD/model.py`` ``CSD_CLIP``,
``CSD/loss_utils.py`` ``transforms_branch0``)::

    images [B,3,H,W] in [0,1]
      ─► 224x224, bicubic ─► CLIP mean/std
      ─► CLIP ViT-L/14 visual tower with ``proj`` removed: conv1 ─► [CLS; patches] + positions ─► ln_pre
         ─► 24 pre-LN blocks (QuickGELU MLP) ─► ln_post on the CLS token                           [B, 1024]
      ─► @ last_layer_style [1024, 768] ─► L2-normalise                                              [B, 768]

The tower is timm's ``VisionTransformer`` in the ``vit_large_patch14_clip_quickgelu_224`` layout
(``pre_norm=True``, LayerNorm eps 1e-5, QuickGELU, no patch-embedding bias): OpenAI's CLIP uses
QuickGELU, so the ``quickgelu`` variant is the exact one. The checkpoint is mapped as

===========================================================  =====================================
released (``module.`` stripped)                               here
===========================================================  =====================================
``backbone.conv1.weight`` ``[W,3,P,P]``                       ``vit.patch_embed.proj.weight``
``backbone.class_embedding`` ``[W]``                          ``vit.cls_token`` ``[1,1,W]``
``backbone.positional_embedding`` ``[N+1,W]``                 ``vit.pos_embed`` ``[1,N+1,W]``
``backbone.ln_pre`` / ``backbone.ln_post``                    ``vit.norm_pre`` / ``vit.norm``
``backbone.transformer.resblocks.{i}.ln_1`` / ``ln_2``        ``vit.blocks.{i}.norm1`` / ``norm2``
``...resblocks.{i}.attn.in_proj_{weight,bias}`` ``[3W,W]``    ``vit.blocks.{i}.attn.qkv.*`` (already q;k;v)
``...resblocks.{i}.attn.out_proj``                            ``vit.blocks.{i}.attn.proj``
``...resblocks.{i}.mlp.c_fc`` / ``mlp.c_proj``                ``vit.blocks.{i}.mlp.fc1`` / ``fc2``
``last_layer_style`` ``[W, 768]``                             ``style_proj``
``last_layer_content`` ``[W, 768]``                           ``content_proj``
===========================================================  =====================================

Assumptions about the released checkpoint (stated because they could not be checked against the
file itself, which cannot be downloaded here):

- It is the ``checkpoint.pth`` written by ``CSD/train_csd.py``: a dict whose ``model_state_dict``
  holds the ``CSD_CLIP`` state dict with DistributedDataParallel's ``module.`` prefix (``main_sim.py``
  strips it with ``convert_state_dict``). The other entries (``opt_bb``, ``opt_proj``, ``iter``,
  ``args``, ``fp16_scaler``) are ignored; ``args`` is an ``argparse.Namespace``, which the
  weights-only unpickler is told to allow. A plain state dict (e.g. the Hugging Face
  ``tomg-group-umd/CSD-ViT-L`` ``model.safetensors``, no ``module.``) is accepted too.
- ``CSD_CLIP`` sets ``backbone.proj = None`` after copying it into ``last_layer_style`` and
  ``last_layer_content``, so the file has no ``backbone.proj``; a file that has one is refused
  (an unexpected key), as is any other stray key.
- The released model uses ``content_proj_head="default"`` (``main_sim.py`` hard-codes it): the
  content head is a ``[W, 768]`` matrix like the style head. The ``"custom"`` MLP head
  (``last_layer_content.projection.*``) is not supported and is named as unexpected.
- Tensors may be fp16 (``clip.load`` on a GPU halves ``proj``, which ``last_layer_style`` copies);
  everything is converted to float32.
- The number of attention heads is not stored in any shape; it defaults to ``width // 64`` (16 for
  ViT-L/14, OpenAI's convention).

Preprocessing: CSD resizes the shorter side to 224 (bicubic) and centre-crops (``resize="crop"``);
nstzoo's evaluation squashes every image to the encoder's ``input_sizes`` first, so the default
here is ``resize="squash"`` (identical when the image is already square). ``output="content"``
gives CSD's content embedding (``last_layer_content``) instead, e.g. to measure content leakage.
"""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, WeightsError
from ..hookspecs import hookimpl
from ..specs import EncoderSpec, StyleEncoder
from ..weights import load_state_strict, read_checkpoint, unwrap_state_dict
from ._common import (StateDict, TableEntry, anchor, build_timm_vit, check_file, check_images, convert_by_table,
                      grid_side, resize_square, resolve_arch)

NAME = "csd"
PAPER = ("G. Somepalli, A. Gupta, K. Gupta, S. Palta, M. Goldblum, J. Geiping, A. Shrivastava, T. Goldstein. "
         "Measuring Style Similarity in Diffusion Models (CSD). arXiv:2404.01292, 2024; "
         "https://github.com/learn2phoenix/CSD (MIT)")
WEIGHTS_SOURCE = ("the CSD ViT-L checkpoint linked from https://github.com/learn2phoenix/CSD (Google Drive "
                  "checkpoint.pth) or model.safetensors of https://huggingface.co/tomg-group-umd/CSD-ViT-L")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: CLIP ViT-L/14 at 224 with the 768-D CLIP projection copied into both CSD heads.
DEFAULT_ARCH: dict[str, int] = {"img_size": 224, "patch_size": 14, "width": 1024, "depth": 24, "mlp_dim": 4096,
                                "proj_dim": 768}
DEFAULT_CONFIG: dict[str, Any] = {"weights": None, "random_init": False, "output": "style", "resize": "squash",
                                  **{k: None for k in DEFAULT_ARCH}, "num_heads": None}


def _strip_module(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def read_official(path: str | os.PathLike) -> StateDict:
    """The ``CSD_CLIP`` state dict inside a released file, ``module.`` prefixes removed, tensors as stored.

    ``checkpoint.pth`` is read with ``torch.load(weights_only=True)``, allowing ``argparse.Namespace``
    (its ``args`` entry) and nothing else that would run code.
    """
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = read_checkpoint(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("model_state_dict"), Mapping):
        obj = obj["model_state_dict"]
    state = unwrap_state_dict(obj, path)
    out: StateDict = {}
    for key, value in state.items():
        new = _strip_module(key)
        if new in out:
            raise WeightsError(f"{path}: keys {key!r} and another both become {new!r} once 'module.' is removed")
        out[new] = value
    return out


def released_arch(state: Mapping[str, Tensor], source: str = "<state dict>") -> dict[str, int]:
    """Sizes of a ``CSD_CLIP`` state dict (``module.`` stripped), read from tensor shapes."""
    conv = anchor(NAME, source, state, "backbone.conv1.weight", 4)
    pos = anchor(NAME, source, state, "backbone.positional_embedding", 2)
    style = anchor(NAME, source, state, "last_layer_style", 2)
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    side = grid_side(int(pos.shape[0]) - 1, NAME, "backbone.positional_embedding")
    block_prefix = "backbone.transformer.resblocks."
    blocks = {int(k[len(block_prefix):].split(".")[0]) for k in state
              if k.startswith(block_prefix) and k[len(block_prefix):].split(".")[0].isdigit()}
    if not blocks:
        raise WeightsError(f"{source}: {NAME} checkpoint has no {block_prefix}* keys")
    fc = anchor(NAME, source, state, block_prefix + "0.mlp.c_fc.weight", 2)
    return {"img_size": side * patch, "patch_size": patch, "width": width, "depth": max(blocks) + 1,
            "mlp_dim": int(fc.shape[0]), "proj_dim": int(style.shape[1])}


def _table(arch: dict[str, int]) -> dict[str, TableEntry]:
    """Every released key (``module.`` stripped) -> (key here, expected shape, reshape)."""
    w, p, m, o = arch["width"], arch["patch_size"], arch["mlp_dim"], arch["proj_dim"]
    n = (arch["img_size"] // p) ** 2
    table: dict[str, TableEntry] = {
        "backbone.conv1.weight": ("vit.patch_embed.proj.weight", (w, 3, p, p), None),
        "backbone.class_embedding": ("vit.cls_token", (w,), lambda t: t.reshape(1, 1, -1)),
        "backbone.positional_embedding": ("vit.pos_embed", (n + 1, w), lambda t: t.unsqueeze(0)),
        "backbone.ln_pre.weight": ("vit.norm_pre.weight", (w,), None),
        "backbone.ln_pre.bias": ("vit.norm_pre.bias", (w,), None),
        "backbone.ln_post.weight": ("vit.norm.weight", (w,), None),
        "backbone.ln_post.bias": ("vit.norm.bias", (w,), None),
        "last_layer_style": ("style_proj", (w, o), None),
        "last_layer_content": ("content_proj", (w, o), None),
    }
    for i in range(arch["depth"]):
        src, dst = f"backbone.transformer.resblocks.{i}.", f"vit.blocks.{i}."
        for released, here, shape in (
            ("ln_1.weight", "norm1.weight", (w,)), ("ln_1.bias", "norm1.bias", (w,)),
            ("ln_2.weight", "norm2.weight", (w,)), ("ln_2.bias", "norm2.bias", (w,)),
            # nn.MultiheadAttention's in_proj is [q; k; v] along dim 0, exactly timm's fused qkv.
            ("attn.in_proj_weight", "attn.qkv.weight", (3 * w, w)), ("attn.in_proj_bias", "attn.qkv.bias", (3 * w,)),
            ("attn.out_proj.weight", "attn.proj.weight", (w, w)), ("attn.out_proj.bias", "attn.proj.bias", (w,)),
            ("mlp.c_fc.weight", "mlp.fc1.weight", (m, w)), ("mlp.c_fc.bias", "mlp.fc1.bias", (m,)),
            ("mlp.c_proj.weight", "mlp.fc2.weight", (w, m)), ("mlp.c_proj.bias", "mlp.fc2.bias", (w,)),
        ):
            table[src + released] = (dst + here, shape, None)
    return table


def convert_official(state: Mapping[str, Tensor], source: str = "<state dict>") -> tuple[StateDict, dict[str, int]]:
    """``(state_dict here, architecture)`` from a ``CSD_CLIP`` state dict with ``module.`` already stripped."""
    arch = released_arch(state, source)
    return convert_by_table("CSD", source, state, _table(arch)), arch


def import_official(path: str | os.PathLike) -> StateDict:
    """Read a released CSD checkpoint into this module's state dict (see the module docstring)."""
    return convert_official(read_official(path), str(path))[0]


class CSD(StyleEncoder):
    """``forward(images [B,3,H,W] in [0,1]) -> [B, proj_dim]`` float32, unit L2 norm (768-D as released).

    Args:
        weights: a released CSD checkpoint (``checkpoint.pth`` or ``model.safetensors``); the
            architecture is read from it.
        random_init: allow building without ``weights`` (pipeline tests; modules about to receive an
            exported state dict).
        output: ``"style"`` (``last_layer_style``, CSD's style descriptor) or ``"content"``.
        resize: ``"squash"`` (default; nstzoo's convention) or ``"crop"`` (CSD's shorter-side resize +
            centre crop); both bicubic.
        img_size, patch_size, width, depth, mlp_dim, proj_dim: tower sizes (default CLIP ViT-L/14 at
            224, output 768).
        num_heads: attention heads; default ``width // 64``.
    """

    def __init__(self, *, weights: str | None = None, random_init: bool = False, output: str = "style",
                 resize: str = "squash", img_size: int | None = None, patch_size: int | None = None,
                 width: int | None = None, depth: int | None = None, mlp_dim: int | None = None,
                 proj_dim: int | None = None, num_heads: int | None = None):
        super().__init__()
        if output not in ("style", "content"):
            raise ConfigError(f"{NAME}: output={output!r}; choose style or content")
        if resize not in ("squash", "crop"):
            raise ConfigError(f"{NAME}: resize={resize!r}; choose squash or crop")
        path = check_file(NAME, weights, "weights", f"weights must name {WEIGHTS_SOURCE}")
        if path is None and not random_init:
            raise WeightsError(f"{NAME}: needs the released CSD weights and none were given",
                               hint=f"get {WEIGHTS_SOURCE} and set the encoder option weights=PATH (nothing is "
                                    "downloaded here); or random_init=true for pipeline tests")
        state, inferred = (None, None)
        if path is not None:
            state, inferred = convert_official(read_official(path), str(path))
        given = {"img_size": img_size, "patch_size": patch_size, "width": width, "depth": depth,
                 "mlp_dim": mlp_dim, "proj_dim": proj_dim}
        arch = resolve_arch(NAME, given, inferred, DEFAULT_ARCH, str(path or ""))
        heads = resolve_arch(NAME, {"num_heads": num_heads}, None, {"num_heads": max(1, arch["width"] // 64)})
        self.config: dict[str, Any] = {"weights": weights, "random_init": random_init, "output": output,
                                       "resize": resize, **arch, **heads}
        self.output, self.resize = output, resize
        self.img_size, self.embed_dim = arch["img_size"], arch["proj_dim"]
        self.input_sizes = (self.img_size,)
        # OpenAI CLIP's visual tower: LayerNorm after the embeddings, eps 1e-5 everywhere, QuickGELU.
        self.vit = build_timm_vit(img_size=arch["img_size"], patch_size=arch["patch_size"], width=arch["width"],
                                  depth=arch["depth"], num_heads=heads["num_heads"], mlp_dim=arch["mlp_dim"],
                                  pre_norm=True, norm_layer=partial(nn.LayerNorm, eps=1e-5), act_layer="quick_gelu")
        scale = arch["width"] ** -0.5  # CLIP's init of ``proj``, which both heads start from
        self.style_proj = nn.Parameter(scale * torch.randn(arch["width"], arch["proj_dim"]))
        self.content_proj = nn.Parameter(scale * torch.randn(arch["width"], arch["proj_dim"]))
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        if state is not None:
            load_state_strict(self, state, str(path))

    def export_config(self) -> dict[str, Any]:
        """Sizes and switches that rebuild this module with no file (an export carries every tensor)."""
        return {**self.config, "weights": None, "random_init": True}

    def preprocess(self, images: Tensor) -> Tensor:
        """``[B,3,H,W]`` in [0, 1] -> ``[B,3,S,S]`` bicubic-resized and CLIP-normalised (about [-1.8, 2.2])."""
        x = resize_square(images, self.img_size, mode="bicubic", crop=self.resize == "crop")
        return (x - self.mean) / self.std

    def features(self, images: Tensor) -> Tensor:
        """CSD's ``feature``: the CLS token after ``ln_post``, ``[B, width]`` (the backbone with ``proj=None``)."""
        return self.vit(self.preprocess(check_images(NAME, images)))

    def forward(self, images: Tensor, frozen: Any = None) -> Tensor:
        """``[B,3,H,W]`` float in [0, 1] -> float32 ``[B, proj_dim]``, unit L2 norm (``frozen`` is unused)."""
        feature = self.features(images)
        proj = self.style_proj if self.output == "style" else self.content_proj
        return F.normalize((feature @ proj.to(feature.dtype)).float(), dim=1)


@hookimpl
def register_encoders(register: Any) -> None:
    register(EncoderSpec(
        name=NAME,
        factory=CSD,
        summary="CSD style descriptor as released (CLIP ViT-L/14 + style head -> 768-D); weights=PATH",
        paper=PAPER,
        default_config=copy.deepcopy(DEFAULT_CONFIG),
    ))


__all__ = ["CSD", "import_official", "read_official", "convert_official", "released_arch", "DEFAULT_ARCH",
           "DEFAULT_CONFIG", "CLIP_MEAN", "CLIP_STD", "register_encoders"]
