"""Lower ``bitnet_export.BitLinear`` hub nodes to standard ONNX (QDQ / integer) patterns.

One function per mode, numerics commented. Every emitted node is named ``<module path>/<Op>``
and every initializer ``<module path>.<role>``, so a graph viewer shows the user's model.

Weight storage (``weights=``): ``int8``, ``int4`` (opset 21), ``int2`` (opset 25), each packed
low bits first by onnx_ir, and ``matmulnbits`` (ORT contrib op). For the ``int4``/``int2``
storage, a ``Cast`` to int8 sits after the packed initializer: ONNX Runtime constant-folds it at
session start, so the file is small and the integer kernels see int8 (measured: the Cast
disappears from ORT's optimized graph).

Kernels (``kernels=``): ``integer`` (default) writes the maths with integer ops
(``QuantizeLinear``, ``MatMulInteger``, QDQ ``MatMul``) for ORT's CPU and mobile integer
kernels. ``float`` writes the *same* integer maths with float ops only, for execution providers
without integer kernels: ORT's WebGPU EP (1.27) has no ``QuantizeLinear``, ``MatMulInteger``,
``Max``, ``Round`` or INT2 ``DequantizeLinear`` kernel (measured). Codes stay integer-valued
floats: rounding half to even is ``(v + 1.5 * 2^23) - 1.5 * 2^23`` (exact for ``|v| <= 2^22``), the
weights are ``Cast(packed codes -> float)`` (folded by ORT at session start: the file stays
packed, the device holds float32 weights), and ``MatMul`` of integer-valued float32 tensors is
the exact integer accumulator while ``K * max|q_x| * max|q_w| < 2^24``. The graph needs float32
arithmetic: an execution provider that computes it in fp16 (CoreML or TensorRT fp16 modes) breaks
the rounding and the accumulator.

``kernels="nbits"`` runs the *same* exact per-token maths on ORT's ``MatMulNBits`` block kernel
(2-, 4- or 8-bit weights from ``int2``/``int4``/``int8`` storage), which at batch 1 is
1.4-1.7x (8-bit blocks) to 2.4-2.9x (2-bit) faster than ``MatMulInteger`` per 768x3072 layer
(measured with the weights out of cache, :func:`lower_nbits_exact`); static layers keep the
integer kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

import ml_dtypes
import numpy as np
import onnx_ir as ir

from bitnet_export.backends._storage import check_storage
from bitnet_export.capture.bitlinear_op import is_bitlinear, read_bitlinear
from bitnet_export.errors import ExportError, InternalError
from bitnet_export.passes.name_nodes import SOURCE_KEYS
from bitnet_export.quant.params import LayerQuantParams

__all__ = ["KERNELS", "WEIGHT_MODES", "WeightMode", "lower_bitlinear_nodes", "matmulnbits_block_size"]

WeightMode = Literal["int8", "int4", "int2", "matmulnbits"]
WEIGHT_MODES: Final[tuple[str, ...]] = ("int8", "int4", "int2", "matmulnbits")
#: ``integer``: integer ONNX ops (ORT CPU/mobile); ``float``: float ops only (ORT WebGPU);
#: ``nbits``: per-token layers on ORT's MatMulNBits kernel, exact (ORT CPU).
KERNELS: Final[tuple[str, ...]] = ("integer", "float", "nbits")
#: MatMulNBits block length of ``kernels="nbits"``: 127 activation codes and one pad of 127.
#: 128 is the largest block ORT 1.32 runs with its int8 kernels (see matmulnbits_block_size).
_EXACT_BLOCK: Final = 128
#: 1.5 * 2^23: ``(v + M) - M`` rounds a float32 ``|v| <= 2^22`` to an integer, ties to even.
_ROUND_MAGIC: Final = np.float32(1.5 * 2**23)
#: ORT contrib domain (MatMulNBits).
MS_DOMAIN: Final = "com.microsoft"

_STORAGE_DTYPE = {
    "int8": (np.int8, ir.DataType.INT8),
    "int4": (ml_dtypes.int4, ir.DataType.INT4),
    "int2": (ml_dtypes.int2, ir.DataType.INT2),
}


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


class _Emitter:
    """Builds the replacement of one BitLinear node, naming everything after the module."""

    def __init__(
        self,
        graph: ir.Graph,
        path: str,
        output_feeds_add: bool = False,
        float_kernels: bool = False,
        call: int = 0,
        shared: dict[tuple[object, ...], tuple[ir.Value, ...]] | None = None,
    ) -> None:
        self.graph = graph
        #: activation codes already computed, by input value and quantizer (see :meth:`memo`)
        self.shared = {} if shared is None else shared
        #: a layer called more than once: the first call's nodes are ``<path>/...``, the n-th
        #: call's ``<path>/call_<n>/...``; their constants are shared (see :meth:`const`)
        self.path = path or "bitlinear"
        self.node_prefix = self.path if call == 0 else f"{self.path}/call_{call}"
        self.nodes: list[ir.Node] = []
        #: an Add/Sub consumes the layer's output (decides the static form, see lower_static)
        self.output_feeds_add = output_feeds_add
        #: ``kernels="float"``: no integer ops (see the module docstring)
        self.float_kernels = float_kernels

    def const(self, role: str, array: np.ndarray, dtype: ir.DataType | None = None) -> ir.Value:
        """The initializer ``<path>.<role>``; an equal one already in the graph is shared.

        A BitNetLayer called twice (weight sharing) lowers twice with the same module path:
        its constants are the same tensors and stay one initializer. A different tensor under
        a taken name (which would be our bug) gets a suffixed name instead of clobbering it.
        """
        name = f"{self.path}.{role}"
        existing = self.graph.initializers.get(name)
        i = 0
        while existing is not None:
            const = existing.const_value
            same_type = const is not None and (dtype is None or const.dtype == dtype)
            if same_type and const is not None and _same_array(const.numpy(), array):
                return existing
            i += 1
            name = f"{self.path}.{role}_{i}"
            existing = self.graph.initializers.get(name)
        tensor = ir.Tensor(array, dtype=dtype, name=name) if dtype else ir.tensor(array, name=name)
        value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype))
        value.const_value = tensor
        self.graph.register_initializer(value)
        return value

    def memo(
        self, key: tuple[object, ...], build: Callable[[], tuple[ir.Value, ...]]
    ) -> tuple[ir.Value, ...]:
        """``build()``'s values, or those an earlier layer with the same ``key`` built.

        Layers that read the same input with the same quantizer (q/k/v, gate/up) share its
        per-token codes: one quantizer instead of three, the same numbers. The earlier layer
        comes first in the graph (lowering runs in graph order), so its values precede this use.
        """
        if key not in self.shared:
            self.shared[key] = build()
        return self.shared[key]

    def op(
        self,
        op_type: str,
        inputs: list[ir.Value | None],
        domain: str = "",
        out: str | None = None,
        **attrs: object,
    ) -> ir.Value:
        node = ir.node(
            op_type,
            inputs,
            attributes=attrs,  # type: ignore[arg-type]
            domain=domain,
            name=f"{self.node_prefix}/{out or op_type}",
        )
        node.outputs[0].name = f"{self.node_prefix}/{out or op_type}:0"
        self.nodes.append(node)
        return node.outputs[0]


def _weight_codes(em: _Emitter, p: LayerQuantParams, storage: str) -> ir.Value:
    """The transposed weight codes ``[K, N]`` as the ``weight_q`` initializer, in ``storage``."""
    check_storage(p, storage)
    np_dtype, ir_dtype = _STORAGE_DTYPE[storage]
    w_t = np.ascontiguousarray(p.weight.values.T).astype(np_dtype)
    return em.const("weight_q", w_t, None if storage == "int8" else ir_dtype)


def _weight_int8(em: _Emitter, p: LayerQuantParams, storage: str) -> ir.Value:
    """The transposed weight ``[K, N]`` as an int8 value, stored as ``storage``."""
    codes = _weight_codes(em, p, storage)
    if storage == "int8":
        return codes
    # Cast(INTk -> INT8) of an initializer: folded by ORT at load time (file stays packed).
    return em.op("Cast", [codes], out="weight_int8", to=ir.DataType.INT8)


def _weight_codes_float(em: _Emitter, p: LayerQuantParams, storage: str) -> ir.Value:
    """The transposed weight codes ``[K, N]`` as integer-valued float32 (``kernels="float"``).

    ``Cast(packed codes -> FLOAT)`` of an initializer: ORT folds it at session start (a
    ``DequantizeLinear`` would not be folded, and has no INT2 WebGPU kernel).
    """
    return em.op("Cast", [_weight_codes(em, p, storage)], out="WeightToFloat", to=ir.DataType.FLOAT)


def _round_half_even(em: _Emitter, v: ir.Value) -> ir.Value:
    """``round_half_even(v)`` with two float adds (ORT WebGPU has no ``Round`` kernel).

    ``v + 1.5 * 2^23`` lands in [2^23, 2^24), where float32 spacing is 1: IEEE round-to-nearest-
    even makes it an integer, and subtracting the constant back is exact. Callers guarantee
    ``|v| <= 2^22`` (clipped static codes, per-token codes ``|v| <= qmax``).
    """
    magic = em.const("round_magic", np.array(_ROUND_MAGIC, dtype=np.float32))
    shifted = em.op("Add", [v, magic], out="RoundShift")
    return em.op("Sub", [shifted, magic], out="Round")


def _weight_scale(em: _Emitter, p: LayerQuantParams) -> ir.Value:
    s = p.weight.scale.astype(np.float32)
    return em.const("weight_scale", s if p.weight.granularity == "per_channel" else s.reshape(()))


def _add_bias(em: _Emitter, y: ir.Value, p: LayerQuantParams) -> ir.Value:
    if p.bias is None:
        return y
    return em.op("Add", [y, em.const("bias", p.bias.astype(np.float32))], out="AddBias")


def lower_static(em: _Emitter, x: ir.Value, p: LayerQuantParams, storage: str) -> ir.Value:
    """Static per-tensor activations.

    Without bias and with 8-bit activations: the portable QDQ form, fused by ORT.
    ``xq = QuantizeLinear(x, s_x, zp_x)`` is ``saturate(round_half_even(x / s_x) + zp_x)`` in
    int8, exactly BitNetLayer's ``quantize_static``; the weight is
    ``DequantizeLinear(Wq^T, s_w, axis=1)`` (per output channel) or with a scalar scale (per
    tensor); ORT fuses ``DQ(x) @ DQ(W)`` into ``MatMulIntegerToFloat``: int32 accumulation of
    ``(xq - zp_x) * Wq``, then one float multiply by ``s_x * s_w[c]``.

    ORT 1.32 does *not* fuse the QDQ form when an ``Add`` consumes the MatMul (the layer's
    bias, or a residual add right after the layer): its level-1 ``MatMulAddFusion`` turns
    ``MatMul + Add`` into a float ``Gemm`` on dequantized inputs before the QDQ fusions run
    (measured). Those layers, and sub-8-bit activations, get the explicit integer form of the
    same maths instead (:func:`_lower_static_integer`); tests assert that ORT's optimized graph
    has no float MatMul/Gemm left either way.
    """
    a = p.input
    if a.scale is None or a.zero_point is None:
        raise InternalError(f"layer {p.module_path!r}: static lowering without a calibrated scale")
    if em.float_kernels:
        return _lower_static_float(em, x, p, storage)
    if p.bias is not None or (a.qmin, a.qmax) != (-128, 127) or em.output_feeds_add:
        return _lower_static_integer(em, x, p, storage)
    s_x = em.const("input_scale", np.array(a.scale, dtype=np.float32))
    zp_x = em.const("input_zero_point", np.array(a.zero_point, dtype=np.int8))
    xq = em.op("QuantizeLinear", [x, s_x, zp_x], out="QuantizeInput")
    xd = em.op("DequantizeLinear", [xq, s_x, zp_x], out="DequantizeInput")
    w = _weight_int8(em, p, storage)
    s_w = _weight_scale(em, p)
    if p.weight.granularity == "per_channel":
        wd = em.op("DequantizeLinear", [w, s_w], out="DequantizeWeight", axis=1)
    else:
        wd = em.op("DequantizeLinear", [w, s_w], out="DequantizeWeight")
    return em.op("MatMul", [xd, wd])


def _lower_static_integer(em: _Emitter, x: ir.Value, p: LayerQuantParams, storage: str) -> ir.Value:
    """Static activations as explicit integer maths (layers with a bias, sub-8-bit activations).

    ``QuantizeLinear`` to **uint8** with zero point ``zp_x + 128``: the codes are the int8 codes
    plus 128 exactly (same rounding, same saturation), which selects ORT's fast u8 x s8
    ``MatMulInteger`` kernel; sub-8-bit ranges add a uint8 ``Clip``. Then
    ``y = Cast(acc) * (s_x * s_w) + bias``: the order of ``MatMulIntegerToFloat`` and of
    BitNetLayer's ``linear_static_int`` (bit-exact, tested).
    """
    a = p.input
    assert a.scale is not None and a.zero_point is not None
    s_x = em.const("input_scale", np.array(a.scale, dtype=np.float32))
    zp_u8 = em.const("input_zero_point", np.array(a.zero_point + 128, dtype=np.uint8))
    xq = em.op("QuantizeLinear", [x, s_x, zp_u8], out="QuantizeInput")
    if (a.qmin, a.qmax) != (-128, 127):
        lo = em.const("input_qmin", np.array(a.qmin + 128, dtype=np.uint8))
        hi = em.const("input_qmax", np.array(a.qmax + 128, dtype=np.uint8))
        xq = em.op("Clip", [xq, lo, hi], out="ClipInput")
    acc = em.op("MatMulInteger", [xq, _weight_int8(em, p, storage), zp_u8])
    accf = em.op("Cast", [acc], out="CastAcc", to=ir.DataType.FLOAT)
    return _static_rescale(em, accf, p)


def _static_rescale(em: _Emitter, accf: ir.Value, p: LayerQuantParams) -> ir.Value:
    """``y = acc * (s_x * s_w) + bias``: ``linear_static_int``'s order (``acc`` as float32)."""
    assert p.input.scale is not None
    combined = np.float32(p.input.scale) * p.weight.scale.astype(np.float32)
    if p.weight.granularity != "per_channel":
        combined = combined.reshape(())
    y = em.op("Mul", [accf, em.const("output_scale", combined.astype(np.float32))], out="Rescale")
    return _add_bias(em, y, p)


