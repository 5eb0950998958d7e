"""The weights store: official import round trip, strict loading, refusal of unsafe pickles."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from nstzoo import StylizerSpec, hookimpl
from nstzoo.errors import WeightsError
from nstzoo.registry import Registry
from nstzoo.weights import (
    import_official,
    load_safetensors,
    load_state_strict,
    load_stylizer,
    read_checkpoint,
    save_safetensors,
    sha256_file,
    unwrap_state_dict,
    verify_file,
    weights_path,
)


class TinyNet(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.enc = nn.Conv2d(3, width, 3, padding=1)
        self.dec = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, content, style):
        return torch.sigmoid(self.dec(torch.relu(self.enc(content))) + style.mean((2, 3), keepdim=True))


OFFICIAL = {"encoder.0.weight": "enc.weight", "encoder.0.bias": "enc.bias",
            "decoder.0.weight": "dec.weight", "decoder.0.bias": "dec.bias"}


def import_tiny(paths):
    state = unwrap_state_dict(read_checkpoint(paths[0]), paths[0])
    return {OFFICIAL.get(k, k): v for k, v in state.items()}


@pytest.fixture
def registry():
    class Plugin:
        @hookimpl
        def register_stylizers(self, register):
            register(StylizerSpec(name="tiny", factory=TinyNet, summary="t", weight_files=("tiny.pth",),
                                  import_official=import_tiny))
    reg = Registry(load_entrypoints=False)
    reg.register_plugin(Plugin(), "tiny-plugin")
    return reg


def official_file(tmp_path, **extra):
    g = torch.Generator().manual_seed(0)
    state = {"encoder.0.weight": torch.randn(4, 3, 3, 3, generator=g), "encoder.0.bias": torch.randn(4, generator=g),
             "decoder.0.weight": torch.randn(3, 4, 3, 3, generator=g), "decoder.0.bias": torch.randn(3, generator=g)}
    state.update(extra)
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    return path, state


def test_import_round_trip_strict_load_and_stylize(tmp_path, registry):
    path, state = official_file(tmp_path)
    target = import_official(registry.stylizer("tiny"), [path])
    assert target == weights_path("tiny")
    stored, meta = load_safetensors(target)
    assert torch.equal(stored["enc.weight"], state["encoder.0.weight"])
    assert meta["sources"] == [{"file": "tiny.pth", "sha256": sha256_file(path)}]
    assert meta["kind"] == "stylizer" and meta["name"] == "tiny"
    model = load_stylizer("tiny", registry=registry)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    out = model(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 8, 8))
    assert out.shape == (2, 3, 16, 16)
    assert verify_file(target) == []


def test_unexpected_key_names_the_key(tmp_path, registry):
    path, _ = official_file(tmp_path, **{"decoder.9.weight": torch.zeros(1)})
    with pytest.raises(WeightsError, match=r"unexpected keys: decoder\.9\.weight"):
        import_official(registry.stylizer("tiny"), [path])
    assert not weights_path("tiny").exists()


def test_shape_mismatch_and_missing_key_named():
    net = TinyNet()
    state = net.state_dict()
    state["enc.weight"] = torch.zeros(5, 3, 3, 3)
    del state["dec.bias"]
    with pytest.raises(WeightsError) as info:
        load_state_strict(net, state, "x.safetensors")
    assert "missing keys: dec.bias" in str(info.value) and "enc.weight (5, 3, 3, 3) != (4, 3, 3, 3)" in str(info.value)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"weight": Exploit()}, fh)
    with pytest.raises(WeightsError, match="refused to load") as info:
        read_checkpoint(path)
    assert "evil.pth" in str(info.value)


def test_missing_weights_message_names_files_and_command(registry):
    with pytest.raises(WeightsError) as info:
        load_stylizer("tiny", registry=registry)
    text = str(info.value)
    assert "tiny.safetensors" in text and "nstzoo weights import tiny tiny.pth" in text and "--random-init" in text
    assert load_stylizer("tiny", registry=registry, random_init=True) is not None


def test_weights_of_another_model_are_refused(tmp_path, registry):
    other = tmp_path / "other.safetensors"
    save_safetensors(other, TinyNet().state_dict(), kind="stylizer", name="not-tiny")
    with pytest.raises(WeightsError, match="holds weights of 'not-tiny'"):
        load_stylizer("tiny", registry=registry, weights=other)


def test_verify_detects_modified_tensors(tmp_path):
    from safetensors.torch import save_file
    from safetensors import safe_open

    path = save_safetensors(tmp_path / "w.safetensors", TinyNet().state_dict(), kind="stylizer", name="tiny")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tampered = {k: v + 1 for k, v in load_safetensors(path)[0].items()}
    save_file(tampered, str(path), metadata=meta)
    assert any("digest differs" in p for p in verify_file(path))


def test_atomic_save_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "w.safetensors"
    save_safetensors(target, TinyNet().state_dict(), kind="stylizer", name="tiny")
    before = target.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("nstzoo.weights.save_file", crash)
    with pytest.raises(OSError):
        save_safetensors(target, TinyNet(8).state_dict(), kind="stylizer", name="tiny")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_written_files_get_the_usual_permissions(tmp_path):
    """Exports and images are shared with other users: not the owner-only mode of a mkstemp file."""
    umask = os.umask(0o022)
    try:
        path = save_safetensors(tmp_path / "w.safetensors", TinyNet().state_dict(), kind="stylizer", name="tiny")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
