"""convert_to_bitnet on real models and Hugging Face BitNet checkpoints.

A tiny ``transformers`` BitNet model (2 layers, hidden 64, 4 heads, 2 kv heads, vocab 128) with
random ternary weights runs in float32, eager (``torch.compile`` of transformers' BitLinear is
bypassed with ``force_eager``: same maths, no 25 s compile), against the same model after
conversion to BitNetLayers.

Bound: ``max|ours - hf| <= 1e-5 * max|hf|`` on the logits. Both sides compute the same
integer activation codes and the same exact integer accumulations (< 2^24); they differ only
in float32 rounding of the final rescale: HF divides by ``weight_scale * gamma`` (with
``gamma = reciprocal(absmax) * 127``), BitNetLayer multiplies by ``(absmax / 127) * scale``,
and offline AutoBitLinear sums dequantized float products where BitNetLayer sums integers.
That is a few float32 ulps (~1e-7 relative) per layer, which the norms and attention carry to
the logits; measured here: 2.8e-7 .. 3.6e-7 relative. An ulp-level difference in one layer's
output can move a value of the next layer's input across a rounding boundary and change one
activation code, which shows as ~1e-3 relative: measured in 1 of 24 seeded forwards (online
AutoBitLinear, seed 6); the seeds here have none, and the teacher-forced test below checks
every layer on HF's exact inputs.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import bitnet_export as be
from bitnet_export import BitNetLayer, QuantConfigError, convert_to_bitnet, load_hf_bitnet
from bitnet_export.training.hf_bitnet import pack_ternary, unpack_ternary

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
hf_bitnet = pytest.importorskip("transformers.integrations.bitnet")

REL_BOUND = 1e-5
VARIANTS = [("bitlinear", "offline"), ("autobitlinear", "online"), ("autobitlinear", "offline")]


def _eager() -> contextlib.AbstractContextManager[object]:
    return torch.compiler.set_stance("force_eager")


def _config() -> Any:
    cfg = transformers.BitNetConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=1,
    )
    cfg._attn_implementation = "eager"
    return cfg


def _quant_config(linear_class: str, mode: str) -> Any:
    return transformers.BitNetQuantConfig(
        linear_class=linear_class, quantization_mode=mode, modules_to_not_convert=["lm_head"]
    )


def _fill(model: nn.Module, seed: int) -> None:
    """Random ternary weights (and scales) in every HF BitNet linear."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, hf_bitnet.BitLinear):
                codes = torch.randint(-1, 2, (m.out_features, m.in_features), generator=g)
                m.weight.copy_(hf_bitnet.pack_weights(codes.clone()))
                m.weight_scale.copy_(torch.rand(1, generator=g) * 2 + 0.5)
            elif isinstance(m, hf_bitnet.AutoBitLinear):
                w = torch.randn(m.out_features, m.in_features, generator=g) * 0.05
                if m.online_quant:
                    m.weight.copy_(w)
                else:
                    m.weight.copy_(torch.randint(-1, 2, w.shape, generator=g).float())
                    m.weight_scale.copy_(torch.rand(1, generator=g) * 0.05 + 0.01)


