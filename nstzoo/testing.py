"""The plugin contracts as tests any plugin author runs: :func:`check_stylizer` and :func:`check_encoder`.

Each builds the module (random weights by default, so a check needs no weight files), runs it on
small inputs of awkward sizes, and checks what the rest of nstzoo relies on. Every failed check is
collected; the call then raises one :class:`~nstzoo.errors.ContractError` that lists them all, or
returns a :class:`ContractReport`. ``nstzoo stylizers check NAME`` runs :func:`check_stylizer`.

In a plugin's own test suite::

    from nstzoo.testing import check_stylizer

    def test_contract():
        check_stylizer(MY_SPEC)            # a StylizerSpec, or a registered name

What a stylizer must do (see :class:`~nstzoo.specs.StylizerSpec`): ``forward(content, style)`` with
``[B,3,H,W]`` and ``[B,3,H',W']`` in [0, 1] (any sizes, odd ones included) returns a floating
``[B,3,H,W]`` in [0, 1]; each item's output depends only on its own inputs; eval mode is
deterministic; ``module.to(device)`` moves everything it computes with.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .contract import output_stats, plugin_code, shape_problems, value_problems
from .errors import ContractError, NstzooError
from .specs import EncoderSpec, StyleEncoder, StylizerSpec

# Batched vs one-by-one outputs may differ by float reordering only: conv/matmul kernels block a
# batch differently than a single image, which moves fp32 results by ~1e-6 through a deep network
# with O(1) activations. 1e-4 keeps a wide margin over that, while a statistic shared across the
# batch (BatchNorm in training mode, a mean over dim 0) moves outputs by 1e-2 or more.
BATCH_ATOL = 1e-4
# Two eval-mode calls on the same inputs run the same kernels; only nondeterministic GPU reductions
# (atomics) may differ, at the last bits.
DETERMINISM_ATOL = 1e-5
# Encoders return unit vectors; fp32 normalisation is exact to ~1e-7.
NORM_ATOL = 1e-3

# (label, content [H, W], style [H', W']): odd, unequal, portrait-vs-landscape sizes catch
# stylizers that assume square, equal or even-sized inputs (off-by-one after strided convs).
UNEQUAL = ("content 37x53, style 45x29", (37, 53), (45, 29))
BATCH = 2

STYLIZER_CHECKS = ("build", "forward", "shape", "dtype", "finite", "range", "deterministic", "batch-independent",
                   "tensors-registered", "device")
ENCODER_CHECKS = ("build", "base-class", "forward", "shape", "dtype", "finite", "unit-norm", "deterministic",
                  "batch-independent", "frozen-features", "export-config", "rebuild", "tensors-registered", "device")


@dataclass
class ContractReport:
    """What a contract check found.

    Attributes:
        subject: the stylizer or encoder name.
        kind: ``"stylizer"`` or ``"encoder"``.
        plugin: the plugin that registered it, when checked by name.
        passed: the checks that ran and passed, in order.
        failures: one line per failed check (empty when the contract holds).
        seconds: wall time of the whole check.
        devices: the devices the module ran on.
    """

    subject: str
    kind: str
    plugin: str | None = None
    passed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    devices: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.subject, "kind": self.kind, "plugin": self.plugin, "ok": self.ok,
                "passed": self.passed, "failures": self.failures, "seconds": round(self.seconds, 3),
                "devices": self.devices}


class _Checks:
    """Collects pass/fail per named check; a check passes when it ran and never failed."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.ran: set[str] = set()
        self.failed: dict[str, list[str]] = {}

    def ok(self, check: str) -> None:
        self.ran.add(check)

    def fail(self, check: str, detail: str) -> None:
        self.ran.add(check)
        self.failed.setdefault(check, []).append(detail)

    def expect(self, check: str, problems: list[str], where: str) -> bool:
        for problem in problems:
            self.fail(check, f"{where}: {problem}")
        if not problems:
            self.ok(check)
        return not problems

    def report(self, report: ContractReport) -> ContractReport:
        report.passed = [c for c in self.names if c in self.ran and c not in self.failed]
        report.failures = [f"{c}: {d}" for c in self.names for d in self.failed.get(c, [])]
        return report


