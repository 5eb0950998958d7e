"""Run-time guards around plugin code: what every caller of a stylizer relies on, checked where it runs.

- :func:`plugin_code` turns an exception raised inside a plugin (factory, ``forward``,
  ``import_official``, ``locate_official``) into a one-line :class:`~nstzoo.errors.PluginCodeError`
  naming the plugin and the stylizer; the CLI prints it and exits 2 (``NSTZOO_DEBUG=1`` shows the
  original traceback, which stays chained as ``__cause__``).
- :func:`check_output` verifies a stylizer's output against the contract in
  :class:`~nstzoo.specs.StylizerSpec` (``[B,3,H,W]`` like the content, floating point, finite, in
  [0, 1] within a small tolerance), then clamps it; a violation is a
  :class:`~nstzoo.errors.StylizerOutputError`.
- :func:`checked_stylize` is the two together around one ``module(content, style)`` call.
- :class:`OutputGuard` does the same for the batch synthesizer without a device-to-host sync.

The authoring-time counterpart, which also checks batching and determinism, is :mod:`nstzoo.testing`.
"""

from __future__ import annotations

import math

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .errors import NstzooError, PluginCodeError, StylizerOutputError

# Outputs may overshoot [0, 1] by this much before it counts as a violation: a sigmoid or clamp in
# fp32 never does, but an affine colour transform evaluated in another order can land 1e-6 outside.
RANGE_TOLERANCE = 1e-3


def plugin_of(name: str, kind: str = "stylizer") -> str | None:
    """The plugin that registered stylizer (or encoder) ``name`` in the process-wide registry, or None.

    Only used on error paths, so looking it up lazily costs nothing on the hot path.
    """
    try:
        from .registry import get_registry

        registry = get_registry()
        return registry.stylizer_plugin(name) if kind == "stylizer" else registry.encoder_plugin(name)
    except Exception:  # noqa: BLE001 - a name we cannot attribute is reported without its plugin
        return None


