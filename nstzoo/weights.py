"""The weights store: safetensors files with a metadata header, official-checkpoint import, loading.

Layout: ``$NSTZOO_HOME/weights/<name>.safetensors`` (``NSTZOO_HOME`` defaults to
``$XDG_CACHE_HOME/nstzoo`` or ``~/.cache/nstzoo``). Every file nstzoo writes carries a JSON header
under the safetensors metadata key ``"nstzoo"``::

    {"format": 1, "kind": "stylizer" | "encoder", "name": ..., "nstzoo_version": ...,
     "created": ISO-8601, "sources": [{"file": ..., "sha256": ...}], "tensors_sha256": ...,
     "config": {...}}

Official ``.pth`` files are only ever read with ``torch.load(weights_only=True)``: a pickle that
needs to run code is refused. Run time reads safetensors only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import WeightsError
from .files import atomic_write  # noqa: F401 - also the import point for plugins and older callers
from .specs import StateDict, StylizerSpec

METADATA_KEY = "nstzoo"
FORMAT_VERSION = 1


def nstzoo_home() -> Path:
    """``$NSTZOO_HOME``, else ``$XDG_CACHE_HOME/nstzoo``, else ``~/.cache/nstzoo``."""
    if os.environ.get("NSTZOO_HOME"):
        return Path(os.environ["NSTZOO_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "nstzoo"


def weights_dir() -> Path:
    return nstzoo_home() / "weights"


def weights_path(name: str) -> Path:
    """Where the store keeps the weights of stylizer ``name``."""
    return weights_dir() / f"{name}.safetensors"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """A digest of names, dtypes, shapes and bytes, independent of file layout."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _nstzoo_version() -> str:
    from . import __version__

    return __version__


