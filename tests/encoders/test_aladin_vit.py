"""aladin-vit: strict import of the released ``aladinVIT_bamfg_64.47.pt`` layout, checked against the released
forward pass re-written here in plain torch over the raw released tensors (DanRuta/ALADIN vit_networks.py).
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from nstzoo.encoders import aladin_vit
from nstzoo.encoders.aladin_vit import DEFAULT_CONFIG, AladinViT, import_official
from nstzoo.errors import ConfigError, WeightsError
from nstzoo.weights import load_state_strict

from .helpers import assert_unit_rows, export_round_trip, images, registry_with

TINY = {"img_size": 32, "patch_size": 8, "width": 32, "depth": 2, "mlp_dim": 48, "proj_hidden": 24, "proj_dim": 16}
HEADS = 2


def released_state(arch: dict[str, int] = TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the exact key layout and shapes of the released checkpoint."""
    g = torch.Generator().manual_seed(seed)
    d, p, m = arch["width"], arch["patch_size"], arch["mlp_dim"]
    n = (arch["img_size"] // p) ** 2

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    s = {
        "transformer.embeddings.patch_embeddings.weight": r(d, 3, p, p, scale=0.05),
        "transformer.embeddings.patch_embeddings.bias": r(d),
        "transformer.embeddings.position_embeddings": r(1, n + 1, d),
        "transformer.embeddings.cls_token": r(1, 1, d),
        "transformer.encoder.encoder_norm.weight": 1 + r(d), "transformer.encoder.encoder_norm.bias": r(d),
        "proj_head.fc1.weight": r(arch["proj_hidden"], d), "proj_head.fc1.bias": r(arch["proj_hidden"]),
        "proj_head.fc2.weight": r(arch["proj_dim"], arch["proj_hidden"]), "proj_head.fc2.bias": r(arch["proj_dim"]),
    }
    for i in range(arch["depth"]):
        b = f"transformer.encoder.layer.{i}."
        for norm in ("attention_norm", "ffn_norm"):
            s[f"{b}{norm}.weight"], s[f"{b}{norm}.bias"] = 1 + r(d), r(d)
        for lin in ("query", "key", "value", "out"):
            s[f"{b}attn.{lin}.weight"], s[f"{b}attn.{lin}.bias"] = r(d, d), r(d)
        s[f"{b}ffn.fc1.weight"], s[f"{b}ffn.fc1.bias"] = r(m, d), r(m)
        s[f"{b}ffn.fc2.weight"], s[f"{b}ffn.fc2.bias"] = r(d, m), r(d)
    return {f"enc_style.{k}": v for k, v in s.items()}


def released_forward(state: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> torch.Tensor:
    """The released inference, written from vit_networks.py + main.py with plain torch ops.

    ``x`` is already 224-style sized (the released ``Resize`` is the identity on it): normalise to
    [-1, 1], Embeddings, pre-LN Blocks (separate q/k/v, exact GELU, LayerNorm eps 1e-6), encoder_norm,
    CLS, LeakyReLU-fc1-LeakyReLU-fc2, L2 normalisation.
    """
    w = {k[len("enc_style."):]: v for k, v in state.items()}
    x = (x - 0.5) / 0.5
    p = w["transformer.embeddings.patch_embeddings.weight"].shape[-1]
    h = F.conv2d(x, w["transformer.embeddings.patch_embeddings.weight"],
                 w["transformer.embeddings.patch_embeddings.bias"], stride=p)
    h = h.flatten(2).transpose(-1, -2)
    cls = w["transformer.embeddings.cls_token"].expand(h.shape[0], -1, -1)
    h = torch.cat([cls, h], dim=1) + w["transformer.embeddings.position_embeddings"]
    d = h.shape[-1]
    hd = d // heads
    i = 0
    while f"transformer.encoder.layer.{i}.attn.query.weight" in w:
        b = f"transformer.encoder.layer.{i}."
        y = F.layer_norm(h, (d,), w[b + "attention_norm.weight"], w[b + "attention_norm.bias"], eps=1e-6)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(t.shape[0], t.shape[1], heads, hd).permute(0, 2, 1, 3)

        q, k, v = (split(F.linear(y, w[f"{b}attn.{n}.weight"], w[f"{b}attn.{n}.bias"]))
                   for n in ("query", "key", "value"))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        ctx = (probs @ v).permute(0, 2, 1, 3).reshape(h.shape)
        h = h + F.linear(ctx, w[b + "attn.out.weight"], w[b + "attn.out.bias"])
        y = F.layer_norm(h, (d,), w[b + "ffn_norm.weight"], w[b + "ffn_norm.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, w[b + "ffn.fc1.weight"], w[b + "ffn.fc1.bias"])),
                     w[b + "ffn.fc2.weight"], w[b + "ffn.fc2.bias"])
        h = h + y
        i += 1
    h = F.layer_norm(h, (d,), w["transformer.encoder.encoder_norm.weight"], w["transformer.encoder.encoder_norm.bias"],
                     eps=1e-6)
    code = h[:, 0]
    z = F.linear(F.leaky_relu(code), w["proj_head.fc1.weight"], w["proj_head.fc1.bias"])
    z = F.linear(F.leaky_relu(z), w["proj_head.fc2.weight"], w["proj_head.fc2.bias"])
    return z / z.norm(dim=1)[:, None]


def test_imported_model_matches_the_released_forward_pass(tmp_path):
    state = released_state()
    path = tmp_path / "aladinVIT_bamfg_64.47.pt"
    torch.save(state, path)
    torch.manual_seed(99)
    enc = AladinViT(weights=str(path), num_heads=HEADS).eval()
    assert enc.config == {"weights": str(path), "random_init": False, **TINY, "num_heads": HEADS}
    assert enc.embed_dim == 16 and enc.input_sizes == (32,)
    x = images(3, size=(32, 32))
    with torch.no_grad():
        got = enc(x)
        want = released_forward(state, x, HEADS)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert_unit_rows(got)
    # Other input sizes are squashed to 32 first.
    with torch.no_grad():
        assert enc(images(2, size=(48, 40))).shape == (2, 16)
    # The importer alone gives a state dict that loads strictly into a module built from the sizes.
    fresh = AladinViT(random_init=True, num_heads=HEADS, **TINY).eval()
    load_state_strict(fresh, import_official(path), "import")
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), got, rtol=0, atol=0)


def test_the_importer_reads_any_depth_and_width(tmp_path):
    arch = {**TINY, "depth": 1, "width": 128, "mlp_dim": 100, "patch_size": 4, "img_size": 16, "proj_dim": 8}
    state = released_state(arch, seed=1)
    path = tmp_path / "deep.pt"
    torch.save(state, path)
    enc = AladinViT(weights=str(path)).eval()  # num_heads defaults to width // 64 = 2
    assert {k: enc.config[k] for k in arch} == arch and enc.config["num_heads"] == 2
    x = images(2, size=(16, 16))
    with torch.no_grad():
        torch.testing.assert_close(enc(x), released_forward(state, x, 2), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="depth=3 contradicts"):
        AladinViT(weights=str(path), depth=3)


@pytest.mark.parametrize("edit, named", [
    (lambda s: s.pop("enc_style.transformer.encoder.layer.1.attn.key.bias"),
     r"missing key\(s\): enc_style\.transformer\.encoder\.layer\.1\.attn\.key\.bias"),
    (lambda s: s.pop("enc_style.proj_head.fc2.bias"), r"missing key\(s\): enc_style\.proj_head\.fc2\.bias"),
    (lambda s: s.update({"enc_style.transformer.encoder.layer.0.attn.qkv.weight": torch.zeros(3)}),
     r"unexpected key\(s\): enc_style\.transformer\.encoder\.layer\.0\.attn\.qkv\.weight"),
    (lambda s: s.update({"head.weight": torch.zeros(3)}), r"unexpected key\(s\): head\.weight"),
    (lambda s: s.update({"enc_style.transformer.encoder.layer.0.ffn.fc2.bias": torch.zeros(5)}),
     r"shape mismatch: enc_style\.transformer\.encoder\.layer\.0\.ffn\.fc2\.bias \(5,\) != \(32,\)"),
    (lambda s: s.pop("enc_style.transformer.embeddings.patch_embeddings.weight"),
     r"missing key enc_style\.transformer\.embeddings\.patch_embeddings\.weight"),
])
def test_a_wrong_or_missing_key_is_named(tmp_path, edit, named):
    state = released_state()
    edit(state)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=named):
        import_official(path)
    with pytest.raises(WeightsError, match=named):
        AladinViT(weights=str(path), num_heads=HEADS)