def _lower_static_float(em: _Emitter, x: ir.Value, p: LayerQuantParams, storage: str) -> ir.Value:
    """Static activations with float kernels only (``kernels="float"``).

    ``QuantizeLinear``'s ``clip(round(x / s_x) + zp, qmin, qmax) - zp`` is computed centred as
    ``round(clip(x / s_x, qmin - zp, qmax - zp))``: the same integer (rounding is monotone and
    the bounds are integers), as a float. Then ``MatMul`` with the float weight codes (the exact
    accumulator) and the rescale of :func:`_lower_static_integer`.
    """
    a = p.input
    assert a.scale is not None and a.zero_point is not None
    s_x = em.const("input_scale", np.array(a.scale, dtype=np.float32))
    v = em.op("Div", [x, s_x], out="ScaleInput")
    lo = em.const("input_qmin", np.array(a.qmin - a.zero_point, dtype=np.float32))
    hi = em.const("input_qmax", np.array(a.qmax - a.zero_point, dtype=np.float32))
    q = _round_half_even(em, em.op("Clip", [v, lo, hi], out="ClipInput"))
    acc = em.op("MatMul", [q, _weight_codes_float(em, p, storage)], out="MatMulCodes")
    return _static_rescale(em, acc, p)


def lower_dynamic(em: _Emitter, x: ir.Value, p: LayerQuantParams, storage: str) -> ir.Value:
    """BitNet per-token activations, as an explicit exact integer pattern.

    Same float ops in the same order as ``quantize_dynamic_per_token``:
    ``m = max(ReduceMax(|x|, last axis), eps)``, ``gamma = qmax / m``,
    ``q = round_half_even(x * gamma)`` (``torch.round``), emitted as one ``QuantizeLinear`` to
    uint8 with zero point 128 (codes ``q + 128``, exact, see below): ORT's u8 x s8
    ``MatMulInteger`` kernel is ~7x faster than fp32 at batch 1, the s8 x s8 one ~8x slower.
    ``acc`` is the exact int32 ``q @ Wq^T``; then ``y = acc * ((m / qmax) * s_w) + bias``: the
    op order of BitNetLayer's inference form ``linear_dynamic_int`` and of TFLite's hybrid FC,
    so PyTorch, ORT and LiteRT agree bit for bit (tested).

    With float kernels: ``Clip(m, min=eps)`` for the ``Max``, the float rounding of
    :func:`_round_half_even` for the ``QuantizeLinear``, and ``MatMul`` with the float weight
    codes for ``MatMulInteger``; the same numbers while the float sums are exact.
    """
    if em.float_kernels:

        def float_codes() -> tuple[ir.Value, ...]:
            m, scaled = _per_token_scaled(em, x, p)
            # |scaled| <= qmax: the float rounding is exact, no clip needed (see below)
            return m, _round_half_even(em, scaled)

        m, q = em.memo(_quantizer_key("float", x, p), float_codes)
        accf = em.op("MatMul", [q, _weight_codes_float(em, p, storage)], out="MatMulCodes")
        return _dynamic_rescale(em, accf, m, p)
    # One QuantizeLinear with scale 1 and uint8 zero point 128 does Round (half to even),
    # the +128 shift and the Cast: saturate(round(v / 1) + 128). |v| <= qmax by construction
    # (|x| <= m, so |x * qmax / m| rounds to at most qmax), so the saturation never clips and
    # the codes equal clip(round(x * gamma), qmin, qmax) + 128 exactly, for any bit width.
    unit = em.const("unit_scale", np.array(1.0, dtype=np.float32))
    zp_u8 = em.const("input_zero_point", np.array(128, dtype=np.uint8))

    def u8_codes() -> tuple[ir.Value, ...]:
        m, scaled = _per_token_scaled(em, x, p)
        return m, em.op("QuantizeLinear", [scaled, unit, zp_u8], out="QuantizeU8")

    m, xu8 = em.memo(_quantizer_key("u8", x, p), u8_codes)
    acc = em.op("MatMulInteger", [xu8, _weight_int8(em, p, storage), zp_u8])
    # int32 -> float as DequantizeLinear(acc, 1.0) (exact, like Cast): with a Cast, ORT's
    # MatMulIntegerToFloatFusion would rewrite the rescale as (acc * s_w) * (m / qmax), a
    # different float32 rounding from TFLite's acc * ((m / qmax) * s_w) (measured)
    accf = em.op("DequantizeLinear", [acc, unit], out="AccToFloat")
    return _dynamic_rescale(em, accf, m, p)


