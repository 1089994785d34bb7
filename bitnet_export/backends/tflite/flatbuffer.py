"""The TFLite serializer: the only module that touches the TFLite schema.

:class:`TflModelBuilder` collects tensors, buffers and operators in plain Python, then
:meth:`TflModelBuilder.to_bytes` builds the flatbuffer through the object API of
``ai_edge_litert.schema_py_generated`` (the only writable TFLite schema, see FIELD_NOTES).
:func:`read_model` parses a ``.tflite`` file back for tests, ``inspect`` and ``verify``.

Low-bit tensors: INT4 (TensorType 17) and INT2 (19) buffers are packed low bits first,
element 0 in bits 0..k-1 of byte 0 (as ONNX). LiteRT does not check buffer sizes, so
:meth:`TflModelBuilder.add_constant` checks every packed buffer against its shape itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from bitnet_export.errors import ExportError, InternalError

__all__ = [
    "BUILTIN",
    "TENSOR_TYPES",
    "ParsedModel",
    "ParsedTensor",
    "Quant",
    "TflModelBuilder",
    "pack_low_bits",
    "packed_size",
    "read_metadata",
    "read_model",
    "serialize_signatures",
]

#: Builtin operator codes by name (every builtin of the schema; lowerings pick by name).
BUILTIN: Final = {
    name: code for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")
}

#: TensorType codes by numpy-ish name (INT4=17, INT2=19 in LiteRT 2.3).
TENSOR_TYPES: Final = {
    "float32": schema.TensorType.FLOAT32,
    "int32": schema.TensorType.INT32,
    "int64": schema.TensorType.INT64,
    "int8": schema.TensorType.INT8,
    "uint8": schema.TensorType.UINT8,
    "int16": schema.TensorType.INT16,
    "float16": schema.TensorType.FLOAT16,
    "bool": schema.TensorType.BOOL,
    "int4": schema.TensorType.INT4,
    "int2": schema.TensorType.INT2,
}
_TYPE_NAMES: Final = {v: k for k, v in TENSOR_TYPES.items()}
_BITS: Final = {"int4": 4, "int2": 2}

#: Above this many bytes of weights, constant buffers go after the flatbuffer.
EXTERNAL_WEIGHTS_THRESHOLD: Final = 1_900_000_000
_ALIGN: Final = 64


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


#: Operators whose options table is not named after the operator (``MEAN`` -> ReducerOptions).
_OPTION_TABLES: Final = {
    "MEAN": "ReducerOptions",
    "SUM": "ReducerOptions",
    "REDUCE_MAX": "ReducerOptions",
    "REDUCE_MIN": "ReducerOptions",
    "REDUCE_PROD": "ReducerOptions",
    "REDUCE_ANY": "ReducerOptions",
    "REDUCE_ALL": "ReducerOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "L2_POOL_2D": "Pool2DOptions",
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "TRANSPOSE_CONV": "TransposeConvOptions",
    "GATHER_ND": "GatherNdOptions",
    "LOGICAL_AND": "LogicalAndOptions",
    "LOGICAL_OR": "LogicalOrOptions",
    "LOGICAL_NOT": "LogicalNotOptions",
    "SELECT_V2": "SelectV2Options",
    "SPLIT_V": "SplitVOptions",
    "PADV2": "PadV2Options",
    "CUMSUM": "CumsumOptions",
    "CONV_3D": "Conv3DOptions",
    "CONV_3D_TRANSPOSE": "Conv3DOptions",
    "BATCH_MATMUL": "BatchMatMulOptions",
}


def _options_table(kind: str) -> tuple[int, Any] | None:
    """``(BuiltinOptions code, options class)`` of ``kind``, or ``None`` for an option-less op."""
    name = _OPTION_TABLES.get(kind)
    if name is None:  # FULLY_CONNECTED -> FullyConnectedOptions, BATCH_MATMUL -> BatchMatMulOptions
        name = "".join(part.capitalize() for part in kind.split("_")) + "Options"
    code = getattr(schema.BuiltinOptions, name, None)
    cls = getattr(schema, name + "T", None)
    if code is None or cls is None:
        return None
    return code, cls


@dataclass(frozen=True)
class Quant:
    """Quantization of one tensor: scales (one, or one per ``axis`` slice) and zero points."""

    scale: Sequence[float]
    zero_point: Sequence[int]
    axis: int = 0


def packed_size(count: int, bits: int) -> int:
    """Bytes of ``count`` values packed at ``bits`` bits (rounded up)."""
    return (count * bits + 7) // 8


def pack_low_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack signed integers into ``bits``-bit fields, element 0 in the lowest bits of byte 0."""
    flat = values.astype(np.int16).reshape(-1)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise InternalError(f"pack_low_bits: values outside {lo}..{hi} for {bits} bits")
    per = 8 // bits
    padded = np.zeros(packed_size(flat.size, bits) * per, dtype=np.uint8)
    padded[: flat.size] = (flat & ((1 << bits) - 1)).astype(np.uint8)
    grouped = padded.reshape(-1, per)
    out = np.zeros(grouped.shape[0], dtype=np.uint8)
    for i in range(per):
        out |= (grouped[:, i] << (bits * i)).astype(np.uint8)
    return out.tobytes()


