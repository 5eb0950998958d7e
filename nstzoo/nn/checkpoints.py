"""Reading official checkpoint files and telling them apart by their keys.

Official releases are sets of loose ``.pth`` files whose names users rename freely, so importers
recognise each file by what it holds, not by its name or argument position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from torch import Tensor

from ..errors import WeightsError
from ..weights import read_checkpoint, strip_prefix, unwrap_state_dict
from .decoder import DECODER_CONV_SLOTS

StateDict = dict[str, Tensor]
Recogniser = Callable[[Path, StateDict], bool]


def read_official_state(path: Path) -> StateDict:
    """The tensor mapping of a checkpoint (``weights_only=True``), without a DataParallel ``module.`` prefix."""
    state = unwrap_state_dict(read_checkpoint(path), path)
    return strip_prefix(state, "module.")


def identify_files(paths: Sequence[Path], roles: Mapping[str, Recogniser],
                   expected_names: Mapping[str, str]) -> dict[str, tuple[Path, StateDict]]:
    """Match each file to exactly one role by its contents, in any argument order.

    Args:
        paths: the files the user passed.
        roles: role -> ``recognise(path, state)``; the first role that claims a file gets it.
        expected_names: role -> the official file name, for messages.

    Raises:
        WeightsError: a file no role recognises, two files for one role, or a role left without a file.
    """
    found: dict[str, tuple[Path, StateDict]] = {}
    for path in paths:
        state = read_official_state(path)
        role = next((r for r, recognise in roles.items() if recognise(path, state)), None)
        if role is None:
            sample = ", ".join(sorted(state)[:4])
            raise WeightsError(f"{path}: not recognised as any of {', '.join(expected_names.values())} "
                               f"(first keys: {sample or 'none'})")
        if role in found:
            raise WeightsError(f"{path} and {found[role][0]} both look like {expected_names[role]}; pass it once")
        found[role] = (path, state)
    missing = [expected_names[r] for r in roles if r not in found]
    if missing:
        raise WeightsError(f"missing official file(s): {', '.join(missing)}",
                           hint=f"pass all of: {' '.join(expected_names.values())}")
    return found


def decoder_keys(prefix: str = "") -> list[str]:
    """The 18 keys of the AdaIN decoder, optionally prefixed (CAST saves them under ``decoder.``)."""
    return [f"{prefix}{slot}.{p}" for slot in DECODER_CONV_SLOTS for p in ("weight", "bias")]


def remap_exact(state: Mapping[str, Tensor], mapping: Mapping[str, str], source: Path | str) -> StateDict:
    """Rename keys by ``mapping`` (official key -> project key); every key must be present, none extra.

    A missing or unexpected key is a :class:`WeightsError` naming the key and ``source``.
    """
    missing = [k for k in mapping if k not in state]
    unexpected = sorted(k for k in state if k not in mapping)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing key(s) " + ", ".join(missing[:8]))
        if unexpected:
            parts.append("unexpected key(s) " + ", ".join(unexpected[:8]))
        raise WeightsError(f"{source}: " + "; ".join(parts))
    return {mapping[k]: state[k] for k in mapping}


def prefixed(state: Mapping[str, Tensor], prefix: str) -> StateDict:
    return {prefix + k: v for k, v in state.items()}


__all__ = ["read_official_state", "identify_files", "decoder_keys", "remap_exact", "prefixed"]