def _quantizer_key(kind: str, x: ir.Value, p: LayerQuantParams) -> tuple[object, ...]:
    """What makes two layers' per-token codes the same: input, code layout, eps and qmax."""
    return (kind, x, float(p.input.eps), int(p.input.qmax), p.in_features)


def _per_token_scaled(em: _Emitter, x: ir.Value, p: LayerQuantParams) -> tuple[ir.Value, ir.Value]:
    """``m = max(ReduceMax(|x|, last axis), eps)`` and ``x * (qmax / m)`` (codes before rounding)."""
    a = p.input
    absx = em.op("Abs", [x])
    axes = em.const("reduce_axes", np.array([-1], dtype=np.int64))
    m = em.op("ReduceMax", [absx, axes], out="RowAbsMax", keepdims=1)
    eps = em.const("eps", np.array(a.eps, dtype=np.float32))
    # max(m, eps); as Clip(m, min=eps) with float kernels (ORT WebGPU has no Max kernel)
    m = em.op("Clip" if em.float_kernels else "Max", [m, eps], out="ClampEps")
    gamma = em.op("Div", [em.const("qmax", np.array(a.qmax, dtype=np.float32)), m], out="Gamma")
    return m, em.op("Mul", [x, gamma], out="ScaleInput")


def lower_nbits_exact(em: _Emitter, x: ir.Value, p: LayerQuantParams, storage: str) -> ir.Value:
    """BitNet per-token activations on ORT's ``MatMulNBits`` kernel, exact (``kernels="nbits"``).

    ``MatMulNBits`` with ``accuracy_level=4`` quantizes its float input to int8 per block of K
    (``scale = amax(block) / 127``, round to nearest) and accumulates each block's integer dot
    product times both scales in float32. Fed BitNet's codes ``q = round(x * qmax / m)``
    (integer-valued floats, ``|q| <= qmax <= 127``) in blocks of 127 codes plus one pad of
    127, every block's amax is 127: the kernel's scale is exactly 1 and it keeps the codes.
    The pad's weight is the zero code and the weight block scales are 1, so each block sum is
    the exact integer ``sum q * w`` (``|.| <= 127 * 128 * max|w|``) and the float32 sum of
    blocks is exact while ``127 * K' * max|w| < 2^24`` (K' the padded K: any K for ternary
    weights up to 132k; a layer past it keeps the integer kernels, see :func:`_pick`). Then the
    rescale of :func:`lower_dynamic`: the same numbers as the integer kernels, bit for bit
    (tested against numpy's integer maths).

    Layout: ``K' = ceil(K / 127) * 128``; activations ``Pad`` (zeros to a multiple of 127),
    ``Reshape [..., nb, 127]``, ``Pad`` one 127 per block, ``Reshape [..., K']``; weights
    ``w + 2^(bits-1)`` (ORT's default zero point) packed in the same block layout.
    """
    bits = {"int2": 2, "int4": 4, "int8": 8}[storage]
    check_storage(p, storage)
    k, n = p.in_features, p.out_features
    real = _EXACT_BLOCK - 1
    nb = _exact_blocks(k)
    k_padded = nb * _EXACT_BLOCK
    if not _nbits_sum_exact(p):
        raise InternalError(f"lower_nbits_exact: layer {p.module_path!r} is past the float32 bound")
    rank = len(x.shape) if x.shape is not None else 0
    if rank < 1:
        raise ExportError(
            f"layer {p.module_path!r} (BitNetLayer): kernels='nbits' needs the input's rank, which "
            "the captured graph does not give; use kernels='integer'"
        )

    def block_codes() -> tuple[ir.Value, ...]:
        m, scaled = _per_token_scaled(em, x, p)
        codes = em.op("Round", [scaled], out="Round")  # half to even, as torch.round
        lead = [0] * (rank - 1)  # Reshape: 0 copies the input's dimension

        def pad_last(v: ir.Value, r: int, amount: int, value: float, role: str) -> ir.Value:
            """``amount`` times ``value`` after the last axis of the rank-``r`` ``v`` (pads as an input)."""
            pads = np.array([0] * (2 * r - 1) + [amount], dtype=np.int64)
            value_c = em.const(f"{role}_value", np.array(value, dtype=np.float32))
            return em.op("Pad", [v, em.const(f"{role}_pads", pads), value_c], out=role)

        if nb * real != k:
            codes = pad_last(codes, rank, nb * real - k, 0.0, "PadToBlocks")
        blocks = em.op("Reshape", [codes, em.const("block_shape", np.array([*lead, nb, real], np.int64))])
        blocks = pad_last(blocks, rank + 1, 1, 127.0, "PadBlockMax")
        flat = em.op(
            "Reshape", [blocks, em.const("padded_shape", np.array([*lead, k_padded], np.int64))], out="Blocks"
        )
        return m, flat

    m, flat = em.memo(_quantizer_key("nbits", x, p), block_codes)
    zp = 1 << (bits - 1)
    unsigned = np.full((n, nb, _EXACT_BLOCK), zp, dtype=np.uint8)  # pads: zero code
    w = np.zeros((n, nb * real), dtype=np.int16)
    w[:, :k] = p.weight.values
    unsigned[:, :, :real] = (w.reshape(n, nb, real) + zp).astype(np.uint8)
    packed = em.const("weight_q", _pack_nbits(unsigned.reshape(n, k_padded), bits, _EXACT_BLOCK))
    unit = em.const("block_scales", np.ones(n * nb, dtype=np.float32))
    acc = _matmulnbits(em, flat, packed, unit, k_padded, n, bits, _EXACT_BLOCK)
    return _dynamic_rescale(em, acc, m, p)


