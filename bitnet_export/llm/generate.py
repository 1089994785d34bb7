"""Greedy generation, step by step: PyTorch's reference and loops over any runtime adapter.

A *step loop* drives an exported file through a plain :class:`~runtimes.protocol.RuntimeAdapter`
(ORT CPU, LiteRT interpreter, emulated aarch64, GPU), carrying the KV cache as named arrays:

* :class:`OrtGenaiLoop`: the ``ort-genai`` folder's ``model.onnx``: the prompt in one call,
  then one token per call; ``present.*`` become the next ``past_key_values.*``.
* :class:`LiteRtLmLoop`: the ``.litertlm`` bundle's TFLite model: whole ``prefill_len``
  chunks of the prompt through the ``prefill`` signature, the rest (and every generated token)
  through ``decode``. Each call is checked against the cache length first: a prompt plus
  generation that does not fit is an error (DYNAMIC_UPDATE_SLICE would clamp, not fail).

Both stop at ``max_seq_len`` as onnxruntime-genai does (``max_length`` counts the prompt):
the last token generated is the one at position ``max_seq_len - 1``'s logits. A prompt
longer than ``max_seq_len - 1`` leaves no room to generate and is refused (both runtimes
refuse it too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bitnet_export.errors import BitNetExportError

__all__ = [
    "CacheOverflowError",
    "Generation",
    "LiteRtLmLoop",
    "OrtGenaiLoop",
    "room",
    "torch_greedy",
]


class CacheOverflowError(BitNetExportError, ValueError):
    """A prompt (plus generation) that does not fit the exported KV cache."""


@dataclass
class Generation:
    """Greedy tokens of one prompt on one target.

    Attributes:
        target: who generated (``torch``, ``ort-cpu``, ``litert-builtin``...).
        prompt: the prompt's token ids.
        tokens: generated token ids, in order.
        logits: the logits row each token was chosen from (``[steps, vocab]``), when known.
        stopped: ``steps`` (asked count reached), ``max_seq_len`` (cache full) or ``eos``.
        info: what ran (runtime record), when known.
    """

    target: str
    prompt: list[int]
    tokens: list[int]
    logits: np.ndarray | None = None
    stopped: str = "steps"
    info: dict[str, Any] = field(default_factory=dict)


def room(prompt_len: int, steps: int, max_seq_len: int) -> int:
    """Tokens that can be generated: ``steps``, or fewer when the cache fills up first.

    Raises:
        CacheOverflowError: the prompt alone leaves no room (``prompt_len >= max_seq_len``).
    """
    if prompt_len < 1:
        raise CacheOverflowError("generate: the prompt is empty; give at least one token")
    if prompt_len >= max_seq_len:
        raise CacheOverflowError(
            f"generate: the prompt has {prompt_len} tokens and the exported KV cache holds "
            f"max_seq_len={max_seq_len}: no room to generate. Shorten the prompt or export with a "
            "larger max_seq_len"
        )
    return min(steps, max_seq_len - prompt_len)


def _stop_reason(n: int, steps: int, eos_hit: bool) -> str:
    """Why generation stopped after ``n`` tokens when ``steps`` were asked."""
    return "eos" if eos_hit else ("steps" if n >= steps else "max_seq_len")


def _is_hf(model: nn.Module) -> bool:
    return hasattr(model, "generate") and hasattr(model, "config") and hasattr(model, "lm_head")


def torch_greedy(
    model: nn.Module, prompt: Sequence[int], steps: int, max_seq_len: int, eos: Sequence[int] = ()
) -> Generation:
    """PyTorch's greedy tokens: HF ``generate(do_sample=False)`` for transformers models, else
    a full-recompute argmax loop (the model's own forward at every step)."""
    n = room(len(prompt), steps, max_seq_len)
    ids = torch.tensor([list(prompt)], dtype=torch.long)
    model.eval()
    hf: Any = model
    with torch.no_grad():
        if _is_hf(model):
            # generate() stops at the model's generation_config.eos_token_id unless told
            # otherwise: stop exactly at ``eos`` (none: never), as the runtimes are told
            config = hf.generation_config
            saved = config.eos_token_id
            config.eos_token_id = list(eos) or None
            try:
                out = hf.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=n,
                    do_sample=False,
                    num_beams=1,
                    output_logits=True,
                    return_dict_in_generate=True,
                    pad_token_id=(list(eos) or [0])[0],
                )
            finally:
                config.eos_token_id = saved
            tokens = [int(t) for t in out.sequences[0, len(prompt) :]]
            logits = torch.cat([row[:1] for row in out.logits]).float().numpy()
        else:
            tokens, rows = [], []
            for _ in range(n):
                row = model(ids)[0, -1].float()
                nxt = int(row.argmax())
                tokens.append(nxt)
                rows.append(row.numpy())
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
                if nxt in eos:
                    break
            logits = np.stack(rows)
    eos_hit = bool(tokens) and tokens[-1] in eos
    return Generation(
        "torch", list(prompt), tokens, logits[: len(tokens)], _stop_reason(len(tokens), steps, eos_hit)
    )


Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def _info_of(adapter: Any) -> dict[str, Any]:
    try:
        return dict(adapter.info().as_dict())
    except Exception:  # info is a record; a runtime that cannot give one still generated
        return {}


