"""Nothing non-finite enters or leaves the weights store: save, load, import and stylize refuse NaN/inf by file and key."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from nstzoo.errors import WeightsError
from nstzoo.weights import (
    METADATA_KEY,
    check_finite,
    import_official,
    load_safetensors,
    load_stylizer,
    non_finite,
    read_checkpoint,
    save_safetensors,
    sha256_file,
    verify_file,
    weights_path,
)
from nstzoo import StylizerSpec, hookimpl
from nstzoo.registry import Registry
from tests.test_weights import TinyNet, import_tiny, official_file


@pytest.fixture
def registry() -> Registry:
    """Only the tiny stylizer of tests/test_weights.py, with its official-checkpoint importer."""
    class Plugin:
        @hookimpl
        def register_stylizers(self, register):
            register(StylizerSpec(name="tiny", factory=TinyNet, summary="t", weight_files=("tiny.pth",),
                                  import_official=import_tiny))
    reg = Registry(load_entrypoints=False)
    reg.register_plugin(Plugin(), "tiny-plugin")
    return reg


def poisoned(state: dict[str, torch.Tensor], key: str, value: float, count: int = 1) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in state.items()}
    state[key].view(-1)[:count] = value
    return state


def write_raw(path, state, name: str = "tiny") -> None:
    """A file as another tool (or a diverged run before this check) could have written it."""
    header = {"format": 1, "kind": "stylizer", "name": name, "config": {}}
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(header)})


def test_non_finite_counts_nan_and_inf():
    state = {"a": torch.tensor([1.0, float("nan"), float("inf"), -float("inf")]), "b": torch.ones(3),
             "steps": torch.tensor([3], dtype=torch.int64)}
    assert non_finite(state) == {"a": (1, 2)}
    with pytest.raises(WeightsError, match=r"x\.safetensors: non-finite values in 1 tensor\(s\) — 'a': 1 NaN, 2 infinite"):
        check_finite(state, "x.safetensors")
    check_finite({"b": torch.ones(2)}, "fine")


def test_save_refuses_and_leaves_an_existing_file_alone(tmp_path):
    target = tmp_path / "w.safetensors"
    save_safetensors(target, TinyNet().state_dict(), kind="stylizer", name="tiny")
    before = sha256_file(target)
    bad = poisoned(TinyNet().state_dict(), "dec.bias", float("nan"))
    with pytest.raises(WeightsError) as err:
        save_safetensors(target, bad, kind="stylizer", name="tiny")
    assert "refusing to write" in str(err.value) and str(target) in str(err.value) and "'dec.bias': 1 NaN" in str(err.value)
    assert sha256_file(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
    with pytest.raises(WeightsError, match="'enc.weight': 0 NaN, 3 infinite"):
        save_safetensors(tmp_path / "new.safetensors", poisoned(TinyNet().state_dict(), "enc.weight", float("inf"), 3),
                         kind="encoder", name="e")  # the path `nstzoo export` takes
    assert not (tmp_path / "new.safetensors").exists()


def test_load_refuses_naming_file_and_key(tmp_path, registry):
    path = tmp_path / "nan.safetensors"
    write_raw(path, poisoned(TinyNet().state_dict(), "enc.bias", float("nan"), 2))
    with pytest.raises(WeightsError) as err:
        load_safetensors(path)
    assert str(path) in str(err.value) and "'enc.bias': 2 NaN" in str(err.value)
    # The stylizer is never built from them: no silent all-black output.
    with pytest.raises(WeightsError, match="enc.bias"):
        load_stylizer("tiny", registry=registry, weights=path)
    # An official checkpoint in safetensors form goes through the same check.
    with pytest.raises(WeightsError, match="enc.bias"):
        read_checkpoint(path)
    # verify still reads it, to report every problem.
    assert any("non-finite values in enc.bias" in p for p in verify_file(path))
    state, _ = load_safetensors(path, allow_non_finite=True)
    assert torch.isnan(state["enc.bias"]).sum() == 2


def test_import_refuses_non_finite_official_weights(tmp_path, registry):
    path, _ = official_file(tmp_path)
    obj = torch.load(path, weights_only=True)
    obj["state_dict"]["decoder.0.weight"].view(-1)[0] = float("-inf")
    torch.save(obj, path)
    with pytest.raises(WeightsError) as err:
        import_official(registry.stylizer("tiny"), [path])
    assert f"from {path}" in str(err.value) and "'dec.weight': 0 NaN, 1 infinite" in str(err.value)
    assert not weights_path("tiny").exists()