def _hf_model(linear_class: str, mode: str, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    model = transformers.BitNetForCausalLM(_config()).eval()
    hf_bitnet.replace_with_bitnet_linear(
        model, modules_to_not_convert=["lm_head"], quantization_config=_quant_config(linear_class, mode)
    )
    _fill(model, seed + 1)
    return model


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with _eager():
        return model(ids, use_cache=False).logits.float()


def _assert_close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    scale = float(ref.abs().max())
    assert scale > 0.1, "degenerate logits"
    rel = float((ours - ref).abs().max()) / scale
    assert rel <= REL_BOUND, f"max |diff| / max |logit| = {rel:.3g} > {REL_BOUND}"
    return rel


# ----------------------------------------------------------------- (a) same maths as HF
@pytest.mark.parametrize(("linear_class", "mode"), VARIANTS)
def test_converted_hf_model_matches_transformers(linear_class: str, mode: str) -> None:
    hf = _hf_model(linear_class, mode)
    ids = _ids()
    ref = _logits(hf, ids)
    ours = load_hf_bitnet(hf)
    layers = dict(be.bitnet_layers(ours))
    assert len(layers) == 14 and isinstance(ours.lm_head, nn.Linear)  # lm_head float, as in HF
    assert all(layer.weight_frozen == (mode == "offline") for layer in layers.values())
    _assert_close(_logits(ours, ids), ref)
    # convert_to_bitnet gives the same layers (and reports them)
    conv, report = convert_to_bitnet(hf, skip=["lm_head"], return_report=True)
    assert [c.path for c in report.converted] == list(layers)
    assert report.converted[0].source.endswith(("BitLinear", "AutoBitLinear"))
    assert [f.path for f in report.left_float] == ["lm_head"]
    _assert_close(_logits(conv, ids), ref)


def _hf_codes(x: torch.Tensor) -> torch.Tensor:
    """transformers' activation codes, its expression as written (eager)."""
    gamma = 127 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    return (x * gamma).round().clamp(-128, 127)


@pytest.mark.parametrize(("linear_class", "mode"), VARIANTS)
def test_every_layer_matches_on_transformers_inputs(linear_class: str, mode: str) -> None:
    """Teacher-forced: each BitNetLayer on the exact input its HF linear saw in HF's forward.

    Rows whose activation codes agree (all but near-ties: HF's gamma is
    ``reciprocal(absmax) * 127``, ours ``127 / absmax``, which can differ by one ulp) match to a
    few float32 ulps of the layer's output scale; a differing code is off by one, at a tie.
    """
    hf = _hf_model(linear_class, mode, seed=6)
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, p=p: seen.__setitem__(p, (args[0], out)))
        for p, m in hf.named_modules()
        if isinstance(m, (hf_bitnet.BitLinear, hf_bitnet.AutoBitLinear))
    ]
    _logits(hf, _ids(6))
    for h in hooks:
        h.remove()
    ours = dict(be.bitnet_layers(load_hf_bitnet(hf)))
    assert sorted(seen) == sorted(ours)
    ties = 0
    for path, (x, ref) in seen.items():
        with torch.no_grad():
            y = ours[path](x)
        q_ours, _ = be.quant.functional.quantize_dynamic_per_token(x, 8, 1e-5)
        differ = q_ours != _hf_codes(x)
        rows = differ.any(dim=-1)
        if bool(rows.any()):
            assert bool(((q_ours - _hf_codes(x)).abs() <= 1).all())
            frac = (x * (127 / x.abs().amax(-1, keepdim=True))).abs() % 1
            assert bool(((frac[differ] - 0.5).abs() < 1e-4).all()), "a code differs away from a tie"
            ties += int(differ.sum())
        same = ~rows
        err = float((y[same] - ref[same]).abs().max())
        assert err <= 4e-6 * float(ref.abs().max()), path
    assert ties <= 3  # measured: 0 of 24,576 codes per forward with these seeds


@pytest.mark.parametrize(("linear_class", "mode"), VARIANTS)
def test_single_layer_with_bias_matches_transformers(linear_class: str, mode: str) -> None:
    torch.manual_seed(3)
    if linear_class == "bitlinear":
        hf = hf_bitnet.BitLinear(48, 20, bias=True, dtype=torch.float32)
    else:
        hf = hf_bitnet.AutoBitLinear(48, 20, bias=True, online_quant=mode == "online")
    _fill(hf, 4)
    with torch.no_grad():
        hf.bias.copy_(torch.randn(20))
    x = torch.randn(5, 48) * 3
    with torch.no_grad(), _eager():
        ref = hf(x)
    seq: Any = convert_to_bitnet(nn.Sequential(hf))
    layer = seq[0]
    assert isinstance(layer, BitNetLayer) and layer.precision == 1.58
    with torch.no_grad():
        ours = layer(x)
    # a single layer: a few ulps of the output scale
    assert float((ours - ref).abs().max()) <= 4e-6 * float(ref.abs().max())


def test_pack_unpack_match_transformers() -> None:
    g = torch.Generator().manual_seed(5)
    for out_features in (4, 8, 20):
        codes = torch.randint(-1, 2, (out_features, 6), generator=g)
        packed = hf_bitnet.pack_weights(codes.clone())
        assert torch.equal(pack_ternary(codes), packed)
        assert torch.equal(unpack_ternary(packed, out_features), codes.to(torch.int8))