class OrtGenaiLoop:
    """Greedy decoding of an ``ort-genai`` export through an ONNX adapter (see module doc).

    Args:
        adapter: an ONNX Runtime adapter (``OrtCpuAdapter``, ``Arm64Adapter("ort", ...)``,
            ``OrtWebGpuAdapter``...), not yet loaded.
        folder: the export folder (``model.onnx``, ``genai_config.json``).
    """

    def __init__(self, adapter: Any, folder: str | Path) -> None:
        from bitnet_export.llm.export import llm_info

        self.folder = Path(folder)
        self.record = llm_info(self.folder)
        self.adapter = adapter
        adapter.load(self.folder / "model.onnx")
        self.name = str(adapter.name)

    def generate(self, prompt: Sequence[int], steps: int, eos: Sequence[int] = ()) -> Generation:
        """Greedy tokens after ``prompt`` (stops at ``steps``, an ``eos`` or ``max_seq_len``)."""
        r = self.record
        n = room(len(prompt), steps, int(r["max_seq_len"]))
        past = {
            name: np.zeros((1, r["kv_heads"], 0, r["head_dim"]), np.float32) for name in r["cache_inputs"]
        }
        ids = np.array([list(prompt)], np.int64)
        pos = 0
        tokens: list[int] = []
        rows: list[np.ndarray] = []
        while True:
            s = ids.shape[1]
            feed = {
                "input_ids": ids,
                "attention_mask": np.ones((1, pos + s), np.int64),
                "position_ids": np.arange(pos, pos + s, dtype=np.int64)[None],
                **past,
            }
            out = self.adapter.run(feed)
            row = np.asarray(out["logits"][0, -1], np.float32)
            nxt = int(row.argmax())
            tokens.append(nxt)
            rows.append(row)
            pos += s
            if len(tokens) == n or nxt in eos:
                break
            past = {i: out[o] for i, o in zip(r["cache_inputs"], r["cache_outputs"], strict=True)}
            ids = np.array([[nxt]], np.int64)
        eos_hit = tokens[-1] in eos
        return Generation(
            self.name,
            list(prompt),
            tokens,
            np.stack(rows),
            _stop_reason(len(tokens), steps, eos_hit),
            _info_of(self.adapter),
        )


def _require_padded_rows_kernel(name: str, info: Mapping[str, Any], bundle: str | Path) -> None:
    """An ``activation_quant="xnnpack"`` bundle is exact where XNNPACK runs every FULLY_CONNECTED
    (it quantizes the padded code rows to themselves) or on a GPU delegate (float FC); on
    builtin/reference kernels the padded rows quantize with absmax 128: another computation.

    Raises:
        RuntimeAdapterError: the adapter runs FULLY_CONNECTED on another kernel.
    """
    from runtimes.protocol import RuntimeAdapterError

    provider = str(info.get("provider", ""))
    undelegated = (info.get("details") or {}).get("undelegated_ops") or []
    on_xnnpack = provider.startswith("xnnpack") and not any("FULLY_CONNECTED" in op for op in undelegated)
    if not (on_xnnpack or provider.startswith("gpu")):
        raise RuntimeAdapterError(
            f"{name}: {bundle} was exported with activation_quant='xnnpack' (code rows padded for "
            f"XNNPACK's row quantizer), and this adapter runs its FULLY_CONNECTED ops on {provider!r} "
            "kernels, where the padded rows are not BitNet's maths; run it on litert-xnnpack, "
            "LiteRT-LM or a GPU adapter, or export with activation_quant='kernel' for builtin kernels"
        )


