"""The plugin contracts as tests (nstzoo.testing): every registered built-in keeps them, and each
kind of broken stylizer or encoder is caught and named."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nstzoo import StylizerSpec, hookimpl
from nstzoo.errors import ContractError
from nstzoo.registry import Registry, reset_registry
from nstzoo.specs import EncoderSpec, StyleEncoder
from nstzoo.testing import ENCODER_CHECKS, STYLIZER_CHECKS, check_encoder, check_stylizer
from tests.test_cli_core import run


def builtin_stylizers() -> list[str]:
    """Read from the registry at collection time, so a newly registered built-in is checked too."""
    registry = Registry()
    return [name for name, entry in registry.stylizers().items() if registry.plugins[entry.plugin].builtin]


@pytest.mark.parametrize("name", builtin_stylizers())
def test_builtin_stylizer_keeps_the_contract(name):
    report = check_stylizer(name, size=32)
    assert report.ok and report.passed == list(STYLIZER_CHECKS)
    assert report.plugin is not None


# ----------------------------------------------------------------------------- broken stylizers
class Good(nn.Module):
    """Per-item colour shift toward the style's mean: batched, deterministic, in range."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(0.5))

    def forward(self, content, style):
        return torch.lerp(content, style.mean((2, 3), keepdim=True).expand_as(content), self.weight).clamp(0, 1)


class WrongSize(Good):
    def forward(self, content, style):
        return super().forward(content, style)[..., :-1, :]  # drops a row: an off-by-one after striding


class OutOfRange(Good):
    def forward(self, content, style):
        return super().forward(content, style) * 3 - 1


class NonFinite(Good):
    def forward(self, content, style):
        out = super().forward(content, style).clone()
        out[:, :, 0, 0] = float("nan")
        return out


class BatchDependent(Good):
    def forward(self, content, style):
        return (content + content.mean(0, keepdim=True)) / 2  # a statistic across the batch


class Nondeterministic(Good):
    def forward(self, content, style):
        return content * (0.5 + 0.5 * torch.rand(()))


class PlainTensorAttribute(Good):
    def __init__(self):
        super().__init__()
        self.offset = torch.zeros(1, 3, 1, 1)  # not a buffer: .to(device) leaves it behind

    def forward(self, content, style):
        return (content + self.offset.to(content.device)).clamp(0, 1)


class Raises(Good):
    def forward(self, content, style):
        raise IndexError("tuple index out of range")


def spec(factory, name="toy") -> StylizerSpec:
    return StylizerSpec(name=name, factory=factory, summary="test", needs_weights=False)


def failed_checks(exc: ContractError) -> set[str]:
    return {line.split(":", 1)[0] for line in exc.failures}


def test_a_sound_stylizer_passes_every_check():
    report = check_stylizer(spec(Good))
    assert report.ok and report.passed == list(STYLIZER_CHECKS) and report.seconds < 5
    assert report.as_dict()["failures"] == []


@pytest.mark.parametrize("module, check, detail", [
    (WrongSize, "shape", "expected [2, 3, 37, 53]"),
    (OutOfRange, "range", "expected [0, 1]"),
    (NonFinite, "finite", "NaN or infinite"),
    (BatchDependent, "batch-independent", "depends on other items"),
    (Nondeterministic, "deterministic", "two eval-mode calls differ"),
    (PlainTensorAttribute, "tensors-registered", "'offset'"),
    (Raises, "forward", "IndexError: tuple index out of range"),
])
def test_each_broken_stylizer_is_caught_and_named(module, check, detail):
    with pytest.raises(ContractError) as info:
        check_stylizer(spec(module, name="broken-one"))
    exc = info.value
    assert check in failed_checks(exc)
    assert any(line.startswith(f"{check}:") and detail in line for line in exc.failures), exc.failures
    assert exc.subject == "broken-one" and "stylizer 'broken-one'" in exc.message and "\n" not in exc.message
    # A single defect is reported as itself, not as a cascade of unrelated failures.
    assert failed_checks(exc) <= {check, "forward" if module is Raises else check}


def test_every_failed_check_is_listed_not_only_the_first():
    class Several(Good):
        def forward(self, content, style):
            return content * 2 * (0.5 + 0.5 * torch.rand(()))  # out of range and nondeterministic

    with pytest.raises(ContractError) as info:
        check_stylizer(spec(Several))
    assert {"range", "deterministic"} <= failed_checks(info.value)
    assert "range" in info.value.message and "deterministic" in info.value.message


def test_factory_failure_is_a_build_failure_naming_the_factory_error():
    def factory():
        raise KeyError("channels")

    with pytest.raises(ContractError) as info:
        check_stylizer(spec(factory))
    assert info.value.failures == ["build: stylizer 'toy': factory raised KeyError: 'channels'"]


def test_options_override_default_options():
    class Scaled(Good):
        def __init__(self, scale: float = 2.0):
            super().__init__()
            self.scale = scale

        def forward(self, content, style):
            return content * self.scale

    with pytest.raises(ContractError, match="range"):
        check_stylizer(StylizerSpec(name="scaled", factory=Scaled, summary="x", needs_weights=False,
                                    default_options={"scale": 3.0}))
    assert check_stylizer(StylizerSpec(name="scaled", factory=Scaled, summary="x", needs_weights=False,
                                       default_options={"scale": 3.0}), options={"scale": 1.0}).ok