# ----------------------------------------------------------------- (b) safetensors round trip
@pytest.mark.parametrize(("linear_class", "mode"), [("bitlinear", "offline"), ("autobitlinear", "offline")])
def test_safetensors_checkpoint_loads_into_converted_model(
    tmp_path: Path, linear_class: str, mode: str
) -> None:
    hf = _hf_model(linear_class, mode, seed=1)
    ids = _ids(1)
    ref = _logits(hf, ids)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if linear_class == "autobitlinear":  # offline AutoBitLinear checkpoints are packed too
        for key in [k for k in state if k.endswith("_proj.weight")]:
            state[key] = hf_bitnet.pack_weights(state[key].clone())
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(state, str(path))
    qc = {"quant_method": "bitnet", "linear_class": linear_class, "quantization_mode": mode}
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": qc}))

    torch.manual_seed(99)  # different float init: everything must come from the file
    fresh = convert_to_bitnet(transformers.BitNetForCausalLM(_config()).eval(), skip=["lm_head"])
    loaded = load_hf_bitnet(path, fresh)  # linear_class read from config.json
    assert loaded is fresh
    _assert_close(_logits(loaded, ids), ref)
    # the frozen codes survive our own state_dict round trip, into default-built layers
    again: Any = convert_to_bitnet(transformers.BitNetForCausalLM(_config()).eval(), skip=["lm_head"])
    again.load_state_dict(loaded.state_dict())
    assert torch.equal(_logits(again, ids), _logits(loaded, ids))
    q = again.model.layers[0].mlp.down_proj.quant_params()
    assert q.weight.scheme == "ternary" and q.weight.values.min() >= -1 and q.weight.values.max() <= 1


def test_checkpoint_folder_and_explicit_linear_class(tmp_path: Path) -> None:
    hf = _hf_model("bitlinear", "offline", seed=2)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    keys = sorted(state)
    half = len(keys) // 2
    safetensors_torch.save_file(
        {k: state[k] for k in keys[:half]}, str(tmp_path / "model-00001-of-00002.safetensors")
    )
    safetensors_torch.save_file(
        {k: state[k] for k in keys[half:]}, str(tmp_path / "model-00002-of-00002.safetensors")
    )
    fresh = convert_to_bitnet(transformers.BitNetForCausalLM(_config()).eval(), skip=["lm_head"])
    load_hf_bitnet(tmp_path, fresh, linear_class="bitlinear")
    ids = _ids(2)
    _assert_close(_logits(fresh, ids), _logits(hf, ids))


# ----------------------------------------------------------------- (c) subclasses and the report
class PlainLinear(nn.Linear):
    """An nn.Linear subclass that keeps nn.Linear.forward."""


class ScaledLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().forward(x)


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.plain = PlainLinear(8, 8)
        self.custom = ScaledLinear(8, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.custom(self.plain(x))
        return self.head(self.attn(h, h, h, need_weights=False)[0])


def test_plain_subclass_converted_custom_forward_left_float_and_reported() -> None:
    torch.manual_seed(0)
    net = Mixed()
    with pytest.warns(UserWarning, match=r"'custom'.*ScaledLinear.*own forward.*skip=") as rec:
        conv, report = convert_to_bitnet(net, return_report=True)
    conv_: Any = conv
    assert len(rec) == 1
    assert isinstance(conv.plain, BitNetLayer) and torch.equal(conv.plain.weight, net.plain.weight)
    assert type(conv.custom) is ScaledLinear and isinstance(conv.head, BitNetLayer)
    assert isinstance(conv_.attn.out_proj, nn.Linear)  # MultiheadAttention reads its weight directly
    assert {c.path: (c.in_features, c.out_features) for c in report.converted} == {
        "plain": (8, 8),
        "head": (8, 3),
    }
    assert report.converted[0].source == f"{__name__}.PlainLinear"
    reasons = {f.path: f.reason for f in report.left_float}
    assert "overrides forward" in reasons["custom"] and "MultiheadAttention" in reasons["attn.out_proj"]
    text = report.format()
    assert "2 converted, 2 left" in text and "custom" in text and "fix: add 'custom' to skip" in text
    conv(torch.randn(2, 4, 8))  # still runs
    # the default return value is the model; skipping the subclass explicitly silences the warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = convert_to_bitnet(net, skip=["custom"])
    assert isinstance(model, Mixed)


def test_report_is_frozen_and_plan_cannot_requantize_hf_layers() -> None:
    hf = _hf_model("bitlinear", "offline")
    _, report = convert_to_bitnet(hf, skip=["lm_head"], return_report=True)
    with pytest.raises(AttributeError):
        report.converted = ()  # type: ignore[misc]
    assert report.converted[0].weights == "frozen" and report.converted[0].precision == 1.58
    with pytest.raises(QuantConfigError, match=r"'\*q_proj'.*q_proj.*ternary.*remove it from the plan"):
        convert_to_bitnet(hf, plan={"*q_proj": 8})


# ----------------------------------------------------------------- BitNetLayer with given codes
def test_from_quantized_state_dict_and_quant_params() -> None:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-1, 2, (6, 10), generator=g)
    layer = BitNetLayer.from_quantized(codes, torch.tensor([0.5]), torch.randn(6, generator=g))
    x = torch.randn(3, 10, generator=g)
    y = layer(x)
    assert torch.equal(layer.weight, codes.float() * 0.5) and not layer.weight.requires_grad
    params = layer.quant_params()
    assert (params.weight.values == codes.numpy()).all() and params.weight.scale.tolist() == [0.5]
    fresh = BitNetLayer(10, 6, precision=8, granularity="per_channel")
    fresh.load_state_dict(layer.state_dict())
    assert fresh.weight_frozen and fresh.precision == 1.58 and torch.equal(fresh(x), y)
    fresh.load_state_dict(BitNetLayer(10, 6).state_dict())  # a latent checkpoint unfreezes
    assert not fresh.weight_frozen and fresh.weight.requires_grad
    per_channel = BitNetLayer.from_quantized(codes, torch.linspace(0.1, 0.6, 6))
    assert per_channel.granularity == "per_channel"
    with pytest.raises(QuantConfigError, match=r"granularity.*unfreeze_weight"):
        layer.configure_quantization(granularity="per_channel")
    with pytest.raises(QuantConfigError, match=r"binary.*never 0"):
        layer.configure_quantization(precision=1)
    with pytest.raises(QuantConfigError, match=r"span -2\.\.0.*outside -1\.\.1"):
        BitNetLayer.from_quantized(codes - 1, 0.5)
    with pytest.raises(QuantConfigError, match="positive and finite"):
        BitNetLayer.from_quantized(codes, 0.0)
    with pytest.raises(QuantConfigError, match="scale has 3 values"):
        BitNetLayer.from_quantized(codes, torch.ones(3))


# ----------------------------------------------------------------- (d) error paths
def _fresh() -> Any:
    torch.manual_seed(1)
    return convert_to_bitnet(transformers.BitNetForCausalLM(_config()).eval(), skip=["lm_head"])


def _checkpoint() -> dict[str, torch.Tensor]:
    return dict(_hf_model("bitlinear", "offline").state_dict())


Q = "model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: s.pop(f"{Q}.weight"), rf"no '{Q}.weight'.*skip="),
        (
            lambda s: s.pop(f"{Q}.weight_scale"),
            rf"'{Q}.weight'.*is torch.uint8.*'{Q}.weight_scale' is missing",
        ),
        (
            lambda s: s.__setitem__(f"{Q}.weight", s[f"{Q}.weight"][:8]),
            rf"'{Q}.weight'.*expected \[16, in_features\]",
        ),
        (
            lambda s: s.__setitem__(f"{Q}.weight", s[f"{Q}.weight"].int()),
            rf"'{Q}.weight'.*dtype torch.int32.*uint8",
        ),
        (
            lambda s: s.__setitem__(f"{Q}.weight", torch.full((64, 64), 0.3)),
            rf"'{Q}.weight'.*ternary codes.*0.3",
        ),
        (
            lambda s: s.__setitem__(f"{Q}.weight_scale", torch.zeros(1)),
            rf"'{Q}.weight_scale' must be positive",
        ),
        (lambda s: s.__setitem__(f"{Q}.weight_scale", torch.ones(3)), rf"'{Q}.weight_scale' has 3 values"),
        (lambda s: s.__setitem__(f"{Q}.bias", torch.zeros(64)), rf"'{Q}.bias'.*has no bias"),
        (
            lambda s: s.__setitem__("model.extra.weight", torch.zeros(1)),
            r"'model.extra.weight'.*strict=False",
        ),
        (lambda s: s.pop("model.norm.weight"), r"lacks model tensor\(s\) 'model.norm.weight'"),
        (
            lambda s: s.__setitem__("model.norm.weight", torch.ones(32)),
            r"'model.norm.weight' has shape \(32,\).*\(64,\)",
        ),
        (
            lambda s: s.__setitem__(f"{Q}.rms_norm.weight", torch.ones(64)),
            r"use_rms_norm=True is not supported",
        ),
    ],
)
def test_load_errors_name_the_key_and_the_fix(edit, match) -> None:  # type: ignore[no-untyped-def]
    state = _checkpoint()
    edit(state)
    with pytest.raises(QuantConfigError, match=match):
        load_hf_bitnet(state, _fresh())


