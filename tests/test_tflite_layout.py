"""NCHW models become NHWC TFLite graphs with transposes only at the region's edges.

Small torch CNNs exported end to end with :func:`bitnet_export.export_tflite`, run on LiteRT
(reference and optimized builtin kernels) against torch, and their TRANSPOSE ops counted.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import bitnet_export as bx
from bitnet_export.backends.tflite.flatbuffer import read_model

pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT (ai-edge-litert) is not installed")

#: float32 end to end; the lowerings sum in other orders than torch (conv, pools, BN folded by
#: the exporter): ~1e-7 relative seen, 1e-4 is the budget the brief sets for vision models.
RTOL = 1e-4


class _Block(nn.Module):
    """conv -> BN -> hardswish -> depthwise conv -> BN -> relu6 -> residual add -> pools -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.hardswish(self.bn1(self.conv(x)))
        z = F.relu6(self.bn2(self.dw(y))) + y
        z = F.adaptive_avg_pool2d(self.pool(z), 1)
        return self.fc(torch.flatten(z, 1))


class _Mixed(nn.Module):
    """BN after ReLU, reflect Pad, grouped conv, max pool (ceil mode), a per-channel scale,
    upsampling, a runtime gate, a transposed conv, a global max."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2)
        self.bn = nn.BatchNorm2d(6)
        self.mid = nn.Conv2d(6, 6, 3, groups=2)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 6).reshape(6, 1, 1))
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.bn(F.relu(self.stem(x))), 0.1)  # BN after ReLU: not folded
        y = self.mid(F.pad(y, (1, 1, 1, 1), mode="reflect"))
        y = F.max_pool2d(y, 3, stride=2, ceil_mode=True) * self.scale
        gate = torch.sigmoid(x[:, :1, :1, :1])  # a runtime [N, 1, 1, 1] operand: any layout
        y = F.interpolate(y, scale_factor=2, mode="nearest") * gate
        y = torch.tanh(self.up(y))
        return self.fc(torch.amax(y, dim=(2, 3)))


def _randomize_bn(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(-0.2, 0.2, generator=gen)


def _litert(path, x: np.ndarray) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    outs = {}
    for resolver in ("BUILTIN_REF", "BUILTIN_WITHOUT_DEFAULT_DELEGATES"):
        it = Interpreter(
            model_path=str(path), experimental_op_resolver_type=getattr(OpResolverType, resolver)
        )
        inp = it.get_input_details()[0]
        it.resize_tensor_input(inp["index"], list(x.shape))
        it.allocate_tensors()
        it.set_tensor(inp["index"], x)
        it.invoke()
        outs[resolver] = it.get_tensor(it.get_output_details()[0]["index"])
    return outs


@pytest.mark.parametrize("make", [_Block, _Mixed], ids=["mobilenet_block", "pad_pool_upsample"])
def test_cnn_runs_nhwc_with_two_transposes(tmp_path, make):
    torch.manual_seed(0)
    model = make().eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 16, 16)
    res = bx.export_tflite(model, x, tmp_path / "cnn.tflite")
    kinds = [op[0] for op in read_model(res.path.read_bytes()).operators]
    # one TRANSPOSE where the NCHW input enters the NHWC region, one where it ends (the
    # reduction/flatten before the linear layer); none between convs, pools, elementwise ops
    assert kinds.count("TRANSPOSE") <= 2, kinds
    assert kinds[0] == "TRANSPOSE"
    assert "CONV_2D" in kinds
    with torch.no_grad():
        want = model(x).numpy()
    for resolver, got in _litert(res.path, x.numpy()).items():
        err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        assert err <= RTOL, f"{resolver}: max error {err:.3g} of the output's range"


def test_block_lowers_to_the_expected_builtins(tmp_path):
    torch.manual_seed(0)
    model = _Block().eval()
    _randomize_bn(model)
    res = bx.export_tflite(model, torch.randn(1, 3, 16, 16), tmp_path / "cnn.tflite")
    kinds = [op[0] for op in read_model(res.path.read_bytes()).operators]
    for kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH", "RELU6", "ADD", "AVERAGE_POOL_2D"):
        assert kind in kinds, kinds
    assert "MUL" not in kinds  # batch norms folded into the convolutions


def test_standalone_batchnorm_and_pad_keep_the_layout():
    """A BN that cannot fold (after a ReLU) and a Pad are computed in NHWC, in place."""
    from bitnet_export.backends.tflite.convert import convert_hub
    from bitnet_export.capture.capture import capture

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.bn, self.b = nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(F.pad(self.bn(torch.relu(self.a(x))), (1, 2, 0, 1), value=0.5))

    torch.manual_seed(0)
    model = Net().eval()
    _randomize_bn(model)
    x = torch.randn(1, 2, 5, 5)
    hub = capture(model, (x,), opset=21, dynamic_batch=False).model
    ops = {n.op_type for n in hub.graph}
    assert {"BatchNormalization", "Pad"} <= ops, ops
    data = convert_hub(hub, {}, "int8", 1)
    kinds = [op[0] for op in read_model(data).operators]
    assert kinds.count("TRANSPOSE") == 2, kinds  # the model's input and output only
    assert "PADV2" in kinds
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=data).get_signature_runner()
    got = next(iter(runner(**{str(hub.graph.inputs[0].name): x.numpy()}).values()))
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv1d_chain_stays_channels_last(tmp_path):
    """1-D convs and pools run as 2-D over [N, 1, L, C]; the NLC region needs no transposes."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv1d(4, 8, 5, padding=2, dilation=1)
            self.b = nn.Conv1d(8, 8, 3, stride=2, groups=8)
            self.fc = nn.Linear(8 * 7, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.max_pool1d(F.gelu(self.a(x)), 2)
            return self.fc(torch.flatten(F.avg_pool1d(self.b(y), 1), 1))

    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(2, 4, 33)
    res = bx.export_tflite(model, x, tmp_path / "conv1d.tflite")
    kinds = [op[0] for op in read_model(res.path.read_bytes()).operators]
    assert kinds.count("TRANSPOSE") <= 2, kinds
    assert "DEPTHWISE_CONV_2D" in kinds and "MAX_POOL_2D" in kinds
    with torch.no_grad():
        want = model(x).numpy()
    for resolver, got in _litert(res.path, x.numpy()).items():
        err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        assert err <= RTOL, f"{resolver}: max error {err:.3g} of the output's range"


def test_global_pool_region_ends_without_a_transpose():
    """An ONNX Conv -> GlobalAveragePool -> Flatten -> Gemm graph: [N, 1, 1, C] leaves the
    NHWC region by a RESHAPE (only size-1 dims move), so the input's TRANSPOSE is the only one."""
    import onnx_ir as ir
    from ai_edge_litert.interpreter import Interpreter
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from bitnet_export.backends.tflite.convert import convert_hub

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "B"),
        numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "G"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "G"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        inits,
    )
    proto = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    )
    data = convert_hub(ir.from_proto(proto), {}, "int8", 2)
    kinds = [op[0] for op in read_model(data).operators]
    assert kinds.count("TRANSPOSE") == 1, kinds
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    got = Interpreter(model_content=data).get_signature_runner()(x=x)["y"]
    np.testing.assert_allclose(got, ReferenceEvaluator(proto).run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)