def _who(name: str, plugin: str | None, kind: str = "stylizer") -> str:
    plugin = plugin or plugin_of(name, kind)
    return f"{kind} {name!r}" + (f" (plugin {plugin!r})" if plugin else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


# Environment failures, not plugin bugs: blaming the plugin would send the user the wrong way.
_PASS_THROUGH: tuple[type[BaseException], ...] = (MemoryError, torch.cuda.OutOfMemoryError)


@contextmanager
def plugin_code(plugin: str | None, stylizer: str, what: str, *, kind: str = "stylizer") -> Iterator[None]:
    """Run plugin code; a non-:class:`NstzooError` exception becomes a one-line :class:`PluginCodeError`.

    Args:
        plugin: the plugin's name, or None to look it up (lazily, only if something fails).
        stylizer: the stylizer (or, with ``kind="encoder"``, encoder) the code belongs to.
        what: which piece of plugin code runs (``"factory"``, ``"forward"``, ``"import_official"``...).

    A plugin raising an :class:`NstzooError` (e.g. ``WeightsError`` for a wrong file) already speaks
    to the user and passes through unchanged, as do out-of-memory errors.
    """
    try:
        yield
    except NstzooError:
        raise
    except _PASS_THROUGH:
        raise
    except Exception as exc:
        plugin = plugin or plugin_of(stylizer, kind)
        owner = f"plugin {plugin!r}" if plugin else "the plugin"
        raise PluginCodeError(
            f"{_who(stylizer, plugin, kind)}: {what} raised {_first_line(exc)}",
            hint=f"a bug in {owner} (report it to its author); NSTZOO_DEBUG=1 shows the traceback",
        ) from exc


def output_stats(output: torch.Tensor) -> torch.Tensor:
    """``[non-finite count, min, max]`` (float32, on the output's device) of a stylizer output.

    min/max are over the finite values, so a NaN does not hide an out-of-range value. Returned as one
    tensor so a caller can fetch it in a single (possibly deferred) copy.
    """
    finite = torch.isfinite(output)
    x = output.detach().float()
    lo = torch.where(finite, x, torch.full_like(x, 0.5)).amin() if x.numel() else x.new_tensor(0.5)
    hi = torch.where(finite, x, torch.full_like(x, 0.5)).amax() if x.numel() else x.new_tensor(0.5)
    return torch.stack([(~finite).sum().float(), lo, hi])


def range_tolerance(dtype: torch.dtype) -> float:
    """Allowed overshoot of [0, 1]: :data:`RANGE_TOLERANCE`, or one ulp at 1.0 for low-precision outputs."""
    if dtype.is_floating_point:
        return max(RANGE_TOLERANCE, float(torch.finfo(dtype).eps))
    return RANGE_TOLERANCE


def shape_problems(content: torch.Tensor, output: Any) -> list[str]:
    """Contract violations visible without reading the values: type, dtype, shape, device."""
    if not isinstance(output, torch.Tensor):
        return [f"returned {type(output).__name__}, expected a tensor"]
    problems = []
    expected = (content.shape[0], 3, *content.shape[-2:])
    if tuple(output.shape) != expected:
        problems.append(f"shape {list(output.shape)}, expected {list(expected)} (the content's batch and size)")
    if not output.dtype.is_floating_point:
        problems.append(f"dtype {output.dtype}, expected floating point")
    if output.device != content.device:
        problems.append(f"output on {output.device}, content on {content.device}")
    return problems


def value_problems(stats: list[float], dtype: torch.dtype, numel: int) -> list[str]:
    """Contract violations in the values, from :func:`output_stats` fetched to the host."""
    nonfinite, lo, hi = stats
    problems = []
    if nonfinite:
        problems.append(f"{int(nonfinite)} of {numel} values are NaN or infinite")
    tol = range_tolerance(dtype)
    if lo < -tol or hi > 1 + tol:
        problems.append(f"values span [{lo:.4g}, {hi:.4g}], expected [0, 1] (tolerance {tol:g})")
    return problems


def output_error(stylizer: str, problems: list[str], plugin: str | None = None) -> StylizerOutputError:
    return StylizerOutputError(
        f"{_who(stylizer, plugin)} returned an invalid output: {'; '.join(problems)}",
        hint=f"a bug in the stylizer or its weights; `nstzoo stylizers check {stylizer}` tests its contract",
    )


def check_output(stylizer: str, content: torch.Tensor, output: Any, *, plugin: str | None = None) -> torch.Tensor:
    """Verify a stylizer's ``output`` for ``content`` and return it clamped to [0, 1].

    Checks: a floating tensor of shape ``[B,3,H,W]`` equal to the content's batch and size, on the
    content's device, finite, and within [0, 1] up to :func:`range_tolerance`. Reads two numbers
    back to the host (a sync on an accelerator); :class:`OutputGuard` avoids that. A valid output
    costs one pass over its values (``aminmax``: NaN propagates, and an infinity is its own min or
    max, so finite in-range extremes mean a valid output); it is returned as is when already within
    [0, 1], else clamped. Only an invalid one is read again, to name every violation.

    Raises:
        StylizerOutputError: one line naming the stylizer (and plugin) and every violation.
    """
    problems = shape_problems(content, output)
    if not problems and output.numel():
        lo, hi = (float(v) for v in torch.aminmax(output.detach()))
        tolerance = range_tolerance(output.dtype)
        if math.isfinite(lo) and math.isfinite(hi) and -tolerance <= lo and hi <= 1 + tolerance:
            return output if 0.0 <= lo and hi <= 1.0 else output.clamp(0.0, 1.0)
    if not problems:
        problems = value_problems(output_stats(output).tolist(), output.dtype, output.numel())
    if problems:
        raise output_error(stylizer, problems, plugin)
    return output.clamp(0.0, 1.0)


def checked_stylize(stylizer: str, module: nn.Module, content: torch.Tensor, style: torch.Tensor, *,
                    plugin: str | None = None) -> torch.Tensor:
    """``module(content, style)`` with plugin exceptions attributed and the output checked and clamped."""
    with plugin_code(plugin, stylizer, "forward"):
        output = module(content, style)
    return check_output(stylizer, content, output, plugin=plugin)


class OutputGuard:
    """:func:`check_output` for a training loop that must not wait on the device.

    Shapes are checked at once (they are known on the host). The value checks are queued on the
    device and read back only once they have finished (a CUDA event), so an invalid output is reported
    at the first :meth:`poll` after its step completes — one step late at most, never with a stall.
    On the CPU there is nothing to overlap, so everything is checked at once.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[str, torch.Tensor, Any, torch.dtype, int]] = []

    def __call__(self, stylizer: str, content: torch.Tensor, output: Any) -> torch.Tensor:
        """Check ``output`` (values possibly deferred) and return it clamped to [0, 1]."""
        problems = shape_problems(content, output)
        if problems:
            raise output_error(stylizer, problems)
        if output.device.type != "cuda":
            return check_output(stylizer, content, output)
        stats = output_stats(output)
        host = torch.empty(stats.shape, dtype=stats.dtype, pin_memory=True)
        host.copy_(stats, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self._pending.append((stylizer, host, done, output.dtype, output.numel()))
        return output.clamp(0.0, 1.0)

    def poll(self, wait: bool = False) -> None:
        """Raise :class:`StylizerOutputError` for a finished check that failed; ``wait`` finishes all."""
        still: list[tuple[str, torch.Tensor, Any, torch.dtype, int]] = []
        for item in self._pending:
            stylizer, host, done, dtype, numel = item
            if not wait and not done.query():
                still.append(item)
                continue
            done.synchronize()
            problems = value_problems(host.tolist(), dtype, numel)
            if problems:
                self._pending = []
                raise output_error(stylizer, problems)
        self._pending = still


__all__ = ["RANGE_TOLERANCE", "OutputGuard", "check_output", "checked_stylize", "plugin_code", "plugin_of",
           "output_stats", "range_tolerance"]
