"""Fold inference BatchNormalization into the Conv before it (weights and bias rescaled).

``BN(conv(x, W, B))`` with constant statistics is ``conv(x, W * s, (B - mean) * s + beta)``,
``s = scale / sqrt(var + eps)`` per output channel. The fold is computed in float64 and rounded
once to the weight's type, so the folded conv is as close to the two-op graph as float32
allows (its rounding order differs: a few ulps). The backend then sees one conv per pair, and
the model has no per-channel MUL/ADD left in the NHWC region.

Folds only when nothing else sees the conv's output (it feeds the BN alone and is not a graph
output), the conv's weight and bias and the BN's four statistics are constants, and the BN is
in inference mode with no training outputs in use.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

__all__ = ["FoldBatchNormPass", "fold_batchnorm"]


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def _foldable(bn: ir.Node) -> tuple[ir.Node, list[np.ndarray]] | None:
    """The Conv feeding ``bn`` and the BN's (scale, B, mean, var), when the pair can fold."""
    if bn.op_type != "BatchNormalization" or bn.domain != "" or len(bn.inputs) < 5:
        return None
    mode = bn.attributes.get("training_mode")
    if (mode is not None and mode.as_int() != 0) or any(
        o.uses() or o.is_graph_output() for o in bn.outputs[1:]
    ):
        return None
    x = bn.inputs[0]
    conv = x.producer() if x is not None else None
    if conv is None or conv.op_type != "Conv" or conv.domain != "" or x is None:
        return None
    if len(x.uses()) != 1 or x.is_graph_output():
        return None
    weight = _const(conv.inputs[1] if len(conv.inputs) > 1 else None)
    bias_v = conv.inputs[2] if len(conv.inputs) > 2 else None
    if weight is None or (bias_v is not None and bias_v.const_value is None):
        return None
    stats = [_const(v) for v in bn.inputs[1:5]]
    if any(s is None for s in stats):
        return None
    return conv, [s for s in stats if s is not None]


def _fold(graph: ir.Graph, bn: ir.Node, conv: ir.Node, stats: list[np.ndarray]) -> None:
    w_val = conv.inputs[1]
    assert w_val is not None and w_val.const_value is not None
    w = w_val.const_value.numpy()
    m = w.shape[0]
    bias_v = conv.inputs[2] if len(conv.inputs) > 2 else None
    bias = (
        bias_v.const_value.numpy().astype(np.float64)
        if bias_v is not None and bias_v.const_value is not None
        else np.zeros(m)
    )
    scale, beta, mean, var = (s.astype(np.float64).reshape(m) for s in stats)
    eps_attr = bn.attributes.get("epsilon")
    eps = float(np.float32(eps_attr.as_float())) if eps_attr is not None else float(np.float32(1e-5))
    s = scale / np.sqrt(var + eps)
    new_w = (w.astype(np.float64) * s.reshape((m,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    new_b = ((bias - mean) * s + beta).astype(w.dtype)
    base = conv.name or "conv"
    w_new = ir.Value(name=f"{base}/weight_bn_folded", const_value=ir.tensor(new_w))
    b_new = ir.Value(name=f"{base}/bias_bn_folded", const_value=ir.tensor(new_b))
    for v, arr in ((w_new, new_w), (b_new, new_b)):
        v.shape, v.dtype = ir.Shape(arr.shape), ir.DataType.from_numpy(arr.dtype)
        graph.register_initializer(v)
    if len(conv.inputs) < 3:
        conv.resize_inputs(3)
    conv.replace_input_with(1, w_new)
    conv.replace_input_with(2, b_new)
    out, bn_out = conv.outputs[0], bn.outputs[0]
    was_output = bn_out.is_graph_output()
    name = bn_out.name
    stat_values = [v for v in bn.inputs[1:5] if v is not None]
    if out.shape is None:  # the BN's output is the conv's now: keep what was known of it
        out.shape = bn_out.shape
    if out.type is None:
        out.type = bn_out.type
    ir.convenience.replace_all_uses_with(bn_out, out, replace_graph_outputs=True)
    graph.remove(bn, safe=True)
    if was_output:  # the graph output keeps its name
        out.name = name
    for old in (w_val, bias_v, *stat_values):  # drop the constants nothing reads any more
        if old is not None and not old.uses() and old.is_initializer() and not old.is_graph_input():
            assert old.name is not None
            graph.initializers.pop(old.name, None)


def fold_batchnorm(model: ir.Model) -> bool:
    """Fold every foldable Conv -> BatchNormalization pair of ``model``'s graph in place.

    Returns:
        Whether any pair was folded.
    """
    graph = model.graph
    changed = False
    for bn in list(graph):
        found = _foldable(bn)
        if found is not None:
            _fold(graph, bn, *found)
            changed = True
    return changed


class FoldBatchNormPass(ir.passes.InPlacePass):
    """:func:`fold_batchnorm` as an onnx_ir pass (``PassResult(model, modified)``)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Fold the model's Conv -> BatchNormalization pairs."""
        return ir.passes.PassResult(model, fold_batchnorm(model))