@dataclass
class _Tensor:
    name: str
    shape: list[int]
    dtype: str
    buffer: int
    quant: Quant | None
    shape_signature: list[int] | None


@dataclass
class _Op:
    name: str
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: Mapping[str, Any]


@dataclass
class TflModelBuilder:
    """A single-subgraph TFLite model under construction (plain Python, no flatbuffers yet)."""

    description: str = "bitnet_export"
    tensors: list[_Tensor] = field(default_factory=list)
    buffers: list[bytes] = field(default_factory=lambda: [b""])  # buffer 0: the empty sentinel
    ops: list[_Op] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    metadata: dict[str, bytes] = field(default_factory=dict)

    def add_tensor(
        self,
        name: str,
        shape: Sequence[int],
        dtype: str = "float32",
        quant: Quant | None = None,
        shape_signature: Sequence[int] | None = None,
    ) -> int:
        """A tensor without data (activation); returns its index."""
        if dtype not in TENSOR_TYPES:
            raise InternalError(f"tflite: unknown tensor type {dtype}")
        self.tensors.append(
            _Tensor(name, list(shape), dtype, 0, quant, list(shape_signature) if shape_signature else None)
        )
        return len(self.tensors) - 1

    def add_constant(
        self, name: str, array: np.ndarray, dtype: str | None = None, quant: Quant | None = None
    ) -> int:
        """A constant tensor with its own buffer; ``int4``/``int2`` are packed and size-checked."""
        dtype = dtype or str(array.dtype)
        if dtype in _BITS:
            data = pack_low_bits(array, _BITS[dtype])
            want = packed_size(array.size, _BITS[dtype])
            if len(data) != want:  # LiteRT would run a wrong size silently: never emit one
                raise InternalError(f"tflite: {name}: packed {len(data)} bytes, expected {want}")
        else:
            data = np.ascontiguousarray(array.astype(dtype)).tobytes()
        self.buffers.append(data)
        self.tensors.append(_Tensor(name, list(array.shape), dtype, len(self.buffers) - 1, quant, None))
        return len(self.tensors) - 1

    def add_op(
        self,
        kind: str,
        inputs: Sequence[int],
        outputs: Sequence[int],
        name: str | None = None,
        **options: Any,
    ) -> None:
        """Append a builtin operator (``kind`` is a key of :data:`BUILTIN`); -1 is an absent input."""
        if kind not in BUILTIN:
            raise InternalError(f"tflite: operator {kind} is not in the backend's list")
        self.ops.append(_Op(name or "", kind, list(inputs), list(outputs), options))

    # ------------------------------------------------------------------ serialization
    def to_bytes(self, weights_after: bool | None = None) -> bytes:
        """Serialize to a ``.tflite`` file's bytes.

        Args:
            weights_after: store constant buffers after the flatbuffer (``Buffer.offset/size``,
                offsets from the file start), as models over 2 GiB must: the flatbuffers
                builder cannot exceed 2^31 bytes. ``None``: only when the weights need it.
        """
        total = sum(len(b) for b in self.buffers)
        if weights_after is None:
            weights_after = total > EXTERNAL_WEIGHTS_THRESHOLD
        if not weights_after:
            return self._serialize({})
        big = [i for i, b in enumerate(self.buffers) if len(b) >= 16]
        # 1) placeholder offsets (non-zero, so the fields are written), 2) the real ones: the
        # uint64 fields keep their width, so the flatbuffer's length does not change
        placeholder = {i: (1, len(self.buffers[i])) for i in big}
        head = self._serialize(placeholder)
        offsets, cursor = {}, _align(len(head))
        for i in big:
            offsets[i] = (cursor, len(self.buffers[i]))
            cursor = _align(cursor + len(self.buffers[i]))
        head = self._serialize(offsets)
        if big and _align(len(head)) != offsets[big[0]][0]:
            raise InternalError("tflite: flatbuffer length changed between the two passes")
        out = bytearray(head)
        for i in big:
            out += b"\0" * (offsets[i][0] - len(out))
            out += self.buffers[i]
        return bytes(out)

    def _serialize(self, external: Mapping[int, tuple[int, int]]) -> bytes:
        """The flatbuffer; buffers in ``external`` get ``offset/size`` instead of inline data."""
        return _pack([("serving_default", self)], self.metadata, self.description, external)