def _matmulnbits(
    em: _Emitter, x: ir.Value, packed: ir.Value, scales: ir.Value, k: int, n: int, bits: int, block: int
) -> ir.Value:
    """ORT's ``MatMulNBits`` at ``accuracy_level=4`` (int8 activations per block: its fast kernels)."""
    return em.op(
        "MatMulNBits",
        [x, packed, scales],
        domain=MS_DOMAIN,
        K=k,
        N=n,
        bits=bits,
        block_size=block,
        accuracy_level=4,
    )


def _dynamic_rescale(em: _Emitter, accf: ir.Value, m: ir.Value, p: LayerQuantParams) -> ir.Value:
    """``y = acc * ((m / qmax) * s_w) + bias`` (``m``: the clamped row absmax)."""
    # one multiply of the accumulator by (m / qmax) * s_w: TFLite's hybrid FC order, so ONNX,
    # TFLite and PyTorch's inference form agree bit for bit (per tensor the factor is [B, 1])
    qmax = np.array(p.input.qmax, dtype=np.float32)
    (row,) = em.memo(
        ("row_scale", m, int(p.input.qmax)),
        lambda: (em.op("Div", [m, em.const("qmax_divisor", qmax)], out="RowScale"),),
    )
    factor = em.op("Mul", [row, _weight_scale(em, p)], out="RescaleFactor")
    y = em.op("Mul", [accf, factor], out="Rescale")
    return _add_bias(em, y, p)