def test_store_weights_mode_needs_the_stored_weights():
    class Plugin:
        @hookimpl
        def register_stylizers(self, register):
            register(StylizerSpec(name="weighted", factory=Good, summary="x", weights_source="tests"))

    registry = Registry(load_entrypoints=False)
    registry.register_plugin(Plugin(), "weighted-plugin")
    assert check_stylizer("weighted", registry=registry).plugin == "weighted-plugin"  # random weights
    with pytest.raises(ContractError) as info:
        check_stylizer("weighted", registry=registry, weights="store")
    assert info.value.failures[0].startswith("build: stylizer 'weighted' needs weights")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA leg needs a GPU")
def test_device_leg_runs_on_cuda_when_available():
    report = check_stylizer(spec(Good))
    assert report.devices == ["cpu", "cuda"]


# ----------------------------------------------------------------------------- the CLI command
class BrokenPlugin:
    @hookimpl
    def register_stylizers(self, register):
        register(spec(OutOfRange, name="overshoot"))
        register(spec(Good, name="fine"))


def install(*plugins: tuple[object, str]) -> Registry:
    registry = Registry(load_entrypoints=False)
    for plugin, name in plugins:
        registry.register_plugin(plugin, name)
    reset_registry(registry)
    return registry


def test_stylizers_check_command(capsys):
    install((BrokenPlugin(), "bad-plugin"))
    code, out, err = run(capsys, "stylizers", "check", "fine", "--json")
    assert code == 0, err
    assert json.loads(out)["ok"] and json.loads(out)["passed"] == list(STYLIZER_CHECKS)

    code, out, err = run(capsys, "stylizers", "check", "overshoot")
    assert code == 2 and out == ""
    error_line = err.splitlines()[0]
    assert error_line.startswith("error: stylizer 'overshoot' (plugin 'bad-plugin') failed 1 contract check(s) (range)")
    assert "values span" in error_line

    code, out, err = run(capsys, "stylizers", "check", "overshoot", "--json")
    assert code == 2 and json.loads(out)["failures"][0].startswith("range:")


def test_stylizers_check_builtin_through_the_cli(capsys):
    code, _, err = run(capsys, "stylizers", "check", "reinhard", "--size", "24")
    assert code == 0 and "passed 10 contract checks" in err


# ----------------------------------------------------------------------------- encoders
class TinyEncoder(StyleEncoder):
    """Per-item channel statistics -> linear -> unit norm."""

    def __init__(self, dim: int = 8, hidden: int = 6):
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden}
        self.embed_dim = dim
        self.proj = nn.Sequential(nn.Linear(6, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, images, frozen=None):
        stats = torch.cat([images.mean((2, 3)), images.std((2, 3))], dim=1)
        return nn.functional.normalize(self.proj(stats), dim=1)


def encoder_spec(factory, **config) -> EncoderSpec:
    return EncoderSpec(name="tiny", factory=factory, summary="test", default_config=config)


def test_a_sound_encoder_passes_every_check():
    report = check_encoder(encoder_spec(TinyEncoder, dim=8))
    assert report.ok and report.passed == list(ENCODER_CHECKS)


class NotNormalised(TinyEncoder):
    def forward(self, images, frozen=None):
        return super().forward(images) * 2


class BatchStats(TinyEncoder):
    def forward(self, images, frozen=None):
        return nn.functional.normalize(super().forward(images) + super().forward(images).mean(0), dim=1)


class LosesConfig(TinyEncoder):
    def export_config(self):
        return {"dim": self.embed_dim}  # forgets `hidden`: the rebuilt module has other shapes


class Unserialisable(TinyEncoder):
    def export_config(self):
        return {"dim": torch.tensor(8)}


class Half(TinyEncoder):
    def forward(self, images, frozen=None):
        return super().forward(images).half()


class PlainModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_dim = 8
        self.config = {}
        self.proj = nn.Linear(3, 8)

    def forward(self, images, frozen=None):
        return nn.functional.normalize(self.proj(images.mean((2, 3))), dim=1)

    def export_config(self):
        return {}


@pytest.mark.parametrize("factory, check", [
    (NotNormalised, "unit-norm"),
    (BatchStats, "batch-independent"),
    (LosesConfig, "rebuild"),
    (Unserialisable, "export-config"),
    (Half, "dtype"),
    (PlainModule, "base-class"),
])
def test_each_broken_encoder_is_caught(factory, check):
    config = {} if factory is PlainModule else {"dim": 8, "hidden": 5}
    with pytest.raises(ContractError) as info:
        check_encoder(encoder_spec(factory, **config))
    assert check in failed_checks(info.value), info.value.failures
    assert "encoder 'tiny'" in info.value.message


def test_aladin_nst_keeps_the_encoder_contract_with_tiny_options():
    tiny = {"vit_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2}, "vit_size": 32, "vgg_size": 32,
            "vgg_taps": ["relu1_1", "relu2_1"], "embed_dim": 16, "random_init": True}
    report = check_encoder("aladin-nst", options=tiny, size=32, batch=2)
    assert report.ok and report.plugin == "aladin-nst" and "frozen-features" in report.passed