def serialize_signatures(
    signatures: Sequence[tuple[str, TflModelBuilder]], metadata: Mapping[str, bytes], description: str
) -> bytes:
    """One ``.tflite`` file with one subgraph and SignatureDef per ``(key, builder)``.

    Constant buffers with equal bytes are stored once and shared by every subgraph (the
    weights of a prefill and a decode signature), so the file holds each weight once.
    """
    return _pack(signatures, metadata, description, {}, share=True)


def _subgraph(
    b: TflModelBuilder, buffer_of: Sequence[int], codes: dict[tuple[int, int], int], model: Any
) -> Any:
    sub = schema.SubGraphT()
    sub.name = "main"
    sub.tensors = []
    for t in b.tensors:
        tt = schema.TensorT()
        tt.name = t.name
        tt.shape = list(t.shape)
        tt.type = TENSOR_TYPES[t.dtype]
        tt.buffer = buffer_of[t.buffer]
        if t.shape_signature is not None:
            tt.shapeSignature = list(t.shape_signature)
        if t.quant is not None:
            q = schema.QuantizationParametersT()
            q.scale = [float(s) for s in t.quant.scale]
            q.zeroPoint = [int(z) for z in t.quant.zero_point]
            q.quantizedDimension = t.quant.axis
            tt.quantization = q
        sub.tensors.append(tt)
    sub.operators = []
    for op in b.ops:
        code = BUILTIN[op.kind]
        version = int(op.options.get("_version", 1))
        key = (code, version)
        if key not in codes:
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = version
            codes[key] = len(model.operatorCodes)
            model.operatorCodes.append(oc)
        o = schema.OperatorT()
        o.opcodeIndex = codes[key]
        o.inputs = list(op.inputs)
        o.outputs = list(op.outputs)
        table = _options_table(op.kind)
        if table is not None:
            opt_type, opt_cls = table
            opts = opt_cls()
            for k, v in op.options.items():
                if k.startswith("_"):
                    continue
                if not hasattr(opts, k):
                    raise InternalError(f"tflite: {op.kind} has no option {k}")
                setattr(opts, k, v)
            o.builtinOptionsType = opt_type
            o.builtinOptions = opts
        sub.operators.append(o)
    sub.inputs = list(b.inputs)
    sub.outputs = list(b.outputs)
    return sub