def matmulnbits_block_size(k: int) -> int:
    """Block size along K for MatMulNBits: 128, or the next power of two >= K (min 16) if smaller.

    128 is the largest block for which ORT 1.32 runs its int8 (accuracy_level 4) 2-bit kernel
    (256 silently takes a ~20x slower float path; measured).
    """
    size = 16
    while size < k and size < 128:
        size *= 2
    return size


def _pack_nbits(codes_nk: np.ndarray, bits: int, block: int) -> np.ndarray:
    """Pack unsigned codes ``[N, K]`` into ``[N, n_blocks, block * bits / 8]`` uint8, low bits first."""
    n, k = codes_nk.shape
    n_blocks = -(-k // block)
    zp = 1 << (bits - 1)
    padded = np.full((n, n_blocks * block), zp, dtype=np.uint8)  # padding codes dequantize to 0
    padded[:, :k] = codes_nk
    per_byte = 8 // bits
    grouped = padded.reshape(n, n_blocks, block // per_byte, per_byte)
    out = np.zeros((n, n_blocks, block // per_byte), dtype=np.uint8)
    for i in range(per_byte):
        out |= (grouped[..., i] << (bits * i)).astype(np.uint8)
    return out


def lower_matmulnbits(em: _Emitter, x: ir.Value, p: LayerQuantParams, storage: str) -> ir.Value:
    """ORT's ``MatMulNBits`` (com.microsoft), 2 or 4 bits: the fastest ORT-only path.

    Weights: unsigned codes ``q + 2^(bits-1)`` with ORT's default zero point ``2^(bits-1)``, so
    dequantization ``(u - zp) * scale`` gives back ``Wq * s_w`` exactly; each block's scale is
    the layer's channel (or tensor) scale. ``accuracy_level=4``: ORT quantizes the activations
    to int8 *per block of K* (not per token) before its integer kernel, so this mode differs
    from BitNet's per-token quantization by a small, documented tolerance
    (``parity.tolerances``).
    """
    del storage
    bits = 4 if p.weight.storage_bits == 4 else 2
    if p.weight.storage_bits > 4:
        raise ExportError(
            f"layer {p.module_path!r} (BitNetLayer, precision={p.weight.precision}): "
            "weights='matmulnbits' packs 2 or 4 bits; use precision <= 4 or weights='int8'"
        )
    if p.input.mode != "dynamic":
        raise ExportError(
            f"layer {p.module_path!r} (BitNetLayer): weights='matmulnbits' computes with its own "
            "activation quantization and cannot honour activation_mode='static'; use "
            "weights='int8'/'int4'/'int2' or activation_mode='dynamic'"
        )
    k, n = p.in_features, p.out_features
    block = matmulnbits_block_size(k)
    n_blocks = -(-k // block)
    unsigned = (p.weight.values.astype(np.int16) + (1 << (bits - 1))).astype(np.uint8)
    packed = em.const("weight_q", _pack_nbits(unsigned, bits, block))
    scales = np.repeat(np.broadcast_to(p.weight.scale.astype(np.float32), (n,)), n_blocks)
    s = em.const("weight_scale", np.ascontiguousarray(scales))
    return _add_bias(em, _matmulnbits(em, x, packed, s, k, n, bits, block), p)


_Lowering = Callable[[_Emitter, ir.Value, LayerQuantParams, str], ir.Value]


def _exact_blocks(k: int) -> int:
    """Blocks of :func:`lower_nbits_exact` for ``K = k``: 127 codes (and a pad) each."""
    return -(-k // (_EXACT_BLOCK - 1))


def _nbits_sum_exact(p: LayerQuantParams) -> bool:
    """Whether :func:`lower_nbits_exact`'s float32 sum of block dot products is exact."""
    k_padded = _exact_blocks(p.in_features) * _EXACT_BLOCK
    max_w = int(np.abs(p.weight.values).max()) if p.weight.values.size else 0
    return 127 * k_padded * max_w < 2**24


def _pick(p: LayerQuantParams, weights: str, kernels: str) -> _Lowering:
    """The lowering of one layer. ``kernels="nbits"``: per-token layers whose block sums stay
    exact in float32 (every ternary / 2-bit / 4-bit layer below K = 16k); the others (static
    activations, 8-bit weights at large K) keep the integer kernels, exact too (the layer
    summary's ``ops`` says which ran)."""
    if weights == "matmulnbits":
        return lower_matmulnbits
    if p.input.mode == "static":
        return lower_static
    return lower_nbits_exact if kernels == "nbits" and _nbits_sum_exact(p) else lower_dynamic


def _float_sum_exact(p: LayerQuantParams) -> bool:
    """Whether a float32 ``MatMul`` of the layer's codes is its exact integer accumulator:
    every partial sum is an integer below ``K * max|q_x| * max|q_w| < 2^24``."""
    a = p.input
    zp = a.zero_point if a.mode == "static" and a.zero_point is not None else 0
    max_x = max(abs(a.qmin - zp), abs(a.qmax - zp))
    max_w = int(np.abs(p.weight.values).max()) if p.weight.values.size else 0
    return p.in_features * max_x * max_w < 2**24


def lower_bitlinear_nodes(model: ir.Model, weights: str, kernels: str = "integer") -> list[dict[str, object]]:
    """Replace every BitLinear node of ``model`` in place.

    Args:
        model: the hub model (modified in place).
        weights: ``int8``, ``int4``, ``int2`` or ``matmulnbits``.
        kernels: ``integer``, ``float`` or ``nbits`` (see the module docstring).
            ``matmulnbits`` layers are the same either way (ORT's WebGPU EP has a MatMulNBits
            kernel); with ``nbits``, static layers keep the integer kernels.

    Returns:
        One summary dict per lowered layer (module path, mode, storage, weight bytes, ops, and
        with float kernels whether the float32 accumulation is exact).

    Raises:
        ExportError: a layer that cannot be stored as asked (all layers are checked first).
    """
    if weights not in WEIGHT_MODES:
        raise ExportError(f"weights={weights!r} is not supported; choose one of {', '.join(WEIGHT_MODES)}")
    if kernels not in KERNELS:
        raise ExportError(f"kernels={kernels!r} is not supported; choose one of {', '.join(KERNELS)}")
    graph = model.graph
    summary: list[dict[str, object]] = []
    calls: dict[str, int] = {}
    shared: dict[tuple[object, ...], tuple[ir.Value, ...]] = {}
    bitlinears = [n for n in graph if is_bitlinear(n)]
    for node in bitlinears:
        for v in node.inputs[1:]:
            # the hub's constants are replaced by the lowering's (same names, new layout); a
            # constant something else also reads (a tied bias) stays
            if (
                v is not None
                and v.name in graph.initializers
                and all(is_bitlinear(use.node) for use in v.uses())
                and not v.is_graph_output()
            ):
                graph.initializers.pop(v.name)  # type: ignore[arg-type]
    for node in bitlinears:
        p = read_bitlinear(node)
        feeds_add = any(use.node.op_type in ("Add", "Sub") for use in node.outputs[0].uses())
        call = calls.get(p.module_path, 0)
        calls[p.module_path] = call + 1
        em = _Emitter(
            graph, p.module_path, feeds_add, float_kernels=kernels == "float", call=call, shared=shared
        )
        x = node.inputs[0]
        assert x is not None
        y = _pick(p, weights, kernels)(em, x, p, weights)
        for new_node in em.nodes:  # every emitted op keeps the layer's source location
            for key in SOURCE_KEYS:
                if key in node.metadata_props:
                    new_node.metadata_props[key] = node.metadata_props[key]
        old_out = node.outputs[0]
        out_name = old_out.name
        ir.convenience.replace_nodes_and_values(graph, node, [node], em.nodes, [old_out], [y])
        y.name = out_name  # keep graph output / downstream names stable
        if call:  # the same layer again (weights shared): one summary, its calls counted
            next(s for s in summary if s["module_path"] == p.module_path)["calls"] = call + 1
            continue
        w_const = graph.initializers[f"{em.path}.weight_q"].const_value
        w_bytes = 0 if w_const is None else w_const.nbytes
        summary.append(
            {
                "module_path": p.module_path,
                "precision": p.weight.precision,
                "activation_mode": p.input.mode,
                "weights": weights,
                "weight_bytes": int(w_bytes),
                "ops": [n.op_type for n in em.nodes],
            }
        )
        if em.float_kernels and weights != "matmulnbits":
            summary[-1]["float_sum_exact"] = _float_sum_exact(p)
    if any(n.domain == MS_DOMAIN for n in graph):
        model.opset_imports[MS_DOMAIN] = 1
    model.opset_imports.pop("bitnet_export", None)
    return summary