def test_load_errors_for_wrong_inputs(tmp_path: Path) -> None:
    state = _checkpoint()
    with pytest.raises(QuantConfigError, match=r"needs the model to load into.*convert_to_bitnet"):
        load_hf_bitnet(state)
    with pytest.raises(QuantConfigError, match=r"no BitNetLayer.*convert it first"):
        load_hf_bitnet(state, transformers.BitNetForCausalLM(_config()))
    with pytest.raises(QuantConfigError, match=r"no transformers BitLinear.*convert_to_bitnet"):
        load_hf_bitnet(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(QuantConfigError, match=r"linear_class='bitlinear4'.*bitlinear, autobitlinear"):
        load_hf_bitnet(state, _fresh(), linear_class="bitlinear4")  # type: ignore[arg-type]
    with pytest.raises(QuantConfigError, match=r"not a \.safetensors file"):
        load_hf_bitnet(tmp_path / "missing.safetensors", _fresh())
    fresh = _fresh()
    fresh.lm_head = nn.Linear(64, 128, bias=False)
    swapped = dict(state)
    swapped["lm_head.weight"] = state[f"{Q}.weight"]
    with pytest.raises(QuantConfigError, match=r"'lm_head.weight' has shape|'lm_head.weight' is torch.uint8"):
        load_hf_bitnet(swapped, fresh)
    # strict=False ignores extra keys and missing float tensors
    state.pop("model.norm.weight")
    state["model.extra.weight"] = torch.zeros(1)
    load_hf_bitnet(state, _fresh(), strict=False)


# ----------------------------------------------------------------- still exports
class LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids, use_cache=False).logits


def test_converted_hf_model_exports_to_onnx(tmp_path: Path) -> None:
    model = load_hf_bitnet(_hf_model("bitlinear", "offline"))
    ids = _ids()
    try:
        result = be.export_onnx(
            LogitsOnly(model).eval(), (ids,), tmp_path / "bitnet.onnx", dynamic_batch=False
        )
    except be.ExportError as exc:  # capture of HF models is being extended separately
        pytest.xfail(f"capture of the transformers model failed: {str(exc)[:300]}")
    assert Path(result.path).is_file() and len(result.layers) == 14
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: ids.numpy()})[0])
    ref = _logits(model, ids)
    per_position = (got - ref).abs().amax(dim=-1) / float(ref.abs().max())
    # float32 rounding everywhere except positions behind an activation code at a rounding tie
    # (ORT's norms and softmax round differently from PyTorch's; measured: 1 of 24 positions)
    assert float(per_position.median()) <= REL_BOUND
    assert float(per_position.max()) <= 1e-2


def test_gpt2_conv1d_layers_are_converted(tmp_path):
    """transformers' Conv1D (GPT-2: weight [in, out]) converts like a Linear, weights transposed."""
    cfg = transformers.GPT2Config(
        vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64, use_cache=False
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    model, report = be.convert_to_bitnet(hf, return_report=True)
    paths = [c.path for c in report.converted]
    assert "transformer.h.0.attn.c_attn" in paths and "transformer.h.1.mlp.c_proj" in paths
    assert len(paths) == 2 * 4 + 1 and not report.left_float  # c_attn, c_proj, c_fc, mlp.c_proj; lm_head
    ids = torch.randint(0, 128, (1, 10))
    be.configure_model(model, enabled=False)  # float BitNetLayers: the same maths as HF's Conv1D
    torch.testing.assert_close(model(ids).logits, hf(ids).logits, rtol=1e-5, atol=1e-5)
    be.configure_model(model, enabled=True)
    path = be.export_onnx(model, ids, tmp_path / "gpt2.onnx", weights="int2").path
    result = be.verify(model, ids, path, ["ort-cpu"])
    assert result.passed, result.format_table()