def _pack(
    signatures: Sequence[tuple[str, TflModelBuilder]],
    metadata: Mapping[str, bytes],
    description: str,
    external: Mapping[int, tuple[int, int]],
    share: bool = False,
) -> bytes:
    """Serialize subgraphs (one per signature) over one buffer list."""
    if external and (share or len(signatures) != 1):
        raise InternalError("tflite: weights after the flatbuffer are written for one subgraph only")
    model = schema.ModelT()
    model.version = 3
    model.description = description
    model.operatorCodes = []
    codes: dict[tuple[int, int], int] = {}
    buffers: list[bytes] = [b""]
    source: list[int] = [0]  # merged buffer -> index in the first builder that had it (external)
    seen: dict[bytes, int] = {}
    model.subgraphs = []
    model.signatureDefs = []
    for g, (key, b) in enumerate(signatures):
        buffer_of = [0]
        for i, data in enumerate(b.buffers[1:], start=1):
            if share and data and data in seen:
                buffer_of.append(seen[data])
                continue
            buffers.append(data)
            source.append(i)
            buffer_of.append(len(buffers) - 1)
            if share and data:
                seen[data] = len(buffers) - 1
        model.subgraphs.append(_subgraph(b, buffer_of, codes, model))
        sig = schema.SignatureDefT()
        sig.signatureKey = key
        sig.subgraphIndex = g
        sig.inputs = [_tensor_map(n, i) for n, i in zip(b.input_names, b.inputs, strict=True)]
        sig.outputs = [_tensor_map(n, i) for n, i in zip(b.output_names, b.outputs, strict=True)]
        model.signatureDefs.append(sig)
    inline = sum(len(d) for i, d in enumerate(buffers) if source[i] not in external or i == 0)
    model.buffers = []
    for i, data in enumerate(buffers):
        buf = schema.BufferT()
        if i and source[i] in external:
            buf.offset, buf.size = external[source[i]]
        else:
            buf.data = np.frombuffer(data, dtype=np.uint8) if data else None
        model.buffers.append(buf)
    model.metadata = []
    for meta_name, value in metadata.items():
        buf = schema.BufferT()
        buf.data = np.frombuffer(value, dtype=np.uint8)
        model.buffers.append(buf)
        m = schema.MetadataT()
        m.name = meta_name
        m.buffer = len(model.buffers) - 1
        model.metadata.append(m)
    if inline > 2_000_000_000:
        raise ExportError(
            f"tflite writer: {inline / 1e9:.2f} GB of inline weights exceeds the 2 GiB flatbuffer "
            "limit; write them after the flatbuffer (weights_after=True)"
        )
    fb = flatbuffers.Builder(1024 + inline + inline // 8)
    fb.Finish(model.Pack(fb), file_identifier=b"TFL3")
    return bytes(fb.Output())


def _tensor_map(name: str, index: int) -> Any:
    tm = schema.TensorMapT()
    tm.name = name
    tm.tensorIndex = index
    return tm


@dataclass(frozen=True)
class ParsedTensor:
    """A tensor read back from a ``.tflite`` file."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    data: bytes | None
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int


@dataclass(frozen=True)
class ParsedModel:
    """What :func:`read_model` returns: tensors, operators (kind, inputs, outputs, options), metadata."""

    tensors: tuple[ParsedTensor, ...]
    operators: tuple[tuple[str, tuple[int, ...], tuple[int, ...], dict[str, Any]], ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    metadata: dict[str, bytes]
    signature_inputs: tuple[str, ...]
    signature_outputs: tuple[str, ...]
    description: str


_ITEM_BYTES: Final = {
    "float32": 4,
    "int32": 4,
    "int64": 8,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "float16": 2,
    "bool": 1,
}


def _check_buffer_sizes(tensors: Sequence[ParsedTensor]) -> None:
    """Every constant's buffer must hold exactly its shape (LiteRT does not check: FIELD_NOTES)."""
    bad = []
    for t in tensors:
        if t.data is None:
            continue
        count = int(np.prod(t.shape)) if t.shape else 1
        if t.dtype in _BITS:
            want = packed_size(count, _BITS[t.dtype])
        elif t.dtype in _ITEM_BYTES:
            want = count * _ITEM_BYTES[t.dtype]
        else:
            continue
        if len(t.data) != want:
            bad.append(f"{t.name} ({t.dtype}{list(t.shape)}): {len(t.data)} bytes, expected {want}")
    if bad:
        raise ExportError(
            "tflite reader: constant buffers of the wrong size (LiteRT would run them and return "
            "garbage): " + "; ".join(bad) + ". Re-export the model; INT4/INT2 must be packed "
            "two/four values per byte, low bits first"
        )


_OP_NAMES: Final = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def read_model(data: bytes) -> ParsedModel:
    """Parse ``.tflite`` bytes (the first subgraph).

    Raises:
        ExportError: not a TFLite flatbuffer, or truncated.
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ExportError(
            f"tflite reader: not a TFLite model (no TFL3 identifier, {len(data)} bytes); "
            "is the file truncated or of another format?"
        )
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:
        raise ExportError(f"tflite reader: cannot parse the flatbuffer ({exc}); the file is corrupt") from exc
    sub = model.subgraphs[0]
    tensors = []
    for t in sub.tensors:
        buf = model.buffers[t.buffer]
        raw = None
        if buf.data is not None and len(buf.data):
            raw = bytes(np.asarray(buf.data, dtype=np.uint8))
        elif buf.offset:
            raw = bytes(data[buf.offset : buf.offset + buf.size])
        q = t.quantization
        tensors.append(
            ParsedTensor(
                name=t.name.decode() if isinstance(t.name, bytes) else str(t.name),
                shape=tuple(int(d) for d in (t.shape if t.shape is not None else [])),
                dtype=_TYPE_NAMES.get(t.type, str(t.type)),
                data=raw,
                scale=tuple(float(s) for s in (q.scale if q is not None and q.scale is not None else [])),
                zero_point=tuple(
                    int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])
                ),
                axis=int(q.quantizedDimension) if q is not None else 0,
            )
        )
    _check_buffer_sizes(tensors)
    ops = []
    for o in sub.operators:
        code = model.operatorCodes[o.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        opts = {}
        if o.builtinOptions is not None:
            opts = {k: v for k, v in vars(o.builtinOptions).items()}
        opts["_version"] = code.version
        ops.append(
            (
                _OP_NAMES.get(builtin, str(builtin)),
                tuple(int(i) for i in o.inputs),
                tuple(int(i) for i in o.outputs),
                opts,
            )
        )
    meta = {}
    for m in model.metadata or []:
        name = m.name.decode() if isinstance(m.name, bytes) else str(m.name)
        b = model.buffers[m.buffer].data
        meta[name] = bytes(np.asarray(b, dtype=np.uint8)) if b is not None else b""
    sig_in: tuple[str, ...] = ()
    sig_out: tuple[str, ...] = ()
    if model.signatureDefs:
        s = model.signatureDefs[0]
        sig_in = tuple(t.name.decode() if isinstance(t.name, bytes) else str(t.name) for t in s.inputs)
        sig_out = tuple(t.name.decode() if isinstance(t.name, bytes) else str(t.name) for t in s.outputs)
    desc = model.description
    return ParsedModel(
        tensors=tuple(tensors),
        operators=tuple(ops),
        inputs=tuple(int(i) for i in sub.inputs),
        outputs=tuple(int(i) for i in sub.outputs),
        metadata=meta,
        signature_inputs=sig_in,
        signature_outputs=sig_out,
        description=desc.decode() if isinstance(desc, bytes) else str(desc or ""),
    )


def read_metadata(path: Any) -> dict[str, str]:
    """The ``bitnet_export.*`` metadata of a ``.tflite`` file, as strings (JSON values).

    Raises:
        ExportError: missing, truncated or not a TFLite file.
    """
    from pathlib import Path

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ExportError(f"tflite reader: cannot read {path}: {exc}") from exc
    parsed = read_model(data)
    return {k: v.decode("utf-8", errors="replace") for k, v in parsed.metadata.items()}
