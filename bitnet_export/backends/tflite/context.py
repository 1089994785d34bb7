"""State shared by the lowering functions while one hub graph becomes one TFLite subgraph."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.flatbuffer import Quant, TflModelBuilder
from bitnet_export.errors import ExportError, InternalError
from bitnet_export.passes.name_nodes import module_path_of

__all__ = ["Int8Alias", "LoweringContext"]


@dataclass(frozen=True)
class Int8Alias:
    """An ONNX value that exists in the TFLite graph as an int8 tensor (full-integer chain)."""

    index: int
    scale: float
    zero_point: int


@dataclass
class LoweringContext:
    """Maps ONNX IR values to TFLite tensors and resolves the batch dimension.

    Attributes:
        builder: the TFLite model under construction.
        batch: the concrete batch size used for symbolic dimensions (their shape signature is -1).
        weights: weight storage (``int8``, ``int4``, ``int2``).
    """

    builder: TflModelBuilder
    batch: int
    weights: str
    floats: dict[int, int] = field(default_factory=dict)
    int8: dict[int, Int8Alias] = field(default_factory=dict)
    #: nodes already emitted as part of another op (a ReLU fused into a FULLY_CONNECTED)
    fused: set[int] = field(default_factory=set)

    # ------------------------------------------------------------------ shapes
    def shape(self, value: ir.Value) -> tuple[list[int], list[int]]:
        """Concrete shape and shape signature (-1 for symbolic dims) of ``value``."""
        if value.shape is None:
            raise ExportError(
                f"tflite backend: value {value.name!r} has no known shape; TFLite needs static "
                "ranks (export with example inputs of the real rank)"
            )
        dims, sig = [], []
        for d in value.shape:
            if isinstance(d, int):
                dims.append(d)
                sig.append(d)
            else:
                dims.append(self.batch)
                sig.append(-1)
        return dims, sig

    def name(self, node: ir.Node, role: str) -> str:
        """A tensor name under the node's module path."""
        path = module_path_of(node)
        return f"{path}/{role}" if path else role

    # ------------------------------------------------------------------ tensors
    def new_float(self, value: ir.Value, name: str | None = None) -> int:
        """Create the float TFLite tensor of ``value`` and bind it."""
        dims, sig = self.shape(value)
        if name is None:  # "<module>/<Op>:0" after the producing node (named by passes.name_nodes)
            producer = value.producer()
            name = f"{producer.name}:{value.index()}" if producer is not None else str(value.name)
        idx = self.builder.add_tensor(name, dims, "float32", shape_signature=sig)
        self.floats[id(value)] = idx
        return idx

    def constant(self, value: ir.Value, name: str | None = None) -> int:
        """The TFLite constant tensor of an ONNX initializer/constant value."""
        if id(value) in self.floats:
            return self.floats[id(value)]
        if value.const_value is None:
            raise InternalError(f"tflite: {value.name!r} is not a constant")
        arr = value.const_value.numpy()
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        idx = self.builder.add_constant(name or str(value.name), arr)
        self.floats[id(value)] = idx
        return idx

    def float_tensor(self, value: ir.Value, consumer: ir.Node) -> int:
        """The float tensor of ``value``; dequantizes an int8 alias on first use."""
        key = id(value)
        if key in self.floats:
            return self.floats[key]
        if value.const_value is not None:
            return self.constant(value)
        if key in self.int8:
            alias = self.int8[key]
            idx = self.new_float(value, f"{self.builder.tensors[alias.index].name}/dequantized")
            self.builder.add_op("DEQUANTIZE", [alias.index], [idx], _version=2)
            return idx
        raise InternalError(
            f"tflite: value {value.name!r} used by {consumer.name!r} was not produced by any "
            "lowered op (graph not in topological order?)"
        )

    def int8_tensor(self, value: ir.Value, scale: float, zero_point: int, consumer: ir.Node) -> int:
        """An int8 tensor of ``value`` with exactly (scale, zero_point): reused or QUANTIZEd."""
        alias = self.int8.get(id(value))
        if alias is not None and alias.scale == scale and alias.zero_point == zero_point:
            return alias.index
        src = alias.index if alias is not None else self.float_tensor(value, consumer)
        dims, sig = self.shape(value)
        q = Quant([scale], [zero_point])
        idx = self.builder.add_tensor(self.name(consumer, "quantized_input"), dims, "int8", q, sig)
        # float -> int8 QUANTIZE at a float boundary, or int8 -> int8 requantization
        self.builder.add_op("QUANTIZE", [src], [idx], _version=2)
        return idx