def non_finite(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    """``{key: (NaN count, infinity count)}`` for every floating-point tensor that holds any."""
    found: dict[str, tuple[int, int]] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                found[key] = (int(torch.isnan(value).sum()), int(torch.isinf(value).sum()))
    return found


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinity: they would stylize every image to black, with no error.

    Raises:
        WeightsError: ``source`` (a file, an import) and each offending tensor key with its counts.
    """
    bad = non_finite(state)
    if bad:
        shown = "; ".join(f"{k!r}: {n} NaN, {i} infinite" for k, (n, i) in list(bad.items())[:5])
        more = f" (and {len(bad) - 5} more tensors)" if len(bad) > 5 else ""
        raise WeightsError(f"{source}: non-finite values in {len(bad)} tensor(s) — {shown}{more}",
                           hint="the model diverged during training, or the file is corrupt; "
                                "use an earlier checkpoint or re-import the original files")


def save_safetensors(path: str | os.PathLike, state: Mapping[str, torch.Tensor], *, kind: str, name: str,
                     config: Mapping[str, Any] | None = None, sources: Sequence[Mapping[str, str]] = ()) -> Path:
    """Write ``state`` atomically with nstzoo's metadata header; returns the path.

    Raises:
        WeightsError: a tensor holds NaN or infinity (nothing is written).
    """
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    check_finite(tensors, f"refusing to write {path}")
    header = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "nstzoo_version": _nstzoo_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "sources": list(sources),
        "tensors_sha256": tensors_sha256(tensors),
        "config": dict(config or {}),
    }
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(header)}))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The nstzoo header of a safetensors file ({} for foreign files)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    if METADATA_KEY not in meta:
        return {}
    try:
        return json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: corrupt nstzoo metadata header ({exc})") from exc


def load_safetensors(path: str | os.PathLike, *, allow_non_finite: bool = False) -> tuple[StateDict, dict[str, Any]]:
    """``(state_dict, nstzoo_metadata)`` from a safetensors file.

    Raises:
        WeightsError: missing or unreadable file, or (unless ``allow_non_finite``, which
            :func:`verify_file` uses to report it) a tensor holding NaN or infinity.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    meta = read_metadata(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: cannot read tensors ({exc})") from exc
    if not allow_non_finite:
        check_finite(state, str(path))
    return state, meta


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Read an official checkpoint safely: safetensors, or ``torch.load(weights_only=True)``.

    Raises :class:`WeightsError` naming the file if it is missing, unreadable, or a pickle that
    would need to execute code.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path)[0]
    if not _looks_like_torch_save(path):
        # torch.load's unpickler reports any non-pickle as an UnpicklingError (or a bare KeyError), which
        # would read as "needs to execute code"; say what the file really is not.
        raise WeightsError(f"{path}: not a PyTorch checkpoint (neither the zip archive nor the pickle that "
                           "torch.save writes)", hint="check that this is the right file (an image, an ONNX "
                           "model or an HTML error page saved as .pth will not do)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickling_detail(exc)
        # A forbidden GLOBAL is an import the pickle would execute. An unsupported opcode (e.g. the
        # FRAME of pickle protocol 4) stops the safe loader before it sees what follows: say both.
        why = ("the pickle needs to execute code, which nstzoo never allows" if "GLOBAL" in detail else
               "the safe loader cannot read this pickle (it may need to execute code, or use a pickle "
               "protocol torch.load(weights_only=True) does not support)")
        raise WeightsError(
            f"{path}: refused to load — {why} (torch.load weights_only=True): {detail}",
            hint="re-save it as a plain state dict (torch.save(model.state_dict(), ...)) in an environment you trust",
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        # KeyError / IndexError / EOFError: how the weights-only unpickler fails on a truncated pickle.
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc


def _looks_like_torch_save(path: Path) -> bool:
    """True for what ``torch.save`` writes: a zip archive, a protocol-2+ pickle, or the pre-1.6 tar."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return (head[:1] == b"\x80" and len(head) == 2 and head[1] >= 2) or zipfile.is_zipfile(path) or tarfile.is_tarfile(path)


def _unpickling_detail(exc: BaseException) -> str:
    """The informative line of torch's long weights-only error (which global or opcode it refused)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line
    return lines[0] if lines else type(exc).__name__


def unwrap_state_dict(obj: Any, path: str | os.PathLike = "<checkpoint>") -> StateDict:
    """The tensor mapping inside a checkpoint (plain, or under 'state_dict' / 'model' / 'net')."""
    for key in ("state_dict", "model", "net", "params"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a mapping of parameter names to tensors, got {type(obj).__name__}")
    return dict(obj)


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """Remove ``prefix`` from every key that has it (e.g. ``module.`` from DataParallel checkpoints)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names every missing, unexpected or misshapen key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = sorted(f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
                       for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or misshapen:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", misshapen)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise WeightsError(f"{source}: weights do not match the architecture — " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def import_official(spec: StylizerSpec, files: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> Path:
    """Convert the authors' checkpoint files into one safetensors file in the store.

    The converted state dict is loaded strictly into a freshly built module before it is written,
    so a file in the store always matches the architecture.
    """
    if spec.import_official is None:
        raise WeightsError(f"stylizer {spec.name!r} has no official-checkpoint importer"
                           + ("" if spec.needs_weights else " (it needs no weights)"))
    from .contract import plugin_code

    paths = [Path(f) for f in files]
    for p in paths:
        if not p.is_file():
            raise WeightsError(f"file not found: {p}", hint=f"expected files: {' '.join(spec.weight_files)}")
    with plugin_code(None, spec.name, "import_official"):
        state = spec.import_official(paths)
    check_finite(state, f"import of {spec.name!r} from {', '.join(str(p) for p in paths)}")
    with plugin_code(None, spec.name, "factory"):
        module = spec.factory(**dict(spec.default_options))
    load_state_strict(module, state, f"import of {spec.name!r} from {', '.join(p.name for p in paths)}")
    sources = [{"file": p.name, "sha256": sha256_file(p)} for p in paths]
    target = Path(out) if out is not None else weights_path(spec.name)
    return save_safetensors(target, module.state_dict(), kind="stylizer", name=spec.name,
                            config=dict(spec.default_options), sources=sources)


def locate_official(spec: StylizerSpec) -> list[Path]:
    """The official files of ``spec`` installed on this machine ([] when none or no locator)."""
    from .contract import plugin_code

    if spec.locate_official is None:
        return []
    with plugin_code(None, spec.name, "locate_official"):
        return [Path(p) for p in spec.locate_official() or []]


def missing_weights_error(spec: StylizerSpec, path: Path) -> WeightsError:
    if locate_official(spec):
        return WeightsError(f"stylizer {spec.name!r} needs weights, none found at {path}",
                            hint=f"its official files are installed on this machine: run `nstzoo weights import {spec.name}`")
    files = " ".join(spec.weight_files) or "FILE..."
    how = (f"get the official files ({', '.join(spec.weight_files)}"
           + (f" from {spec.weights_source}" if spec.weights_source else "") + f") and run: "
           f"nstzoo weights import {spec.name} {files}") if spec.import_official else (
        f"train them (nstzoo stylizers train {spec.name} ...) or obtain them: {spec.weights_source}")
    return WeightsError(f"stylizer {spec.name!r} needs weights, none found at {path}",
                        hint=how + "; or pass --random-init for pipeline tests")


def load_stylizer(name: str, *, device: str | torch.device | None = None, weights: str | os.PathLike | None = None,
                  random_init: bool = False, registry: Any = None, **options: Any) -> nn.Module:
    """Build stylizer ``name`` with its weights, frozen and in eval mode.

    Args:
        name: a registered stylizer name.
        device: where to put the module (default CPU).
        weights: a safetensors file to use instead of the store's ``<name>.safetensors``.
        random_init: allow running with random weights when none are found (pipeline tests only).
        options: factory keyword arguments, overriding the spec's defaults.
    """
    from .contract import plugin_code
    from .registry import get_registry

    registry = registry or get_registry()
    spec = registry.stylizer(name)
    stored_config: dict[str, Any] = {}
    state = None
    if spec.needs_weights:
        path = Path(weights) if weights is not None else weights_path(name)
        if path.is_file():
            state, meta = load_safetensors(path)
            if meta and meta.get("name") not in (None, name):
                raise WeightsError(f"{path}: holds weights of {meta.get('name')!r}, not {name!r}")
            stored_config = dict(meta.get("config", {})) if meta else {}
        elif not random_init:
            raise missing_weights_error(spec, path)
    with plugin_code(registry.stylizer_plugin(name), name, "factory"):
        module = spec.factory(**{**dict(spec.default_options), **stored_config, **options})
    if state is not None:
        load_state_strict(module, state, str(path))
    module.eval().requires_grad_(False)
    return module.to(device) if device is not None else module


def load_encoder(weights: str | os.PathLike, *, device: str | torch.device | None = None,
                 registry: Any = None) -> nn.Module:
    """Rebuild an exported encoder from its safetensors file (the config travels in the header).

    Returns the module in eval mode; ``module(images)`` maps ``[B,3,H,W]`` in [0, 1] to
    L2-normalised ``[B, D]`` embeddings.
    """
    from .registry import get_registry

    path = Path(weights)
    state, meta = load_safetensors(path)
    if meta.get("kind") != "encoder":
        raise WeightsError(f"{path}: not an nstzoo encoder export (kind={meta.get('kind')!r})",
                           hint="export one with: nstzoo export RUN_DIR -o FILE.safetensors")
    config = dict(meta.get("config", {}))
    name = config.pop("encoder", meta.get("name"))
    module = (registry or get_registry()).build_encoder(name, config.get("options", {}))
    load_state_strict(module, state, str(path))
    module.eval()
    return module.to(device) if device is not None else module


def verify_file(path: str | os.PathLike) -> list[str]:
    """Problems found in one stored file ([] when it is sound): header, digest, finiteness."""
    problems: list[str] = []
    try:
        state, meta = load_safetensors(path, allow_non_finite=True)
    except WeightsError as exc:
        return [str(exc)]
    if not meta:
        return [f"{path}: no nstzoo metadata header"]
    if meta.get("tensors_sha256") != tensors_sha256(state):
        problems.append(f"{path}: tensor digest differs from the header (file modified or corrupt)")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        problems.append(f"{path}: non-finite values in {', '.join(bad[:5])}")
    return problems


def stored_weights() -> list[dict[str, Any]]:
    """One entry per file in the store: name, path, size, kind, sources, created."""
    entries = []
    for path in sorted(weights_dir().glob("*.safetensors")):
        try:
            meta = read_metadata(path)
        except WeightsError as exc:
            meta = {"error": str(exc)}
        entries.append({
            "name": meta.get("name", path.stem), "path": str(path), "bytes": path.stat().st_size,
            "kind": meta.get("kind"), "created": meta.get("created"), "sources": meta.get("sources", []),
            **({"error": meta["error"]} if "error" in meta else {}),
        })
    return entries