def test_a_gap_in_the_layers_is_named(tmp_path):
    state = {k: v for k, v in released_state().items() if ".layer.0." not in k}
    path = tmp_path / "gap.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"layer\.0\."):
        import_official(path)


def test_missing_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(WeightsError) as err:
        AladinViT()
    assert "aladinVIT_bamfg_64.47.pt" in str(err.value) and "weights=PATH" in str(err.value)
    with pytest.raises(WeightsError, match="not found"):
        AladinViT(weights=str(tmp_path / "absent.pt"))


def test_export_round_trip(tmp_path):
    path = tmp_path / "released.pt"
    torch.save(released_state(seed=3), path)
    enc = AladinViT(weights=str(path), num_heads=HEADS).eval()
    assert enc.export_config()["weights"] is None and enc.export_config()["random_init"] is True
    loaded = export_round_trip(enc, "aladin-vit", tmp_path / "enc.safetensors", registry_with(aladin_vit))
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), enc(x), rtol=0, atol=0)


def test_registered_defaults_match_the_factory_signature():
    defaults = {k: p.default for k, p in inspect.signature(AladinViT).parameters.items()}
    assert defaults == DEFAULT_CONFIG
    specs = []
    aladin_vit.register_encoders(register=specs.append)
    assert [s.name for s in specs] == ["aladin-vit"] and specs[0].default_config == DEFAULT_CONFIG
