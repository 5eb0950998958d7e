"""csd: strict import of CSD's released checkpoint layout (CSD_CLIP over OpenAI CLIP's visual tower), checked
against CSD's forward pass re-written here in plain torch over the raw released tensors.
"""

from __future__ import annotations

import argparse
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from nstzoo.encoders import csd
from nstzoo.encoders.csd import CLIP_MEAN, CLIP_STD, CSD, DEFAULT_CONFIG, import_official
from nstzoo.errors import ConfigError, WeightsError
from nstzoo.weights import load_state_strict

from .helpers import assert_unit_rows, export_round_trip, images, registry_with

TINY = {"img_size": 28, "patch_size": 14, "width": 32, "depth": 2, "mlp_dim": 128, "proj_dim": 16}
HEADS = 2


def released_state(arch: dict[str, int] = TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in CSD_CLIP's state-dict layout (``backbone.proj`` removed, as CSD_CLIP does)."""
    g = torch.Generator().manual_seed(seed)
    w, p, m, o = arch["width"], arch["patch_size"], arch["mlp_dim"], arch["proj_dim"]
    n = (arch["img_size"] // p) ** 2

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    s = {
        "backbone.conv1.weight": r(w, 3, p, p, scale=0.05),
        "backbone.class_embedding": r(w), "backbone.positional_embedding": r(n + 1, w),
        "backbone.ln_pre.weight": 1 + r(w), "backbone.ln_pre.bias": r(w),
        "backbone.ln_post.weight": 1 + r(w), "backbone.ln_post.bias": r(w),
        # clip.load on a GPU leaves proj in fp16, and CSD_CLIP deep-copies it into both heads.
        "last_layer_style": r(w, o).half(), "last_layer_content": r(w, o).half(),
    }
    for i in range(arch["depth"]):
        b = f"backbone.transformer.resblocks.{i}."
        s[b + "ln_1.weight"], s[b + "ln_1.bias"] = 1 + r(w), r(w)
        s[b + "ln_2.weight"], s[b + "ln_2.bias"] = 1 + r(w), r(w)
        s[b + "attn.in_proj_weight"], s[b + "attn.in_proj_bias"] = r(3 * w, w), r(3 * w)
        s[b + "attn.out_proj.weight"], s[b + "attn.out_proj.bias"] = r(w, w), r(w)
        s[b + "mlp.c_fc.weight"], s[b + "mlp.c_fc.bias"] = r(m, w), r(m)
        s[b + "mlp.c_proj.weight"], s[b + "mlp.c_proj.bias"] = r(w, m), r(w)
    return s


def training_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """What CSD/train_csd.py saves: DDP ``module.`` keys under model_state_dict, plus optimiser state and args."""
    return {"model_state_dict": {f"module.{k}": v for k, v in state.items()},
            "opt_bb": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0]}]}, "iter": 3,
            "args": argparse.Namespace(arch="vit_large", content_proj_head="default", lr=1e-5)}


def released_forward(w: dict[str, torch.Tensor], x: torch.Tensor, heads: int, head: str = "style") -> torch.Tensor:
    """CSD_CLIP.forward over OpenAI CLIP's VisionTransformer (proj=None), in plain torch.

    ``x`` is already at the tower's size (the released Resize + CenterCrop are the identity on it).
    """
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    w = {k: v.float() for k, v in w.items()}
    conv = w["backbone.conv1.weight"]
    h = F.conv2d(x, conv, stride=conv.shape[-1])
    h = h.reshape(h.shape[0], h.shape[1], -1).permute(0, 2, 1)
    h = torch.cat([w["backbone.class_embedding"] + torch.zeros(h.shape[0], 1, h.shape[-1]), h], dim=1)
    h = h + w["backbone.positional_embedding"]
    d = h.shape[-1]
    h = F.layer_norm(h, (d,), w["backbone.ln_pre.weight"], w["backbone.ln_pre.bias"], eps=1e-5)
    h = h.permute(1, 0, 2)  # NLD -> LND, as CLIP's Transformer takes it
    hd = d // heads
    i = 0
    while f"backbone.transformer.resblocks.{i}.ln_1.weight" in w:
        b = f"backbone.transformer.resblocks.{i}."
        y = F.layer_norm(h, (d,), w[b + "ln_1.weight"], w[b + "ln_1.bias"], eps=1e-5)
        q, k, v = F.linear(y, w[b + "attn.in_proj_weight"], w[b + "attn.in_proj_bias"]).chunk(3, dim=-1)

        def heads_first(t: torch.Tensor) -> torch.Tensor:  # [L, N, d] -> [N, heads, L, hd]
            return t.reshape(t.shape[0], t.shape[1], heads, hd).permute(1, 2, 0, 3)

        q, k, v = heads_first(q), heads_first(k), heads_first(v)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v  # [N, heads, L, hd]
        attn = attn.permute(2, 0, 1, 3).reshape(h.shape)
        h = h + F.linear(attn, w[b + "attn.out_proj.weight"], w[b + "attn.out_proj.bias"])
        y = F.layer_norm(h, (d,), w[b + "ln_2.weight"], w[b + "ln_2.bias"], eps=1e-5)
        y = F.linear(y, w[b + "mlp.c_fc.weight"], w[b + "mlp.c_fc.bias"])
        y = y * torch.sigmoid(1.702 * y)  # QuickGELU
        h = h + F.linear(y, w[b + "mlp.c_proj.weight"], w[b + "mlp.c_proj.bias"])
        i += 1
    h = h.permute(1, 0, 2)
    feature = F.layer_norm(h[:, 0, :], (d,), w["backbone.ln_post.weight"], w["backbone.ln_post.bias"], eps=1e-5)
    out = feature @ w["last_layer_style" if head == "style" else "last_layer_content"]
    return F.normalize(out, dim=1, p=2)