class LiteRtLmLoop:
    """Greedy decoding of a ``litert-lm`` bundle through two LiteRT adapters (see module doc).

    Args:
        make_adapter: ``make_adapter(signature)`` -> a LiteRT adapter running that signature
            (``LiteRtInterpreterAdapter(kernel, signature=...)``, ``Arm64Adapter(...,
            signature=...)``, ``LiteRtGpuAdapter(signature=...)``).
        bundle: the ``.litertlm`` file; its TFLite model is extracted to ``workdir``.
        workdir: where the extracted model is kept (a folder that outlives the loop).
    """

    def __init__(self, make_adapter: Callable[[str], Any], bundle: str | Path, workdir: str | Path) -> None:
        from bitnet_export.llm.export import bundle_tflite, llm_info

        self.record = llm_info(bundle)
        self.model = Path(workdir) / (Path(bundle).stem + ".tflite")
        self.model.parent.mkdir(parents=True, exist_ok=True)
        self.model.write_bytes(bundle_tflite(bundle))
        self.prefill = make_adapter("prefill")
        self.decode = make_adapter("decode")
        self.prefill.load(self.model)
        self.decode.load(self.model)
        self.name = str(self.decode.name)
        if self.record.get("activation_quant") == "xnnpack":
            for adapter in (self.prefill, self.decode):
                _require_padded_rows_kernel(self.name, adapter.info().as_dict(), bundle)

    def _step(
        self, adapter: Any, tokens: Sequence[int], pos: int, caches: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        cache_len = int(self.record["max_seq_len"])
        if pos + len(tokens) > cache_len:  # DYNAMIC_UPDATE_SLICE clamps: never let it
            raise CacheOverflowError(
                f"{self.name}: writing {len(tokens)} position(s) at {pos} overflows the KV cache of "
                f"{cache_len}"
            )
        feed = {
            "tokens": np.array([list(tokens)], np.int32),
            "input_pos": np.arange(pos, pos + len(tokens), dtype=np.int32),
            **caches,
        }
        return dict(adapter.run(feed))

    def generate(self, prompt: Sequence[int], steps: int, eos: Sequence[int] = ()) -> Generation:
        """Greedy tokens after ``prompt`` (stops at ``steps``, an ``eos`` or ``max_seq_len``)."""
        r = self.record
        cache_len, chunk = int(r["max_seq_len"]), int(r["prefill_len"])
        n = room(len(prompt), steps, cache_len)
        shape = (1, r["kv_heads"], cache_len, r["head_dim"])
        caches = {name: np.zeros(shape, np.float32) for name in r["cache_inputs"]}
        pos = 0
        # whole chunks through prefill, keeping at least the last prompt token for decode
        while len(prompt) - pos > chunk:
            out = self._step(self.prefill, prompt[pos : pos + chunk], pos, caches)
            caches = {name: out[name] for name in r["cache_inputs"]}
            pos += chunk
        pending = list(prompt[pos:])
        tokens: list[int] = []
        rows: list[np.ndarray] = []
        while True:
            out = self._step(self.decode, pending[:1], pos, caches)
            caches = {name: out[name] for name in r["cache_inputs"]}
            pos += 1
            pending = pending[1:]
            if pending:
                continue
            row = np.asarray(out["logits"][0, -1], np.float32)
            nxt = int(row.argmax())
            tokens.append(nxt)
            rows.append(row)
            if len(tokens) == n or nxt in eos:
                break
            pending = [nxt]
        eos_hit = tokens[-1] in eos
        return Generation(
            self.name,
            list(prompt),
            tokens,
            np.stack(rows),
            _stop_reason(len(tokens), steps, eos_hit),
            _info_of(self.decode),
        )
