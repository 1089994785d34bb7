"""``BitNetLayer``: a quantization-aware linear layer that records what it quantized with.

Forward pass (quantization enabled, ``blend == 1``)::

    Wq, s_w = quantize_weight(W)              # ternary / binary / k-bit, see quant.functional
    xq, ...  = quantize_activations(x)        # per-token dynamic (BitNet) or static per-tensor
    y = (xq dequantized) @ (Wq * s_w)^T + bias

Training uses the straight-through estimator (STE): the forward value is the quantized one,
the gradient flows to the latent float weight ``layer.weight`` as if quantization were the
identity (for static activations, clipped: no gradient where the input saturated).

Every parameter used is available as a frozen :class:`~bitnet_export.quant.params.LayerQuantParams`
from :meth:`BitNetLayer.quant_params`, and lives in ``state_dict()`` (latent weights, observer
ranges, the calibration flag and, as ``_extra_state``, the configuration), so a checkpoint
reloads bit-identically, even into a layer built with default options.

Given weights: :meth:`BitNetLayer.from_quantized` (or :meth:`BitNetLayer.freeze_weight`) makes
a layer compute with integer codes and a scale it is handed (e.g. a Hugging Face BitNet
checkpoint's ternary weights) instead of quantizing ``layer.weight``; the codes and scale live
in ``state_dict()`` as the buffers ``frozen_codes`` / ``frozen_scale``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import nn

from bitnet_export.errors import NotCalibratedError, QuantConfigError
from bitnet_export.quant import functional as qf
from bitnet_export.quant.observers import RangeObserver
from bitnet_export.quant.params import (
    ACTIVATION_MODES,
    GRANULARITIES,
    OBSERVERS,
    ActivationQuantParams,
    Granularity,
    LayerQuantParams,
    WeightQuantParams,
    parse_precision,
    weight_scheme,
)

__all__ = ["QUANT_OPTIONS", "BitNetLayer"]

#: The options accepted by :meth:`BitNetLayer.configure_quantization` (and the constructor).
QUANT_OPTIONS: Final[tuple[str, ...]] = (
    "precision",
    "activation_bits",
    "activation_mode",
    "granularity",
    "symmetric",
    "eps",
    "observer",
    "observer_momentum",
    "enabled",
    "blend",
)


def _ste(x: torch.Tensor, xq: torch.Tensor, blend: float, grad_factor: torch.Tensor | None) -> torch.Tensor:
    """Straight-through estimator with gradual blending.

    Value: ``xq`` when ``blend == 1`` (bit-exact, no float round trip), otherwise
    ``x + blend * (xq - x)``. Gradient w.r.t. ``x``: 1, or for a clipped STE
    ``(1 - blend) + blend * grad_factor``.
    """
    value = xq if blend == 1.0 else torch.lerp(x.detach(), xq, blend)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return value
    delta = x - x.detach()  # exactly 0 in value, identity in gradient
    if grad_factor is not None:
        delta = delta * ((1.0 - blend) + blend * grad_factor)
    return value.detach() + delta


#: Smallest static activation scale accepted: a normal float32 (TFLite's and ORT's requantizers
#: divide by it; a denormal or zero scale makes their multipliers overflow).
_MIN_STATIC_SCALE: Final = 1.1754944e-38  # np.finfo(np.float32).tiny


class BitNetLayer(nn.Module):
    """Linear layer with BitNet-style weight and activation quantization.

    Args:
        input_dim: input features (``in_features`` of ``nn.Linear``).
        output_dim: output features.
        precision: weight precision: ``1.58`` or ``"ternary"`` (default), ``1`` or
            ``"binary"``, ``2``, ``4``, ``8``.
        bias: add a learnable bias (BitNet itself uses none: pass ``False``).
        **options: any of :data:`QUANT_OPTIONS` (see :meth:`configure_quantization`).

    Raises:
        QuantConfigError: an invalid precision or option (a ``ValueError``).

    Example:
        >>> layer = BitNetLayer(input_dim=512, output_dim=256, precision=8)
        >>> layer(torch.randn(1, 512)).shape
        torch.Size([1, 256])
    """

    calibrated: torch.Tensor
    frozen_codes: torch.Tensor | None
    frozen_scale: torch.Tensor | None

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        precision: float | int | str = 1.58,
        bias: bool = True,
        **options: Any,
    ) -> None:
        super().__init__()
        for name, dim in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
                raise QuantConfigError(f"BitNetLayer: {name}={dim!r} must be a positive int")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.weight = nn.Parameter(torch.empty(output_dim, input_dim))
        self.bias: nn.Parameter | None = nn.Parameter(torch.empty(output_dim)) if bias else None
        self.reset_parameters()

        #: Path of this layer in its model; filled by the model helpers, used in messages.
        self.module_path = ""
        self._precision: float | int = parse_precision(precision)
        self._granularity: Granularity | None = None  # None: the precision's default
        self.activation_bits = 8
        self.activation_mode = "dynamic"
        self.symmetric = False
        self.eps = 1e-5
        self.enabled = True
        self.blend = 1.0
        self.calibrating = False
        self.input_observer = RangeObserver()
        self.output_observer = RangeObserver()
        self.register_buffer("calibrated", torch.tensor(False))
        # given weight codes [out, in] int8 and scale [1] / [out] float32 (None: quantize
        # `weight` on the fly); see freeze_weight()
        self.register_buffer("frozen_codes", None)
        self.register_buffer("frozen_scale", None)
        self._ctx: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Size] | None
        self._ctx = None
        #: Set by bitnet_export.capture while a model is being exported: the forward then
        #: emits one ``bitnet_export::bitlinear`` node carrying this recorded config.
        self._capture_config: str | None = None
        if options:
            self.configure_quantization(**options)

    # ----------------------------------------------------------------- configuration
    def reset_parameters(self) -> None:
        """Initialise like ``nn.Linear`` (Kaiming-uniform weight, uniform bias)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.input_dim)
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def in_features(self) -> int:
        """Alias of ``input_dim`` (``nn.Linear`` naming)."""
        return self.input_dim

    @property
    def out_features(self) -> int:
        """Alias of ``output_dim`` (``nn.Linear`` naming)."""
        return self.output_dim

    @property
    def precision(self) -> float | int:
        """Weight precision: 1.58 (ternary), 1 (binary), 2, 4 or 8."""
        return self._precision

    @property
    def granularity(self) -> Granularity:
        """Weight scale granularity; default per tensor for ternary/binary, per channel for k-bit."""
        if self.frozen_scale is not None:
            return "per_tensor" if self.frozen_scale.numel() == 1 else "per_channel"
        if self._granularity is not None:
            return self._granularity
        return "per_tensor" if self._precision in (1.58, 1) else "per_channel"

    @property
    def weight_frozen(self) -> bool:
        """Whether the layer computes with given codes and scale (see :meth:`freeze_weight`)."""
        return self.frozen_codes is not None

    def configure_quantization(self, **options: Any) -> BitNetLayer:
        """Change how this layer quantizes. All options are checked before any is applied.

        Args:
            **options: any of
                ``precision`` (1.58/"ternary", 1/"binary", 2, 4, 8),
                ``activation_bits`` (int, 2..8),
                ``activation_mode`` ("dynamic": per-token absmax, or "static": calibrated
                per-tensor),
                ``granularity`` ("per_tensor", "per_channel", or None for the precision's
                default),
                ``symmetric`` (bool, static activations: zero point fixed at 0),
                ``eps`` (float > 0, floor of every scale's range),
                ``observer`` ("minmax" or "moving_average"),
                ``observer_momentum`` (float in (0, 1]),
                ``enabled`` (bool; False makes the layer a float linear),
                ``blend`` (float in [0, 1]; gradual quantization, 0 = float, 1 = quantized).

        Returns:
            ``self``, so calls can be chained.

        Raises:
            QuantConfigError: an unknown option (the message lists the valid ones) or an
                invalid value.
        """
        unknown = sorted(set(options) - set(QUANT_OPTIONS))
        if unknown:
            raise QuantConfigError(
                f"{self._label()}: unknown quantization option(s) {', '.join(unknown)}; "
                f"valid options are: {', '.join(QUANT_OPTIONS)}"
            )
        new: dict[str, Any] = {}
        for key, value in options.items():
            new[key] = self._validate_option(key, value)
        if self.frozen_codes is not None and self.frozen_scale is not None:
            if "precision" in new:
                self._check_codes(self.frozen_codes, new["precision"], "configure_quantization")
            gran = new.get("granularity")
            if gran is not None and gran != self.granularity:
                raise QuantConfigError(
                    f"{self._label()}: granularity={gran!r} but the frozen weight scale is "
                    f"{self.granularity} ({self.frozen_scale.numel()} value(s)); call "
                    "unfreeze_weight() first to quantize the float weight again"
                )
        if "precision" in new:
            self._precision = new["precision"]
        if "granularity" in new:
            self._granularity = new["granularity"]
        for key in ("activation_bits", "activation_mode", "symmetric", "eps", "enabled", "blend"):
            if key in new:
                setattr(self, key, new[key])
        if "observer" in new or "observer_momentum" in new:
            kind = new.get("observer", self.input_observer.kind)
            momentum = new.get("observer_momentum", self.input_observer.momentum)
            for obs in (self.input_observer, self.output_observer):
                obs.configure(kind, momentum)
        return self

    def _validate_option(self, key: str, value: Any) -> Any:
        where = f"{self._label()}: {key}={value!r}"
        if key == "precision":
            return parse_precision(value)
        if key == "activation_bits":
            if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 8:
                raise QuantConfigError(f"{where} must be an int from 2 to 8")
            return value
        if key == "activation_mode":
            if value not in ACTIVATION_MODES:
                raise QuantConfigError(
                    f"{where} is not supported; choose one of {', '.join(ACTIVATION_MODES)}"
                )
            return value
        if key == "granularity":
            if value is not None and value not in GRANULARITIES:
                raise QuantConfigError(
                    f"{where} is not supported; choose one of {', '.join(GRANULARITIES)} or None"
                )
            return value
        if key in ("symmetric", "enabled"):
            if not isinstance(value, bool):
                raise QuantConfigError(f"{where} must be True or False")
            return value
        if key == "eps":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise QuantConfigError(f"{where} must be a positive float")
            if not (math.isfinite(value) and value > 0):
                raise QuantConfigError(f"{where} must be a positive finite float")
            return float(value)
        if key == "observer":
            if value not in OBSERVERS:
                raise QuantConfigError(f"{where} is not supported; choose one of {', '.join(OBSERVERS)}")
            return value
        if key == "observer_momentum":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise QuantConfigError(f"{where} must be a float in (0, 1]")
            if not 0.0 < float(value) <= 1.0:
                raise QuantConfigError(f"{where} must be a float in (0, 1]")
            return float(value)
        # key == "blend"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise QuantConfigError(f"{where} must be a float in [0, 1]")
        if not 0.0 <= float(value) <= 1.0:
            raise QuantConfigError(f"{where} must be a float in [0, 1] (0 = float, 1 = quantized)")
        return float(value)

    def quant_config(self) -> dict[str, Any]:
        """The configuration as plain data (what ``configure_quantization`` accepts)."""
        return {
            "precision": self._precision,
            "activation_bits": self.activation_bits,
            "activation_mode": self.activation_mode,
            "granularity": self._granularity,
            "symmetric": self.symmetric,
            "eps": self.eps,
            "observer": self.input_observer.kind,
            "observer_momentum": self.input_observer.momentum,
            "enabled": self.enabled,
            "blend": self.blend,
        }

    def get_extra_state(self) -> dict[str, Any]:
        """Configuration stored in ``state_dict()`` under ``_extra_state``."""
        return {"version": 1, "quant_config": self.quant_config()}

    def set_extra_state(self, state: Any) -> None:
        """Restore the configuration saved by :meth:`get_extra_state`."""
        if not isinstance(state, dict) or "quant_config" not in state:
            raise QuantConfigError(
                f"{self._label()}: checkpoint has no BitNetLayer quantization config "
                "(_extra_state); was it saved by bitnet_export?"
            )
        config = state["quant_config"]
        if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
            raise QuantConfigError(
                f"{self._label()}: checkpoint _extra_state['quant_config'] is a {type(config).__name__}, "
                "not the dict of configure_quantization() arguments that bitnet_export saves. Fix: "
                "save the checkpoint with torch.save(model.state_dict(), path) from a BitNetLayer model"
            )
        try:
            self.configure_quantization(**config)
        except TypeError as exc:  # an unknown or missing argument
            raise QuantConfigError(
                f"{self._label()}: checkpoint _extra_state['quant_config'] does not fit "
                f"configure_quantization(): {exc}. Fix: save the checkpoint with this bitnet_export "
                "version, or remove the unknown keys"
            ) from exc

    # ----------------------------------------------------------------- calibration
    def start_calibration(self) -> None:
        """Observe activation ranges on the following forward passes (static mode).

        While calibrating, activations pass through unquantized; weights stay quantized.
        """
        self.input_observer.reset()
        self.output_observer.reset()
        self.calibrated.fill_(False)
        self.calibrating = True

    def freeze_calibration(self) -> None:
        """Stop observing and fix the static scale and zero point from the observed range.

        Raises:
            NotCalibratedError: no batch was observed since :meth:`start_calibration`.
        """
        if not self.input_observer.has_data:
            raise NotCalibratedError(
                f"{self._label()}: calibration saw no data; run batches through the model "
                "between start_calibration() and freeze_calibration()"
            )
        self.calibrating = False
        self.calibrated.fill_(True)

    def _static_qparams(self, observer: RangeObserver) -> tuple[float, int]:
        lo, hi = float(observer.min_val), float(observer.max_val)
        scale, zp = qf.static_qparams(lo, hi, self.activation_bits, self.symmetric, self.eps)
        if not (math.isfinite(scale) and scale >= _MIN_STATIC_SCALE):
            which = "input" if observer is self.input_observer else "output"
            raise QuantConfigError(
                f"{self._label()}: the calibrated {which} range [{lo:.6g}, {hi:.6g}] gives the static "
                f"scale {scale:.6g}, which float32 int8 kernels cannot use (it must be finite and at "
                f"least {_MIN_STATIC_SCALE:g}). Fix: calibrate on data without such outliers (clip "
                "or normalize the inputs), or use activation_mode='dynamic'"
            )
        return scale, zp

    def _static_params(self, observer: RangeObserver) -> ActivationQuantParams:
        qmin, qmax = qf.activation_qrange(self.activation_bits)
        scale, zp = self._static_qparams(observer)
        return ActivationQuantParams(
            mode="static",
            bits=self.activation_bits,
            qmin=qmin,
            qmax=qmax,
            symmetric=self.symmetric,
            scale=scale,
            zero_point=zp,
            eps=self.eps,
            observer=observer.kind,
            observed_min=float(observer.min_val),
            observed_max=float(observer.max_val),
        )

    # ----------------------------------------------------------------- quantizers
    def quantize_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize the current latent weight.

        Returns:
            ``(codes, scale)``: integer-valued float32 codes ``[out, in]`` and the float32
            scale ``[out, 1]`` or ``[1, 1]``; the layer computes with ``codes * scale``.
            A frozen layer (:meth:`freeze_weight`) returns its given codes and scale.
        """
        if self.frozen_codes is not None and self.frozen_scale is not None:
            return self.frozen_codes.float(), self.frozen_scale.float().reshape(-1, 1)
        return qf.quantize_weight(self.weight.detach().float(), self._precision, self.eps, self.granularity)

    # ----------------------------------------------------------------- given weights
    @classmethod
    def from_quantized(
        cls,
        codes: torch.Tensor,
        scale: torch.Tensor | float,
        bias: torch.Tensor | None = None,
        *,
        precision: float | int | str = 1.58,
        **options: Any,
    ) -> BitNetLayer:
        """A layer that computes with given integer weight codes and scale.

        The layer's output is ``quantize_act(x) @ (codes * scale)^T + bias`` exactly as for a
        trained layer, but ``codes`` and ``scale`` are not recomputed from a float weight
        (``layer.weight`` holds ``codes * scale``, frozen). They survive ``state_dict()``
        round trips and are what :meth:`quant_params` and the exporters record.

        Args:
            codes: integer-valued ``[out_features, in_features]`` tensor, values in the
                precision's range (ternary and binary: ``-1..1``; k-bit: ``±(2^(k-1)-1)``).
            scale: positive finite scale, one value (per tensor) or ``[out_features]``
                (per output channel); the dequantized weight is ``codes * scale``.
            bias: optional ``[out_features]`` float bias.
            precision: the codes' precision (default ternary).
            **options: any of :data:`QUANT_OPTIONS` (activation options, ...).

        Returns:
            The new layer (float32, on ``codes``' device).

        Raises:
            QuantConfigError: codes that are not integers in range, a scale of the wrong
                size or not positive and finite, a bias of the wrong shape, a bad option.
        """
        if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
            raise QuantConfigError(
                "BitNetLayer.from_quantized: codes must be a 2-D [out_features, in_features] "
                f"tensor, got {type(codes).__name__} of shape {tuple(getattr(codes, 'shape', ()))}"
            )
        out_f, in_f = (int(d) for d in codes.shape)
        layer = cls(in_f, out_f, precision=precision, bias=bias is not None, **options)
        layer.to(device=codes.device)
        layer.freeze_weight(codes, scale)
        if bias is not None and layer.bias is not None:
            if tuple(bias.shape) != (out_f,):
                raise QuantConfigError(
                    f"BitNetLayer.from_quantized: bias of shape {tuple(bias.shape)} does not "
                    f"match out_features={out_f}; pass a [{out_f}] tensor"
                )
            with torch.no_grad():
                layer.bias.copy_(bias.detach().float())
        return layer

    def _check_codes(self, codes: torch.Tensor, precision: float | int, what: str) -> None:
        qmin, qmax = qf.weight_qrange(precision)
        c = codes.detach()
        if c.is_floating_point() and not bool(torch.isfinite(c).all() and (c == torch.round(c)).all()):
            raise QuantConfigError(f"{self._label()}: {what}: weight codes must be integers")
        if c.numel() and (int(c.min()) < qmin or int(c.max()) > qmax):
            raise QuantConfigError(
                f"{self._label()}: {what}: weight codes span {int(c.min())}..{int(c.max())}, "
                f"outside {qmin}..{qmax} of precision={precision}; pass codes of that precision "
                "or call unfreeze_weight() first"
            )
        if precision == 1 and bool((c == 0).any()):
            raise QuantConfigError(
                f"{self._label()}: {what}: binary weight codes are -1 or +1, never 0; "
                "use precision=1.58 (ternary) for codes with zeros"
            )

    @torch.no_grad()
    def freeze_weight(
        self, codes: torch.Tensor | None = None, scale: torch.Tensor | float | None = None
    ) -> BitNetLayer:
        """Compute with fixed integer codes and scale from now on.

        Without arguments the current quantization of ``layer.weight`` is frozen. With
        ``codes`` and ``scale`` (e.g. a BitNet checkpoint's ternary weights) the layer computes
        with exactly those. ``layer.weight`` is set to ``codes * scale`` and stops requiring
        gradients; :meth:`unfreeze_weight` makes it a trainable latent weight again.

        Args:
            codes: integer-valued ``[out_features, in_features]`` tensor in the range of the
                layer's precision.
            scale: positive finite scale: one value, or ``[out_features]`` values.

        Returns:
            ``self``.

        Raises:
            QuantConfigError: only one of ``codes`` / ``scale`` given, wrong shapes, codes out
                of range, or a scale that is not positive and finite.
        """
        if (codes is None) != (scale is None):
            raise QuantConfigError(f"{self._label()}: freeze_weight() needs both codes and scale, or neither")
        if codes is None or scale is None:
            codes, scale = self.quantize_weight()
        scale_t = torch.as_tensor(scale, dtype=torch.float32).detach().reshape(-1)
        expected = (self.output_dim, self.input_dim)
        if tuple(codes.shape) != expected:
            raise QuantConfigError(
                f"{self._label()}: freeze_weight: codes of shape {tuple(codes.shape)}, expected "
                f"[out_features, in_features] = {list(expected)}"
            )
        if scale_t.numel() not in (1, self.output_dim):
            raise QuantConfigError(
                f"{self._label()}: freeze_weight: scale has {scale_t.numel()} values; give one "
                f"(per tensor) or out_features={self.output_dim} (per channel)"
            )
        if not bool((torch.isfinite(scale_t) & (scale_t > 0)).all()):
            raise QuantConfigError(
                f"{self._label()}: freeze_weight: the weight scale must be positive and finite, "
                f"got {scale_t.tolist()[:4]}"
            )
        self._check_codes(codes, self._precision, "freeze_weight")
        device = self.weight.device
        self.frozen_codes = codes.detach().to(device=device, dtype=torch.int8).clone()
        self.frozen_scale = scale_t.to(device=device).clone()
        self._granularity = self.granularity
        self.weight.copy_(self.frozen_codes.float() * self.frozen_scale.reshape(-1, 1))
        self.weight.requires_grad_(False)
        return self

    def unfreeze_weight(self) -> BitNetLayer:
        """Quantize ``layer.weight`` on the fly again (it keeps ``codes * scale``, trainable)."""
        self.frozen_codes = None
        self.frozen_scale = None
        self._granularity = None
        self.weight.requires_grad_(True)
        return self

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # a checkpoint of a frozen layer loads into any layer (and a non-frozen one unfreezes):
        # make room for the frozen buffers, or drop them, before the base class copies
        codes = state_dict.get(prefix + "frozen_codes")
        scale = state_dict.get(prefix + "frozen_scale")
        device = self.weight.device
        if isinstance(codes, torch.Tensor) and isinstance(scale, torch.Tensor):
            self.frozen_codes = torch.zeros(codes.shape, dtype=torch.int8, device=device)
            self.frozen_scale = torch.ones(scale.shape, dtype=torch.float32, device=device)
            self.weight.requires_grad_(False)
        elif self.frozen_codes is not None and prefix + "weight" in state_dict:
            self.unfreeze_weight()
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def quant_params(self) -> LayerQuantParams:
        """Freeze and return every quantization parameter this layer computes with.

        Raises:
            NotCalibratedError: static activation mode and the layer was never calibrated.
        """
        codes, scale = self.quantize_weight()
        qmin_w, qmax_w = qf.weight_qrange(self._precision)
        weight = WeightQuantParams(
            scheme=weight_scheme(self._precision),
            precision=self._precision,
            storage_bits={1.58: 2, 1: 1}.get(self._precision, int(self._precision)),
            granularity=self.granularity,
            values=codes.to(torch.int8).numpy(),
            scale=scale.reshape(-1).numpy(),
            qmin=qmin_w,
            qmax=qmax_w,
        )
        qmin, qmax = qf.activation_qrange(self.activation_bits)
        output: ActivationQuantParams | None = None
        if self.activation_mode == "dynamic":
            act = ActivationQuantParams(
                mode="dynamic",
                bits=self.activation_bits,
                qmin=qmin,
                qmax=qmax,
                symmetric=True,
                eps=self.eps,
            )
        else:
            self._require_calibrated("quant_params")
            act = self._static_params(self.input_observer)
            output = self._static_params(self.output_observer)
        return LayerQuantParams(
            module_path=self.module_path,
            in_features=self.input_dim,
            out_features=self.output_dim,
            weight=weight,
            input=act,
            output=output,
            bias=None if self.bias is None else self.bias.detach().float().numpy(),
            enabled=self.enabled,
            blend=self.blend,
        )

    # ----------------------------------------------------------------- forward / backward
    def _label(self) -> str:
        return f"BitNetLayer '{self.module_path}'" if self.module_path else "BitNetLayer"

    def _require_calibrated(self, what: str) -> None:
        if not bool(self.calibrated):
            raise NotCalibratedError(
                f"{self._label()}: activation_mode='static' but the layer was never calibrated "
                f"({what}). Fix: run `bitnet_export.calibrate(model, batches)` (or "
                "start_calibration(), forward passes, freeze_calibration()), or use "
                "activation_mode='dynamic'"
            )

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self._label()}: expected a torch.Tensor input, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.input_dim:
            raise ValueError(
                f"{self._label()}: input of shape {tuple(x.shape)} does not match "
                f"input_dim={self.input_dim}; the last dimension must be {self.input_dim}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantized linear map of ``x`` ``[..., input_dim]`` to ``[..., output_dim]``.

        Raises:
            ValueError: the last dimension of ``x`` is not ``input_dim``.
            NotCalibratedError: static mode, not calibrated and not calibrating.
        """
        self._check_input(x)
        x = x.float() if x.dtype != torch.float32 else x  # the layer computes in float32
        if self._capture_config is not None:
            op = torch.ops.bitnet_export.bitlinear
            if x.dim() == 1:  # one token: backends see a [1, in] row (a 1-D FC output is [1, out])
                y = op(x.reshape(1, -1), self.weight_q, self.weight_scale, self.bias, self._capture_config)
                return y.reshape(-1)
            return op(x, self.weight_q, self.weight_scale, self.bias, self._capture_config)
        blend = self.blend if self.enabled else 0.0
        x_factor: torch.Tensor | None = None
        exact: Callable[[], torch.Tensor] | None = None  # the integer form, for inference
        if blend == 0.0:
            w_used: torch.Tensor = self.weight
            x_used = x
        else:
            codes, scale = self.quantize_weight()
            w_used = _ste(self.weight, codes * scale, blend, None)
            xd = x.detach()
            if self.activation_mode == "dynamic":
                xc, gamma = qf.quantize_dynamic_per_token(xd, self.activation_bits, self.eps)
                x_used = _ste(x, xc / gamma, blend, None)
                exact = lambda: qf.linear_dynamic_int(  # noqa: E731
                    xd, codes, scale, self.bias, self.activation_bits, self.eps
                )
            elif self.calibrating:
                if not bool(torch.isfinite(x).all()):
                    raise ValueError(
                        f"{self._label()}: calibration input contains NaN or Inf; clean the calibration data"
                    )
                self.input_observer.observe(x)
                x_used = x
            else:
                self._require_calibrated("forward")
                s, zp = self._static_qparams(self.input_observer)
                xc = qf.quantize_static(xd, s, zp, self.activation_bits)
                qmin, qmax = qf.activation_qrange(self.activation_bits)
                # clipped STE: no gradient where the input saturated (code at qmin/qmax
                # while the unclipped code lies beyond it)
                unclipped = torch.round(xd / torch.tensor(s)) + zp
                x_factor = ((unclipped >= qmin) & (unclipped <= qmax)).to(x.dtype)
                x_used = _ste(x, qf.dequantize_static(xc, s, zp), blend, x_factor)
                exact = lambda: qf.linear_static_int(  # noqa: E731
                    xd, codes, scale, self.bias, s, zp, self.activation_bits
                )
        wants_grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        if exact is not None and blend == 1.0 and not (self.training and wants_grad):
            # inference: the integer form, computed in the exported graphs' order
            y = exact()
            if self.activation_mode == "static":  # a TFLite reference: int8 outputs as the file's
                y = qf.requantize_output(self.module_path, y)
            if wants_grad:  # eval mode with autograd on: keep the STE gradient
                y_float = F.linear(x_used, w_used, self.bias)
                y = y.detach() + (y_float - y_float.detach())
        else:
            y = F.linear(x_used, w_used, self.bias)
        if self.calibrating and self.activation_mode == "static" and blend != 0.0:
            self.output_observer.observe(y)
        self._ctx = (x_used.detach(), w_used.detach(), x_factor, x.shape)
        return y

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        """Back-propagate ``grad_output`` through the most recent :meth:`forward`.

        This is the straight-through-estimator gradient, written out: with ``x_used`` and
        ``w_used`` the (de)quantized input and weight of that forward,

        * ``weight.grad += grad_output^T @ x_used`` (flattened over leading dims),
        * ``bias.grad += grad_output.sum(leading dims)``,
        * returns ``grad_input = (grad_output @ w_used) * mask`` where ``mask`` is 1 (dynamic)
          or, for static activations, ``(1 - blend) + blend * [input not saturated]``.

        It accumulates into ``.grad`` exactly as ``y.backward(grad_output)`` would, and returns
        what autograd gives as ``x.grad``.

        Args:
            grad_output: gradient w.r.t. the output, same shape as the forward's output.

        Returns:
            The gradient w.r.t. the forward's input.

        Raises:
            RuntimeError: no forward pass was run before.
            ValueError: ``grad_output`` does not have the output's shape.
        """
        if self._ctx is None:
            raise RuntimeError(f"{self._label()}: backward() called before forward()")
        x_used, w_used, x_factor, in_shape = self._ctx
        out_shape = (*in_shape[:-1], self.output_dim)
        if tuple(grad_output.shape) != tuple(out_shape):
            raise ValueError(
                f"{self._label()}: grad_output shape {tuple(grad_output.shape)} does not match "
                f"the last forward's output shape {tuple(out_shape)}"
            )
        g = grad_output.reshape(-1, self.output_dim)
        grad_w = g.t().mm(x_used.reshape(-1, self.input_dim))
        grad_in = g.mm(w_used).reshape(in_shape)
        if x_factor is not None:
            grad_in = grad_in * ((1.0 - self.blend) + self.blend * x_factor)
        _accumulate(self.weight, grad_w)
        if self.bias is not None:
            _accumulate(self.bias, g.sum(0))
        return grad_in

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, output_dim={self.output_dim}, "
            f"precision={self._precision}, bias={self.bias is not None}, "
            f"activation_mode={self.activation_mode}, activation_bits={self.activation_bits}, "
            f"granularity={self.granularity}"
        )


def _accumulate(param: nn.Parameter, grad: torch.Tensor) -> None:
    if param.grad is None:
        param.grad = grad.detach().clone()
    else:
        param.grad = param.grad + grad