def test_imported_model_matches_csds_forward_pass(tmp_path):
    state = released_state()
    path = tmp_path / "checkpoint.pth"
    torch.save(training_checkpoint(state), path)
    torch.manual_seed(77)
    enc = CSD(weights=str(path), num_heads=HEADS).eval()
    assert {k: enc.config[k] for k in TINY} == TINY and enc.embed_dim == 16 and enc.input_sizes == (28,)
    x = images(3, size=(28, 28))
    with torch.no_grad():
        got = enc(x)
        torch.testing.assert_close(got, released_forward(state, x, HEADS), atol=1e-5, rtol=0)
        content = CSD(weights=str(path), num_heads=HEADS, output="content").eval()(x)
        torch.testing.assert_close(content, released_forward(state, x, HEADS, "content"), atol=1e-5, rtol=0)
    assert_unit_rows(got)
    assert enc.style_proj.dtype == torch.float32  # fp16 heads come out float32
    fresh = CSD(random_init=True, num_heads=HEADS, **TINY).eval()
    load_state_strict(fresh, import_official(path), "import")
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), got, rtol=0, atol=0)


def test_a_plain_state_dict_without_module_prefix_imports_too(tmp_path):
    # e.g. the Hugging Face model.safetensors of CSD-ViT-L (PyTorchModelHubMixin saves the bare state dict).
    state = {k: v.contiguous() for k, v in released_state(seed=1).items()}
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    enc = CSD(weights=str(path), num_heads=HEADS).eval()
    x = images(2, size=(28, 28))
    with torch.no_grad():
        torch.testing.assert_close(enc(x), released_forward(state, x, HEADS), atol=1e-5, rtol=0)


def test_preprocessing_squash_or_centre_crop(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save(training_checkpoint(released_state(seed=2)), path)
    x = images(2, size=(28, 40))
    squash = CSD(weights=str(path), num_heads=HEADS).eval()
    crop = CSD(weights=str(path), num_heads=HEADS, resize="crop").eval()
    with torch.no_grad():
        # Shorter side already 28: CSD's Resize(28) is the identity and CenterCrop keeps columns 6..33.
        torch.testing.assert_close(crop(x), squash(x[..., 6:34]), rtol=0, atol=0)
        assert (crop(x) - squash(x)).abs().max() > 1e-4
        assert crop(images(1, size=(60, 45))).shape == (1, 16)
    with pytest.raises(ConfigError, match="resize"):
        CSD(random_init=True, resize="pad", **TINY)
    with pytest.raises(ConfigError, match="output"):
        CSD(random_init=True, output="both", **TINY)


@pytest.mark.parametrize("edit, named", [
    (lambda s: s.pop("backbone.transformer.resblocks.1.mlp.c_proj.bias"),
     r"missing key\(s\): backbone\.transformer\.resblocks\.1\.mlp\.c_proj\.bias"),
    (lambda s: s.pop("last_layer_content"), r"missing key\(s\): last_layer_content"),
    (lambda s: s.update({"backbone.proj": torch.zeros(32, 16)}), r"unexpected key\(s\): backbone\.proj"),
    (lambda s: s.update({"last_layer_content.projection.weight": torch.zeros(16, 32)}),
     r"unexpected key\(s\): last_layer_content\.projection\.weight"),
    (lambda s: s.update({"backbone.ln_pre.bias": torch.zeros(31)}),
     r"shape mismatch: backbone\.ln_pre\.bias \(31,\) != \(32,\)"),
    (lambda s: s.pop("last_layer_style"), r"missing key last_layer_style"),
])
def test_a_wrong_or_missing_key_is_named(tmp_path, edit, named):
    state = released_state()
    edit(state)
    path = tmp_path / "checkpoint.pth"
    torch.save(training_checkpoint(state), path)
    with pytest.raises(WeightsError, match=named):
        import_official(path)
    with pytest.raises(WeightsError, match=named):
        CSD(weights=str(path), num_heads=HEADS)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"model_state_dict": released_state(), "args": ConfigError("not allowed")}, path)
    with pytest.raises(WeightsError, match="refused"):
        import_official(path)


def test_missing_weights_say_where_to_get_them():
    with pytest.raises(WeightsError) as err:
        CSD()
    assert "learn2phoenix/CSD" in str(err.value) and "weights=PATH" in str(err.value)


def test_export_round_trip(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save(training_checkpoint(released_state(seed=4)), path)
    enc = CSD(weights=str(path), num_heads=HEADS, resize="crop").eval()
    loaded = export_round_trip(enc, "csd", tmp_path / "enc.safetensors", registry_with(csd))
    assert loaded.export_config() == enc.export_config() and loaded.resize == "crop"
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), enc(x), rtol=0, atol=0)


def test_registered_defaults_match_the_factory_signature():
    defaults = {k: p.default for k, p in inspect.signature(CSD).parameters.items()}
    assert defaults == DEFAULT_CONFIG
    specs = []
    csd.register_encoders(register=specs.append)
    assert [s.name for s in specs] == ["csd"] and specs[0].default_config == DEFAULT_CONFIG
