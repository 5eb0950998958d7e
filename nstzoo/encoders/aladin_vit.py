"""ALADIN-ViT: the released ViT variant of ALADIN (Ruta et al., ICCV 2021, paper 002; StyleBabel, ECCV 2022).

Inference exactly as released in github.com/DanRuta/ALADIN (``main.py``, ``vit_networks.py``)::

    images [B,3,H,W] in [0,1]
      ─► squash to 224x224 (``transforms.Resize((224, 224))``: aspect ratio not kept), scale to [-1, 1]
      ─► ViT-B/16 (pre-LN blocks, LayerNorm eps 1e-6, exact GELU) ─► final LayerNorm ─► CLS token   [B, 768]
      ─► LeakyReLU ─► Linear 768->512 ─► LeakyReLU ─► Linear 512->256 ─► L2-normalise                [B, 256]

The ViT is timm's ``VisionTransformer`` (the ``vit_base_patch16_224`` layout); the released
checkpoint ``aladinVIT_bamfg_64.47.pt`` is a plain state dict of the ``AViT`` wrapper, every key
under ``enc_style.``, in the layout of jeonsworld/ViT-pytorch. :func:`import_official` maps it:

=======================================================================  ===================================
released (after ``enc_style.``)                                          here
=======================================================================  ===================================
``transformer.embeddings.patch_embeddings.{weight,bias}``                ``vit.patch_embed.proj.*``
``transformer.embeddings.position_embeddings`` ``[1, N+1, D]``           ``vit.pos_embed``
``transformer.embeddings.cls_token`` ``[1, 1, D]``                       ``vit.cls_token``
``transformer.encoder.layer.{i}.attention_norm`` / ``ffn_norm``          ``vit.blocks.{i}.norm1`` / ``norm2``
``transformer.encoder.layer.{i}.attn.{query,key,value}``                 ``vit.blocks.{i}.attn.qkv`` = cat(q; k; v)
``transformer.encoder.layer.{i}.attn.out``                               ``vit.blocks.{i}.attn.proj``
``transformer.encoder.layer.{i}.ffn.fc1`` / ``fc2``                      ``vit.blocks.{i}.mlp.fc1`` / ``fc2``
``transformer.encoder.encoder_norm``                                     ``vit.norm``
``proj_head.fc1`` / ``proj_head.fc2``                                    ``head.fc1`` / ``head.fc2``
=======================================================================  ===================================

The importer reads every size from tensor shapes (width, patch size, image size, depth, MLP width,
head widths), so a checkpoint of any depth or width imports; only the number of attention heads is
not stored in any shape: ``num_heads`` defaults to ``width // 64`` (12 for ViT-B's 768, the ViT
convention) and can be given. A missing, unexpected or misshapen key is a
:class:`~nstzoo.errors.WeightsError` naming it in the released layout. The released file states no
license: import it for your own use, do not redistribute the converted weights.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import WeightsError
from ..hookspecs import hookimpl
from ..specs import EncoderSpec, StyleEncoder
from ..weights import load_state_strict, read_checkpoint, unwrap_state_dict
from ._common import (StateDict, TableEntry, anchor, build_timm_vit, check_file, check_images, convert_by_table,
                      grid_side, resize_square, resolve_arch)

NAME = "aladin-vit"
PAPER = ("D. Ruta, S. Motiian, B. Faieta, Z. Lin, H. Jin, A. Filipkowski, A. Gilbert, J. Collomosse. ALADIN: All "
         "Layer Adaptive Instance Normalization for Fine-grained Style Similarity. ICCV 2021; ViT variant released "
         "with StyleBabel (ECCV 2022) at https://github.com/DanRuta/ALADIN")
WEIGHTS_FILE = "aladinVIT_bamfg_64.47.pt"
WEIGHTS_SOURCE = "the releases tab of https://github.com/DanRuta/ALADIN"
PREFIX = "enc_style."

#: ViT-B/16 at 224 with the released 768 -> 512 -> 256 head.
DEFAULT_ARCH: dict[str, int] = {"img_size": 224, "patch_size": 16, "width": 768, "depth": 12, "mlp_dim": 3072,
                                "proj_hidden": 512, "proj_dim": 256}

DEFAULT_CONFIG: dict[str, Any] = {"weights": None, "random_init": False, **{k: None for k in DEFAULT_ARCH},
                                  "num_heads": None}


def released_arch(state: dict[str, Tensor], source: str = "<state dict>", prefix: str = PREFIX) -> dict[str, int]:
    """Sizes of a released checkpoint, read from tensor shapes (keys spelled ``prefix + name``)."""
    patch = anchor(NAME, source, state, prefix + "transformer.embeddings.patch_embeddings.weight", 4)
    pos = anchor(NAME, source, state, prefix + "transformer.embeddings.position_embeddings", 3)
    width, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    side = grid_side(int(pos.shape[1]) - 1, NAME, prefix + "transformer.embeddings.position_embeddings")
    layer_prefix = prefix + "transformer.encoder.layer."
    layers = {int(k[len(layer_prefix):].split(".")[0]) for k in state
              if k.startswith(layer_prefix) and k[len(layer_prefix):].split(".")[0].isdigit()}
    if not layers:
        raise WeightsError(f"{source}: {NAME} checkpoint has no {layer_prefix}* keys")
    fc1 = anchor(NAME, source, state, layer_prefix + "0.ffn.fc1.weight", 2)
    head1 = anchor(NAME, source, state, prefix + "proj_head.fc1.weight", 2)
    head2 = anchor(NAME, source, state, prefix + "proj_head.fc2.weight", 2)
    # Depth = highest layer index + 1: a gap in the indices then shows up as missing keys.
    return {"img_size": side * patch_size, "patch_size": patch_size, "width": width, "depth": max(layers) + 1,
            "mlp_dim": int(fc1.shape[0]), "proj_hidden": int(head1.shape[0]), "proj_dim": int(head2.shape[0])}


def _table(arch: dict[str, int], prefix: str = PREFIX) -> dict[str, TableEntry]:
    """Every released key (with ``prefix``) -> (key here, expected shape, reshape)."""
    d, p, m = arch["width"], arch["patch_size"], arch["mlp_dim"]
    n = (arch["img_size"] // p) ** 2
    h, o = arch["proj_hidden"], arch["proj_dim"]
    emb, enc = "transformer.embeddings.", "transformer.encoder."
    table: dict[str, TableEntry] = {
        emb + "patch_embeddings.weight": ("vit.patch_embed.proj.weight", (d, 3, p, p), None),
        emb + "patch_embeddings.bias": ("vit.patch_embed.proj.bias", (d,), None),
        emb + "position_embeddings": ("vit.pos_embed", (1, n + 1, d), None),
        emb + "cls_token": ("vit.cls_token", (1, 1, d), None),
        enc + "encoder_norm.weight": ("vit.norm.weight", (d,), None),
        enc + "encoder_norm.bias": ("vit.norm.bias", (d,), None),
        "proj_head.fc1.weight": ("head.fc1.weight", (h, d), None),
        "proj_head.fc1.bias": ("head.fc1.bias", (h,), None),
        "proj_head.fc2.weight": ("head.fc2.weight", (o, h), None),
        "proj_head.fc2.bias": ("head.fc2.bias", (o,), None),
    }
    for i in range(arch["depth"]):
        src, dst = f"{enc}layer.{i}.", f"vit.blocks.{i}."
        for released, here in (("attention_norm", "norm1"), ("ffn_norm", "norm2")):
            table[f"{src}{released}.weight"] = (f"{dst}{here}.weight", (d,), None)
            table[f"{src}{released}.bias"] = (f"{dst}{here}.bias", (d,), None)
        # timm's fused qkv is [q; k; v] stacked along the output dimension: parts 0, 1, 2.
        for part, name in enumerate(("query", "key", "value")):
            table[f"{src}attn.{name}.weight"] = (f"{dst}attn.qkv.weight#{part}", (d, d), None)
            table[f"{src}attn.{name}.bias"] = (f"{dst}attn.qkv.bias#{part}", (d,), None)
        table[f"{src}attn.out.weight"] = (f"{dst}attn.proj.weight", (d, d), None)
        table[f"{src}attn.out.bias"] = (f"{dst}attn.proj.bias", (d,), None)
        table[f"{src}ffn.fc1.weight"] = (f"{dst}mlp.fc1.weight", (m, d), None)
        table[f"{src}ffn.fc1.bias"] = (f"{dst}mlp.fc1.bias", (m,), None)
        table[f"{src}ffn.fc2.weight"] = (f"{dst}mlp.fc2.weight", (d, m), None)
        table[f"{src}ffn.fc2.bias"] = (f"{dst}mlp.fc2.bias", (d,), None)
    return {prefix + k: v for k, v in table.items()}


def convert_official(state: dict[str, Tensor], source: str = "<state dict>") -> tuple[StateDict, dict[str, int]]:
    """``(state_dict here, architecture)`` from a released ALADIN-ViT state dict (keys under ``enc_style.``).

    Every key must carry the ``enc_style.`` prefix (a file whose keys all lack it is accepted too);
    a key without it, a missing or misshapen key, or any key the ALADIN-ViT layout does not have is
    named in the error, as it is spelled in the file.
    """
    prefix = PREFIX if any(k.startswith(PREFIX) for k in state) else ""
    # Sizes are read from the prefixed keys; a key without the prefix is then "unexpected".
    arch = released_arch(state, source, prefix)
    return convert_by_table("ALADIN-ViT", source, state, _table(arch, prefix)), arch


def import_official(path: str | os.PathLike) -> StateDict:
    """Read ``aladinVIT_bamfg_64.47.pt`` (or any file in its layout) into this module's state dict.

    The file is read with ``torch.load(weights_only=True)`` (safetensors also accepted). Load the result
    with ``load_state_strict(AladinViT(**arch, random_init=True), state, ...)``, or simply build
    ``AladinViT(weights=path)``, which does both.
    """
    state = unwrap_state_dict(read_checkpoint(path), path)
    return convert_official(state, str(path))[0]


class AladinViT(StyleEncoder):
    """``forward(images [B,3,H,W] in [0,1]) -> [B, proj_dim]`` float32, unit L2 norm (256-D as released).

    Args:
        weights: the released checkpoint (``aladinVIT_bamfg_64.47.pt`` or the same layout); the
            architecture is then read from it and the other size options may be left unset.
        random_init: allow building without ``weights`` (pipeline tests, or a module about to receive
            an exported state dict through :func:`nstzoo.load_encoder`).
        img_size, patch_size, width, depth, mlp_dim: ViT sizes (default ViT-B/16 at 224, MLP 3072).
        proj_hidden, proj_dim: projection head widths (default 512 and 256).
        num_heads: attention heads; default ``width // 64``.
    """

    def __init__(self, *, weights: str | None = None, random_init: bool = False, img_size: int | None = None,
                 patch_size: int | None = None, width: int | None = None, depth: int | None = None,
                 mlp_dim: int | None = None, proj_hidden: int | None = None, proj_dim: int | None = None,
                 num_heads: int | None = None):
        super().__init__()
        path = check_file(NAME, weights, "weights", f"weights must name {WEIGHTS_FILE} (from {WEIGHTS_SOURCE})")
        if path is None and not random_init:
            raise WeightsError(f"{NAME}: needs the released weights and none were given",
                               hint=f"download {WEIGHTS_FILE} from {WEIGHTS_SOURCE} and set the encoder option "
                                    f"weights=PATH (nothing is downloaded here); or random_init=true for "
                                    "pipeline tests")
        state, inferred = (None, None)
        if path is not None:
            raw = unwrap_state_dict(read_checkpoint(path), path)
            state, inferred = convert_official(raw, str(path))
        given = {"img_size": img_size, "patch_size": patch_size, "width": width, "depth": depth,
                 "mlp_dim": mlp_dim, "proj_hidden": proj_hidden, "proj_dim": proj_dim}
        arch = resolve_arch(NAME, given, inferred, DEFAULT_ARCH, str(path or ""))
        heads = resolve_arch(NAME, {"num_heads": num_heads}, None, {"num_heads": max(1, arch["width"] // 64)})
        self.config: dict[str, Any] = {"weights": weights, "random_init": random_init, **arch, **heads}
        self.img_size, self.embed_dim = arch["img_size"], arch["proj_dim"]
        self.input_sizes = (self.img_size,)
        # timm's defaults are the released ones: LayerNorm eps 1e-6, exact (erf) GELU, qkv bias, no dropout.
        self.vit = build_timm_vit(img_size=arch["img_size"], patch_size=arch["patch_size"], width=arch["width"],
                                  depth=arch["depth"], num_heads=heads["num_heads"], mlp_dim=arch["mlp_dim"])
        self.head = nn.Sequential(OrderedDict([
            ("act1", nn.LeakyReLU()), ("fc1", nn.Linear(arch["width"], arch["proj_hidden"])),
            ("act2", nn.LeakyReLU()), ("fc2", nn.Linear(arch["proj_hidden"], arch["proj_dim"])),
        ]))
        if state is not None:
            load_state_strict(self, state, str(path))

    def export_config(self) -> dict[str, Any]:
        """Sizes that rebuild this module with no file (an export carries every tensor)."""
        return {**self.config, "weights": None, "random_init": True}

    def preprocess(self, images: Tensor) -> Tensor:
        """``[B,3,H,W]`` in [0, 1] -> ``[B,3,S,S]`` in [-1, 1]: squashed (antialiased bilinear), ``(x - 0.5) / 0.5``."""
        return (resize_square(images, self.img_size) - 0.5) / 0.5

    def code(self, images: Tensor) -> Tensor:
        """The style code before the projection head: CLS token after the final LayerNorm, ``[B, width]``."""
        return self.vit(self.preprocess(check_images(NAME, images)))

    def forward(self, images: Tensor, frozen: Any = None) -> Tensor:
        """``[B,3,H,W]`` float in [0, 1] -> float32 ``[B, proj_dim]``, unit L2 norm (``frozen`` is unused)."""
        return F.normalize(self.head(self.code(images)).float(), dim=1)


@hookimpl
def register_encoders(register: Any) -> None:
    register(EncoderSpec(
        name=NAME,
        factory=AladinViT,
        summary="ALADIN-ViT as released (ViT-B/16 + MLP head -> 256-D); weights=aladinVIT_bamfg_64.47.pt",
        paper=PAPER,
        default_config=copy.deepcopy(DEFAULT_CONFIG),
    ))


__all__ = ["AladinViT", "import_official", "convert_official", "released_arch", "DEFAULT_ARCH", "DEFAULT_CONFIG",
           "WEIGHTS_FILE", "register_encoders"]
