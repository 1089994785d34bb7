"""Capture of ordinary real-model patterns: torch.export's no-op assertions, weight sharing,
structured outputs (dict, ModelOutput, nesting) and KV-cache outputs, module-path names."""

from __future__ import annotations

import contextlib
import io
import json

import onnx
import pytest
import torch
from torch import nn

import bitnet_export as bx
from bitnet_export.cli import main
from bitnet_export.layers.bitnet import BitNetLayer


class DtypeCasts(nn.Module):
    """``.to(dtype)`` makes torch.export record ``aten._assert_tensor_metadata``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = BitNetLayer(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.to(torch.float32)).to(torch.float32)


class Shared(nn.Module):
    """A BitNetLayer called twice, equal zero biases, tied embedding/head weights."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(32, 16)
        self.a = BitNetLayer(16, 16, bias=True)
        self.b = BitNetLayer(16, 16, bias=True)
        self.c = nn.Linear(16, 16)
        self.head = nn.Linear(16, 32, bias=False)
        self.head.weight = self.emb.weight
        for layer in (self.a, self.b, self.c):
            nn.init.zeros_(layer.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.c(self.b(self.a(self.a(self.emb(ids))))))


class DictOut(nn.Module):
    """Nested structured outputs: names come from the keys."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = BitNetLayer(16, 8)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        y = self.fc(x)
        return {"logits": y, "extra": (y.relu(), {"scores": y.sigmoid()}), "unused": None}


def test_assertion_ops_are_not_unsupported_ops(tmp_path):
    model, x = DtypeCasts().eval(), torch.randn(4, 16)
    bx.export_onnx(model, x, tmp_path / "m.onnx")
    bx.export_tflite(model, x, tmp_path / "m.tflite")
    report = bx.verify(model, x, [tmp_path / "m.onnx", tmp_path / "m.tflite"], ["ort-cpu", "litert-builtin"])
    assert report.passed, report.format_table()


@pytest.mark.parametrize("weights", ["int8", "int2", "matmulnbits"])
def test_shared_layers_and_tied_weights(tmp_path, weights):
    torch.manual_seed(0)
    model, ids = Shared().eval(), torch.randint(0, 32, (2, 5))
    res = bx.export_onnx(model, ids, tmp_path / "m.onnx", weights=weights)
    a = next(layer for layer in res.layers if layer["module_path"] == "a")
    assert a["calls"] == 2  # one summary, two calls
    proto = onnx.load(tmp_path / "m.onnx")
    names = [i.name for i in proto.graph.initializer]
    assert len(names) == len(set(names))
    assert names.count("a.weight_q") == 1 and "a.weight_q_1" not in names  # shared, not copied
    # the second call's nodes are named after the layer too
    assert any(n.name.startswith("a/call_1/") for n in proto.graph.node)
    report = bx.verify(model, ids, tmp_path / "m.onnx", ["ort-cpu"])
    assert report.passed, report.format_table()


def test_shared_layers_tflite(tmp_path):
    torch.manual_seed(0)
    model, ids = Shared().eval(), torch.randint(0, 32, (2, 5))
    bx.export_tflite(model, ids, tmp_path / "m.tflite")
    report = bx.verify(model, ids, tmp_path / "m.tflite", ["litert-builtin", "litert-reference"])
    assert report.passed, report.format_table()


def test_structured_outputs_named_from_keys(tmp_path):
    model, x = DictOut().eval(), torch.randn(4, 16)
    res = bx.export_onnx(model, x, tmp_path / "m.onnx")
    assert res.output_names == ("logits", "extra.0", "extra.1.scores")
    tfl = bx.export_tflite(model, x, tmp_path / "m.tflite")
    assert tfl.output_names == res.output_names
    report = bx.verify(model, x, [res.path, tfl.path], ["ort-cpu", "litert-builtin"])
    assert report.passed, report.format_table()
    assert [m.name for m in report.results[0].outputs] == list(res.output_names)


def test_model_output_and_cache_fix_line(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = bx.convert_to_bitnet(transformers.LlamaForCausalLM(cfg).eval())
    ids = torch.randint(0, 64, (1, 6))
    with pytest.raises(bx.ExportError, match=r"use_cache=False") as err:
        bx.export_onnx(model, ids, tmp_path / "lm.onnx")
    assert "DynamicCache" in str(err.value)
    assert not (tmp_path / "lm.onnx").exists()
    model.config.use_cache = False
    res = bx.export_onnx(model, ids, tmp_path / "lm.onnx")
    assert res.output_names == ("logits",)
    report = bx.verify(model, ids, res.path, ["ort-cpu"])  # a ModelOutput: no AttributeError
    assert report.passed, report.format_table()
    # node names are the module paths, once: never "model.model.layers.0.model.layers.0..."
    names = [n.name for n in onnx.load(res.path).graph.node]
    assert any(n.startswith("model.layers.0.self_attn.q_proj/") for n in names)
    assert not any("model.model" in n for n in names)


def test_forward_without_tensors_is_refused(tmp_path):
    class Nothing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = BitNetLayer(4, 4)

        def forward(self, x: torch.Tensor) -> None:
            self.fc(x)

    with pytest.raises(bx.ExportError, match=r"returned no tensor"):
        bx.export_onnx(Nothing().eval(), torch.randn(2, 4), tmp_path / "n.onnx")
    assert not (tmp_path / "n.onnx").exists()


SPEC = """\
import torch
from torch import nn
from bitnet_export.layers.bitnet import BitNetLayer


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = BitNetLayer(16, 8)

    def forward(self, x):
        y = self.fc(x)
        return {"logits": y, "probs": y.softmax(-1)}


def make():
    torch.manual_seed(0)
    return DictOut().eval(), torch.randn(4, 16)
"""


def test_cli_export_and_verify_dict_outputs(tmp_path):
    spec = tmp_path / "spec.py"
    spec.write_text(SPEC)
    out = tmp_path / "d.onnx"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        assert main(["export", f"{spec}:make", "--out", str(out)]) == 0
        code = main(
            ["verify", str(out), f"{spec}:make", "--target", "ort-cpu", "--json", str(tmp_path / "r.json")]
        )
    assert code == 0, buf.getvalue()
    report = json.loads((tmp_path / "r.json").read_text())
    names = [o["name"] for r in report["results"] for o in r["outputs"]]
    assert names == ["logits", "probs"]
