"""State shared by the lowering functions while one hub graph becomes one TFLite subgraph.

Values and layouts: every ONNX value is bound to a TFLite tensor. Most tensors hold the value
in its ONNX layout; a layout-sensitive lowering (a convolution: ONNX NCHW, TFLite NHWC) may
bind its output *transposed*, ``tflite = numpy.transpose(onnx, perm)``. Lowerings that do not
care about layout (elementwise ops) keep the layout of their inputs; every other lowering asks
:meth:`LoweringContext.tensor` for the ONNX layout, which emits one TRANSPOSE the first time
and reuses it. Transposes therefore appear only where an NHWC region meets an op that needs
the ONNX layout (at the region's edges), never around every op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import onnx_ir as ir

from bitnet_export.backends.tflite.flatbuffer import Quant, TflModelBuilder
from bitnet_export.errors import ExportError, InternalError
from bitnet_export.passes.name_nodes import module_path_of

__all__ = [
    "NCHW_TO_NHWC",
    "Int8Alias",
    "LoweringContext",
    "Perm",
    "channels_last",
    "inverse",
    "node_input",
    "tflite_dtype",
]

#: ``perm`` of a tensor stored transposed: ``tflite = numpy.transpose(onnx, perm)``.
Perm = tuple[int, ...]
#: The layout of 4-D convolution tensors in TFLite.
NCHW_TO_NHWC: Final[Perm] = (0, 2, 3, 1)

#: ONNX element types -> TFLite tensor types (float64 is narrowed to float32 at export).
_DTYPES: Final = {
    ir.DataType.FLOAT: "float32",
    ir.DataType.DOUBLE: "float32",
    ir.DataType.FLOAT16: "float16",
    ir.DataType.INT64: "int64",
    ir.DataType.INT32: "int32",
    ir.DataType.INT16: "int16",
    ir.DataType.INT8: "int8",
    ir.DataType.UINT8: "uint8",
    ir.DataType.BOOL: "bool",
}


def tflite_dtype(value: ir.Value) -> str:
    """The TFLite tensor type of an ONNX value (``float32`` when the hub does not say)."""
    if value.dtype is None:
        return "float32"
    dtype = _DTYPES.get(value.dtype)
    if dtype is None:
        raise ExportError(
            f"tflite backend: value {value.name!r} has element type {value.dtype.name}, which "
            "TFLite cannot hold; cast it to float32 or int32 in the model"
        )
    return dtype


def node_input(node: ir.Node, i: int) -> ir.Value:
    """Input ``i`` of ``node``; an absent one is an :class:`ExportError` naming the node."""
    v = node.inputs[i] if i < len(node.inputs) else None
    if v is None:
        raise ExportError(f"tflite backend: {node.op_type} node {node.name!r} lacks input {i}")
    return v


def _is_identity(perm: Perm | None) -> bool:
    return perm is None or tuple(perm) == tuple(range(len(perm)))


def _layout_free(value: ir.Value, rank: int) -> bool:
    """One element (``[]``, ``[1, 1]``), or ``[N, 1, ..., 1]`` of the op's full ``rank``: the same
    tensor in any layout that keeps axis 0 first (as channels-last does)."""
    if value.shape is None:
        return False
    dims = list(value.shape)
    ones = [isinstance(d, int) and d == 1 for d in dims]
    return all(ones) or (len(dims) == rank and all(ones[1:]))


def channels_last(rank: int) -> Perm:
    """The perm that moves axis 1 (ONNX channels) last: ``(0, 2, ..., rank-1, 1)``."""
    return (0, *range(2, rank), 1)


def inverse(perm: Perm) -> Perm:
    """The permutation that undoes ``perm``."""
    return tuple(int(i) for i in np.argsort(perm))


@dataclass(frozen=True)
class Int8Alias:
    """An ONNX value that exists in the TFLite graph as an int8 tensor (full-integer chain)."""

    index: int
    scale: float
    zero_point: int


@dataclass
class LoweringContext:
    """Maps ONNX IR values to TFLite tensors (and their layouts); resolves symbolic dimensions.

    Attributes:
        builder: the TFLite model under construction.
        batch: the concrete batch size used for symbolic dimensions (their shape signature is -1).
        weights: weight storage (``int8``, ``int4``, ``int2``).
        floats: value id -> tensor index, in the value's ONNX layout (any dtype).
        transposed: value id -> (tensor index, perm) for values held in another layout.
        int8: value id -> int8 alias (full-integer chains).
        fused: nodes already emitted as part of another op (a ReLU fused into a FULLY_CONNECTED).
    """

    builder: TflModelBuilder
    batch: int
    weights: str
    #: dynamic BitLinear: ``kernel`` (the hybrid FC kernel quantizes rows) or ``graph`` (the
    #: per-token quantization as graph ops, for delegates whose FC computes in float)
    activation_quant: str = "kernel"
    floats: dict[int, int] = field(default_factory=dict)
    transposed: dict[int, tuple[int, Perm]] = field(default_factory=dict)
    int8: dict[int, Int8Alias] = field(default_factory=dict)
    fused: set[int] = field(default_factory=set)
    #: static layers whose int8 output leaves the chain at their own calibrated range:
    #: module path -> (scale, zero point), recorded in the file for the parity reference
    requantized: dict[str, tuple[float, int]] = field(default_factory=dict)
    _views: dict[tuple[int, Perm], int] = field(default_factory=dict)

    # ------------------------------------------------------------------ shapes
    def shape(self, value: ir.Value) -> tuple[list[int], list[int]]:
        """Concrete shape and shape signature (-1 for symbolic dims) of ``value`` (ONNX layout)."""
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
    def new_tensor(
        self,
        value: ir.Value,
        name: str | None = None,
        perm: Perm | None = None,
        dtype: str | None = None,
    ) -> int:
        """Create the TFLite tensor of ``value`` (stored transposed by ``perm``) and bind it."""
        dims, sig = self.shape(value)
        if not _is_identity(perm):
            assert perm is not None
            dims, sig = [dims[i] for i in perm], [sig[i] for i in perm]
        if name is None:  # "<module>/<Op>:0" after the producing node (named by passes.name_nodes)
            producer = value.producer()
            name = f"{producer.name}:{value.index()}" if producer is not None else str(value.name)
        idx = self.builder.add_tensor(name, dims, dtype or tflite_dtype(value), shape_signature=sig)
        self.bind(value, idx, perm)
        return idx

    def new_float(self, value: ir.Value, name: str | None = None) -> int:
        """Create the float32 TFLite tensor of ``value`` in its ONNX layout and bind it."""
        return self.new_tensor(value, name, dtype="float32")

    def bind(self, value: ir.Value, index: int, perm: Perm | None = None) -> None:
        """Record that tensor ``index`` holds ``value`` (transposed by ``perm``)."""
        if _is_identity(perm):
            self.floats[id(value)] = index
        else:
            assert perm is not None
            self.transposed[id(value)] = (index, tuple(perm))

    def alias(self, value: ir.Value, source: ir.Value) -> None:
        """Bind ``value`` to every tensor (and layout) ``source`` is held in (Identity-like ops)."""
        src, dst = id(source), id(value)
        if src in self.floats:
            self.floats[dst] = self.floats[src]
        if src in self.transposed:
            self.transposed[dst] = self.transposed[src]
        if src in self.int8:
            self.int8[dst] = self.int8[src]

    def layout(self, value: ir.Value) -> Perm | None:
        """The perm ``value`` is held in when it exists only transposed, else ``None``."""
        if id(value) in self.floats or id(value) in self.int8 or value.const_value is not None:
            return None
        held = self.transposed.get(id(value))
        return held[1] if held is not None else None

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

    def tensor(self, value: ir.Value, consumer: ir.Node, perm: Perm | None = None) -> int:
        """The tensor of ``value`` in the layout ``perm`` (``None``: its ONNX layout).

        A constant is transposed at export; a tensor held in another layout gets one
        TRANSPOSE (emitted once per value and layout, then reused); an int8 alias is
        dequantized on first use.
        """
        key = id(value)
        if _is_identity(perm):
            if key in self.floats:
                return self.floats[key]
            if value.const_value is not None:
                return self.constant(value)
            if key in self.int8:
                alias = self.int8[key]
                idx = self.new_float(value, f"{self.builder.tensors[alias.index].name}/dequantized")
                self.builder.add_op("DEQUANTIZE", [alias.index], [idx], _version=2)
                return idx
            if key in self.transposed:
                src, held = self.transposed[key]
                idx = self._transpose(value, src, inverse(held), None)
                self.floats[key] = idx
                return idx
            raise InternalError(
                f"tflite: value {value.name!r} used by {consumer.name!r} was not produced by any "
                "lowered op (graph not in topological order?)"
            )
        assert perm is not None
        perm = tuple(perm)
        if key in self.transposed and self.transposed[key][1] == perm:
            return self.transposed[key][0]
        if (key, perm) in self._views:
            return self._views[(key, perm)]
        if value.const_value is not None:
            arr = value.const_value.numpy()
            arr = arr.astype(np.float32) if arr.dtype == np.float64 else arr
            idx = self.builder.add_constant(f"{value.name}/transposed", np.transpose(arr, perm).copy())
        else:
            idx = self._transpose(value, self.tensor(value, consumer), perm, perm)
        self._views[(key, perm)] = idx
        return idx

    def common_layout(self, values: list[ir.Value | None], rank: int) -> Perm | None:
        """The layout a layout-agnostic op (elementwise, Pad) should compute ``values`` in.

        The perm one of the runtime (non-constant) inputs is held in, when every runtime input
        has ``rank`` dimensions and none is held in another perm; else ``None`` (ONNX layout).
        Constants broadcast in any layout (see :meth:`operand`), and so do ``[N, 1, ..., 1]``
        values. Keeping the layout of the inputs is what keeps an NHWC region free of
        transposes.
        """
        found: Perm | None = None
        for v in values:
            if v is None or v.const_value is not None or _layout_free(v, rank):
                continue
            if v.shape is None or len(v.shape) != rank:
                return None
            p = self.layout(v)
            if p is None:
                continue
            if found is not None and found != p:
                return None
            found = p
        return found

    def operand(self, value: ir.Value, consumer: ir.Node, perm: Perm | None, rank: int) -> int:
        """``value`` as a broadcasting operand of a ``rank``-D op computed in layout ``perm``.

        Runtime values come through :meth:`tensor`; a constant with more than one element is
        reshaped to ``rank`` dims (numpy broadcasting prepends ones) and transposed at export.
        """
        if (
            perm is None
            or _is_identity(perm)
            or (value.const_value is None and _layout_free(value, rank) and perm[0] == 0)
        ):
            return self.tensor(value, consumer)  # [N, 1, .., 1] is the same in both layouts
        if value.const_value is None:
            return self.tensor(value, consumer, perm)
        assert perm is not None
        arr = value.const_value.numpy()
        if arr.size == 1:
            return self.tensor(value, consumer)
        key = (id(value), tuple(perm))
        if key not in self._views:
            arr = arr.astype(np.float32) if arr.dtype == np.float64 else arr
            arr = np.transpose(arr.reshape((1,) * (rank - arr.ndim) + arr.shape), perm).copy()
            self._views[key] = self.builder.add_constant(f"{value.name}/transposed", arr)
        return self._views[key]

    def float_tensor(self, value: ir.Value, consumer: ir.Node) -> int:
        """The tensor of ``value`` in its ONNX layout (see :meth:`tensor`)."""
        return self.tensor(value, consumer)

    def _transpose(self, value: ir.Value, src: int, perm: Perm, out_perm: Perm | None) -> int:
        """TRANSPOSE tensor ``src`` by ``perm``; the result holds ``value`` in ``out_perm``."""
        dims, sig = self.shape(value)
        if out_perm is not None:
            dims, sig = [dims[i] for i in out_perm], [sig[i] for i in out_perm]
        src_t = self.builder.tensors[src]
        src_name, dtype = src_t.name, src_t.dtype
        idx = self.builder.add_tensor(f"{src_name}/transposed", dims, dtype, shape_signature=sig)
        src_sig = [0] * len(perm)
        for i, a in enumerate(perm):  # out[i] = src[perm[i]]; symbolic dims (-1) count as moving
            src_sig[a] = sig[i]
        moved = [a for a in perm if src_sig[a] != 1]
        if moved == sorted(moved):  # only size-1 dims change place: the same bytes, reshaped
            shape_t = self.builder.add_constant(f"{src_name}/shape", np.array(sig, dtype=np.int32))
            self.builder.add_op("RESHAPE", [src, shape_t], [idx], newShape=list(sig))
            return idx
        perm_t = self.builder.add_constant(f"{src_name}/perm", np.array(perm, dtype=np.int32))
        self.builder.add_op("TRANSPOSE", [src, perm_t], [idx])
        return idx

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