def _images(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Smooth random images in [0, 1] (image-like: low-frequency colour plus a little texture)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(shape[0], 3, 5, 5, generator=g)
    smooth = torch.nn.functional.interpolate(low, size=tuple(shape[-2:]), mode="bilinear", align_corners=False)
    return (0.85 * smooth + 0.15 * torch.rand(shape, generator=g)).clamp(0, 1)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference; NaN where both are NaN counts as equal (reported by "finite")."""
    diff = (a.float() - b.float()).abs()
    both_nan = torch.isnan(a) & torch.isnan(b)
    return float(torch.where(both_nan, torch.zeros_like(diff), diff).nan_to_num(nan=float("inf")).max()) if diff.numel() else 0.0


def _plain_tensor_attributes(module: nn.Module) -> list[str]:
    """Tensors held as plain attributes: ``module.to(device)`` does not move them (use ``register_buffer``)."""
    found = []
    for prefix, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if isinstance(value, torch.Tensor):
                found.append(f"{prefix}.{attr}" if prefix else attr)
    return found


def _misplaced(module: nn.Module, device: torch.device) -> list[str]:
    """Parameters and buffers not on ``device`` after ``module.to(device)``."""
    return [f"{name} on {t.device}" for name, t in [*module.named_parameters(), *module.named_buffers()]
            if t.device.type != device.type]


def _other_device(device: torch.device) -> torch.device:
    """Where the device leg moves the module: CUDA from the CPU when there is one, else the CPU."""
    if device.type == "cpu":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device("cpu")


def _resolve(spec_or_name: Any, kind: str, registry: Any) -> tuple[Any, str | None]:
    spec_type = StylizerSpec if kind == "stylizer" else EncoderSpec
    if isinstance(spec_or_name, spec_type):
        return spec_or_name, None
    if not isinstance(spec_or_name, str):
        raise TypeError(f"expected a {spec_type.__name__} or a registered {kind} name, got {spec_or_name!r}")
    from .registry import get_registry

    registry = registry or get_registry()
    if kind == "stylizer":
        return registry.stylizer(spec_or_name), registry.stylizer_plugin(spec_or_name)
    return registry.encoder(spec_or_name), registry.encoder_plugin(spec_or_name)


def _build(checks: _Checks, build: Callable[[], nn.Module], device: torch.device) -> nn.Module | None:
    """Build with a fixed seed (reproducible random weights) without touching the caller's RNG; eval mode."""
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = build()
    except NstzooError as exc:
        checks.fail("build", exc.message)
        return None
    if not isinstance(module, nn.Module):
        checks.fail("build", f"the factory returned {type(module).__name__}, expected a torch.nn.Module")
        return None
    try:
        module.to(device)
    except Exception as exc:  # noqa: BLE001 - reported as a failed check, like every other problem
        checks.fail("device", f".to({str(device)!r}) raised {type(exc).__name__}: {exc}")
        return None
    checks.ok("build")
    return module.eval().requires_grad_(False)


def _finish(checks: _Checks, report: ContractReport, started: float) -> ContractReport:
    checks.report(report)
    report.seconds = time.perf_counter() - started
    if report.failures:
        who = f"{report.kind} {report.subject!r}" + (f" (plugin {report.plugin!r})" if report.plugin else "")
        failed = list(dict.fromkeys(f.split(":", 1)[0] for f in report.failures))
        raise ContractError(
            f"{who} failed {len(failed)} contract check(s) ({', '.join(failed)}): {'; '.join(report.failures)}",
            hint=("the contract: the docstrings of nstzoo.specs." + ("StylizerSpec" if report.kind == "stylizer"
                  else "StyleEncoder") + " and nstzoo.testing, and CONTRIBUTING.md"),
            subject=report.subject, failures=report.failures)
    return report


# ----------------------------------------------------------------------------- stylizers
def check_stylizer(spec_or_name: StylizerSpec | str, *, registry: Any = None, device: str | torch.device = "cpu",
                   weights: Literal["random", "store"] = "random", size: int = 48,
                   options: Mapping[str, Any] | None = None) -> ContractReport:
    """Check a stylizer against the contract; raise :class:`ContractError` listing every failure.

    Args:
        spec_or_name: a :class:`StylizerSpec` (e.g. your plugin's, before it is installed) or a
            registered name.
        registry: where to look names up (default: the process-wide registry).
        device: where the main checks run; the device leg then moves the module to CUDA (when
            available) or back to the CPU.
        weights: ``"random"`` builds through the factory with seeded random weights (no files
            needed); ``"store"`` loads the stored weights like ``nstzoo stylize`` does.
        size: the side of the square case (the other case uses fixed odd sizes, 37x53 and 45x29).
        options: factory keyword arguments over the spec's ``default_options``.

    Checks (for a batch of 2, unequal odd sizes and equal square ones): the factory builds an
    ``nn.Module``; ``forward`` runs; the output is a floating ``[B,3,H,W]`` tensor of the content's
    size on the content's device, finite, in [0, 1] (tolerance 1e-3); two calls agree (eval mode is
    deterministic); each item equals its one-by-one output (batch independence, atol 1e-4); all
    tensors are parameters or buffers; after ``module.to(other)`` every tensor is there and the
    output is produced there.
    """
    started = time.perf_counter()
    spec, plugin = _resolve(spec_or_name, "stylizer", registry)
    device = torch.device(device)
    report = ContractReport(spec.name, "stylizer", plugin)
    checks = _Checks(STYLIZER_CHECKS)
    opts = dict(options or {})

    def build() -> nn.Module:
        if weights == "store":
            from .weights import load_stylizer

            return load_stylizer(spec.name, registry=registry, **opts)  # wraps the factory itself
        if weights != "random":
            raise ValueError(f"weights must be 'random' or 'store', got {weights!r}")
        with plugin_code(plugin, spec.name, "factory"):
            return spec.factory(**{**dict(spec.default_options), **opts})

    module = _build(checks, build, device)
    if module is None:
        return _finish(checks, report, started)

    attrs = _plain_tensor_attributes(module)
    checks.expect("tensors-registered", [f"holds tensor attribute {a!r} outside its parameters and buffers, so "
                                         "module.to(device) leaves it behind (use register_buffer)" for a in attrs],
                  "module")

    def forward(content: torch.Tensor, style: torch.Tensor, where: str) -> torch.Tensor | None:
        try:
            with torch.inference_mode(), plugin_code(plugin, spec.name, "forward"):
                out = module(content, style)
        except NstzooError as exc:
            checks.fail("forward", f"{where}: {exc.message}")
            return None
        checks.ok("forward")
        return out

    def contract(content: torch.Tensor, out: Any, where: str) -> bool:
        problems = shape_problems(content, out)
        checks.expect("shape", [p for p in problems if not p.startswith(("dtype", "output on"))], where)
        if not isinstance(out, torch.Tensor):
            return False
        checks.expect("dtype", [p for p in problems if p.startswith("dtype")], where)
        for problem in problems:
            if problem.startswith("output on"):
                checks.fail("device", f"{where}: {problem}")
        if problems:
            return False
        values = value_problems(output_stats(out).tolist(), out.dtype, out.numel())
        checks.expect("finite", [p for p in values if "NaN" in p], where)
        checks.expect("range", [p for p in values if "NaN" not in p], where)
        return True

    cases = [UNEQUAL, (f"content and style {size}x{size}", (size, size), (size, size))]
    report.devices.append(str(device))
    for seed, (label, content_hw, style_hw) in enumerate(cases):
        content = _images((BATCH, 3, *content_hw), 2 * seed).to(device)
        style = _images((BATCH, 3, *style_hw), 2 * seed + 1).to(device)
        out = forward(content, style, label)
        if out is None or not contract(content, out, label):
            continue
        again = forward(content, style, label)
        if again is None:
            continue
        diff = _max_diff(out, again) if again.shape == out.shape else float("inf")
        if not checks.expect("deterministic", [f"two eval-mode calls differ by {diff:.3g} (max abs)"]
                             if diff > DETERMINISM_ATOL else [], label):
            continue  # comparing with one-by-one outputs would only report the same randomness again
        for i in range(BATCH):
            single = forward(content[i:i + 1], style[i:i + 1], f"{label}, item {i} alone")
            if single is None:
                continue
            diff = _max_diff(out[i:i + 1], single) if single.shape == out[i:i + 1].shape else float("inf")
            checks.expect("batch-independent",
                          [f"item {i} differs from its one-by-one output by {diff:.3g} (max abs, tolerance "
                           f"{BATCH_ATOL:g}): the output depends on other items of the batch"]
                          if diff > BATCH_ATOL else [], label)

    # The device leg: everything moves with .to(), and the output is made where the module is.
    other = _other_device(device)
    label, content_hw, style_hw = UNEQUAL
    try:
        with plugin_code(plugin, spec.name, "module.to"):
            module.to(other)
    except NstzooError as exc:
        checks.fail("device", exc.message)
    else:
        report.devices.append(str(other))
        checks.expect("device", _misplaced(module, other), f"after .to({str(other)!r})")
        content = _images((BATCH, 3, *content_hw), 0).to(other)
        out = forward(content, _images((BATCH, 3, *style_hw), 1).to(other), f"{label}, on {other}")
        if out is not None:
            if isinstance(out, torch.Tensor) and out.device.type != other.type:
                checks.fail("device", f"module on {other} returned its output on {out.device}")
            else:
                checks.ok("device")
                contract(content, out, f"{label}, on {other}")
    return _finish(checks, report, started)


# ----------------------------------------------------------------------------- encoders
def check_encoder(spec_or_name: EncoderSpec | str, *, registry: Any = None, device: str | torch.device = "cpu",
                  size: int = 48, batch: int = 3, options: Mapping[str, Any] | None = None) -> ContractReport:
    """Check a style encoder against :class:`~nstzoo.specs.StyleEncoder`'s contract; raise :class:`ContractError`.

    Args:
        spec_or_name: an :class:`EncoderSpec` or a registered encoder name.
        registry: where to look names up (default: the process-wide registry).
        device: where the main checks run (the device leg moves the module elsewhere, as for stylizers).
        size: the side of the square case (the other is 37x53).
        batch: images per batch.
        options: factory keyword arguments over the spec's ``default_config`` — real encoders need
            small ones here (tiny widths, ``random_init=True``) for a fast check without weight files.

    Checks: the factory builds a :class:`StyleEncoder`; ``forward(images)`` returns float32
    ``[B, embed_dim]``, finite, unit L2 norm (tolerance 1e-3); deterministic in eval mode; each item
    equals its one-by-one embedding (atol 1e-4, so logit accumulation stays exact);
    ``forward(images, frozen_features(images))`` equals ``forward(images)``; ``export_config()`` is
    JSON-serialisable and ``factory(**config)`` rebuilds the same architecture, which loads the
    state dict strictly and embeds identically; tensors are registered and move with ``.to()``.
    """
    started = time.perf_counter()
    spec, plugin = _resolve(spec_or_name, "encoder", registry)
    device = torch.device(device)
    report = ContractReport(spec.name, "encoder", plugin)
    checks = _Checks(ENCODER_CHECKS)
    config = {**dict(spec.default_config), **dict(options or {})}

    def factory(**kwargs: Any) -> nn.Module:
        with plugin_code(plugin, spec.name, "factory", kind="encoder"):
            return spec.factory(**kwargs)

    model = _build(checks, lambda: factory(**config), device)
    if model is None:
        return _finish(checks, report, started)
    checks.expect("base-class", [] if isinstance(model, StyleEncoder) else
                  [f"{type(model).__name__} does not derive from nstzoo.specs.StyleEncoder"], "module")
    embed_dim = getattr(model, "embed_dim", 0)
    if not isinstance(embed_dim, int) or embed_dim <= 0:
        checks.fail("shape", f"module: embed_dim must be a positive int, got {embed_dim!r}")
    checks.expect("tensors-registered", [f"holds tensor attribute {a!r} outside its parameters and buffers"
                                         for a in _plain_tensor_attributes(model)], "module")

    def embed(m: nn.Module, images: torch.Tensor, where: str, *extra: Any) -> torch.Tensor | None:
        try:
            with torch.inference_mode(), plugin_code(plugin, spec.name, "forward", kind="encoder"):
                out = m(images, *extra)
        except NstzooError as exc:
            checks.fail("forward", f"{where}: {exc.message}")
            return None
        checks.ok("forward")
        return out

    def contract(out: Any, n: int, where: str) -> bool:
        if not isinstance(out, torch.Tensor):
            checks.fail("shape", f"{where}: returned {type(out).__name__}, expected a tensor")
            return False
        ok = checks.expect("shape", [] if tuple(out.shape) == (n, embed_dim) else
                           [f"shape {list(out.shape)}, expected {[n, embed_dim]}"], where)
        ok &= checks.expect("dtype", [] if out.dtype == torch.float32 else [f"dtype {out.dtype}, expected float32"],
                            where)
        if not ok:
            return False
        nonfinite = int((~torch.isfinite(out)).sum())
        if not checks.expect("finite", [f"{nonfinite} of {out.numel()} values are NaN or infinite"]
                             if nonfinite else [], where):
            return False
        norm_error = float((out.norm(dim=1) - 1).abs().max()) if out.numel() else 0.0
        checks.expect("unit-norm", [f"L2 norms differ from 1 by up to {norm_error:.3g}"]
                      if norm_error > NORM_ATOL else [], where)
        return True

    first: tuple[torch.Tensor, torch.Tensor] | None = None
    report.devices.append(str(device))
    for seed, hw in enumerate([(37, 53), (size, size)]):
        where = f"images {hw[0]}x{hw[1]}"
        images = _images((batch, 3, *hw), seed).to(device)
        out = embed(model, images, where)
        if out is None or not contract(out, batch, where):
            continue
        first = first or (images, out)
        again = embed(model, images, where)
        if again is None:
            continue
        diff = _max_diff(out, again) if again.shape == out.shape else float("inf")
        if not checks.expect("deterministic", [f"two eval-mode calls differ by {diff:.3g}"]
                             if diff > DETERMINISM_ATOL else [], where):
            continue  # the comparisons below would only report the same randomness again
        for i in range(batch):
            single = embed(model, images[i:i + 1], f"{where}, item {i} alone")
            if single is not None:
                diff = _max_diff(out[i:i + 1], single) if single.shape == out[i:i + 1].shape else float("inf")
                checks.expect("batch-independent",
                              [f"item {i} differs from its one-by-one embedding by {diff:.3g} (tolerance "
                               f"{BATCH_ATOL:g}): no batch statistics at inference"] if diff > BATCH_ATOL else [],
                              where)
        try:
            with torch.inference_mode(), plugin_code(plugin, spec.name, "frozen_features", kind="encoder"):
                frozen = model.frozen_features(images) if hasattr(model, "frozen_features") else None
        except NstzooError as exc:
            checks.fail("frozen-features", f"{where}: {exc.message}")
        else:
            if frozen is None:
                checks.ok("frozen-features")
            else:
                reused = embed(model, images, f"{where}, with frozen features", frozen)
                if reused is not None:
                    diff = _max_diff(out, reused) if reused.shape == out.shape else float("inf")
                    checks.expect("frozen-features",
                                  [f"forward(images, frozen_features(images)) differs from forward(images) by "
                                   f"{diff:.3g}"] if diff > DETERMINISM_ATOL else [], where)

    # export_config() -> JSON -> factory(**config): the same architecture, strict load, same embeddings.
    try:
        with plugin_code(plugin, spec.name, "export_config", kind="encoder"):
            exported = model.export_config()
        exported = json.loads(json.dumps(exported))
    except NstzooError as exc:
        checks.fail("export-config", exc.message)
    except (TypeError, ValueError) as exc:
        checks.fail("export-config", f"export_config() is not JSON-serialisable: {exc}")
    else:
        checks.ok("export-config")
        rebuilt = None
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1)  # other random weights than the original: the state dict must carry them
                rebuilt = factory(**exported).eval().requires_grad_(False).to(device)
            own, theirs = model.state_dict(), rebuilt.state_dict()
            mismatch = sorted(k for k in set(own) | set(theirs)
                              if k not in own or k not in theirs or own[k].shape != theirs[k].shape)
            if mismatch:
                raise ValueError(f"state dicts differ at {', '.join(mismatch[:5])}")
            rebuilt.load_state_dict(own, strict=True)
        except (NstzooError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
            checks.fail("rebuild", f"factory(**export_config()) does not rebuild the architecture: {exc}")
        else:
            if first is not None:
                images, out = first
                again = embed(rebuilt, images, "rebuilt from export_config()")
                if again is not None:
                    diff = _max_diff(out, again) if again.shape == out.shape else float("inf")
                    checks.expect("rebuild", [f"the rebuilt encoder embeds differently by {diff:.3g}"]
                                  if diff > DETERMINISM_ATOL else [], "rebuilt from export_config()")
            else:
                checks.ok("rebuild")

    other = _other_device(device)
    try:
        with plugin_code(plugin, spec.name, "module.to", kind="encoder"):
            model.to(other)
    except NstzooError as exc:
        checks.fail("device", exc.message)
    else:
        report.devices.append(str(other))
        checks.expect("device", _misplaced(model, other), f"after .to({str(other)!r})")
        out = embed(model, _images((batch, 3, 37, 53), 0).to(other), f"on {other}")
        if isinstance(out, torch.Tensor):
            checks.expect("device", [] if out.device.type == other.type else
                          [f"module on {other} returned its embeddings on {out.device}"], f"on {other}")
            contract(out, batch, f"on {other}")
    return _finish(checks, report, started)


__all__ = ["BATCH_ATOL", "DETERMINISM_ATOL", "ContractReport", "check_encoder", "check_stylizer"]
