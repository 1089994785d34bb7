"""LiteRT-LM: the engine apps embed, run on a ``.litertlm`` bundle (CPU backend).

LiteRT-LM is text in, text out: the prompt text goes through the bundle's tokenizer (the
engine adds the start token), ``run_prefill`` + ``run_decode`` generate with the CPU sampler
(TOP_P with ``top_k=1``: greedy), and the continuation comes back as text. Token ids are got
back by tokenizing that text with the engine's own tokenizer, which is exact for text that is
valid UTF-8 (a byte-level tokenizer's invalid sequences decode to U+FFFD and cannot be).

Kernels: the engine's CPU backend is XNNPACK. XNNPACK takes int8/int4 hybrid FULLY_CONNECTED
and quantizes activation rows asymmetrically (not BitNet's symmetric absmax per token); it
leaves INT2 FULLY_CONNECTED to LiteRT's builtin kernel, which is BitNet's maths. ``info``
says which storage the bundle has.

Activations run in float32 (``activation_data_type=FLOAT32``; LiteRT-LM's default for text
decoders is fp16). The engine writes its ``*.xnnpack_cache`` files into a private folder.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtimes._host import cpu_model, host_arch
from runtimes.protocol import RuntimeAdapterError, RuntimeInfo

__all__ = ["LiteRtLmAdapter"]


def _lib() -> Any:
    try:
        import litert_lm
    except ImportError as exc:
        raise RuntimeAdapterError(
            "litert-lm: litert-lm-api is not installed (pip install 'bitnet-export[llm]')"
        ) from exc
    return litert_lm


class LiteRtLmAdapter:
    """Load a ``.litertlm`` bundle in LiteRT-LM's engine and generate greedily from text."""

    name = "litert-lm"

    def __init__(self) -> None:
        self._engine: Any = None
        self._path: Path | None = None
        self._cache = tempfile.TemporaryDirectory(prefix="bitnet_export-litert-lm-")

    def load(self, path: Path) -> None:
        """Create the engine for ``path``.

        Raises:
            RuntimeAdapterError: missing file; LiteRT-LM refuses the bundle (reason on stderr).
        """
        lm = _lib()
        path = Path(path)
        if not path.is_file():
            raise RuntimeAdapterError(f"litert-lm: {path} does not exist")
        lm.set_min_log_severity(lm.LogSeverity.ERROR)
        try:
            self._engine = lm.Engine(
                str(path),
                backend=lm.Backend.CPU(),
                cache_dir=self._cache.name,
                activation_data_type=lm.ActivationDataType.FLOAT32,
            )
        except Exception as exc:
            raise RuntimeAdapterError(f"litert-lm: cannot create an engine for {path}: {exc}") from exc
        self._path = path

    def _require(self) -> Any:
        if self._engine is None:
            raise RuntimeAdapterError("litert-lm: generate() before load()")
        return self._engine

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` by the bundle's tokenizer (no start token)."""
        return [int(t) for t in self._require().tokenize(text)]

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` by the bundle's tokenizer."""
        return str(self._require().detokenize([int(i) for i in ids]))

    @property
    def start_token(self) -> int | None:
        """The bundle's start token (the engine puts it before every prompt)."""
        bos = self._require().bos_token_id
        return None if bos is None else int(bos)

    def generate_text(self, text: str, max_tokens: int) -> str:
        """Greedy continuation of ``text`` (at most ``max_tokens``; fewer at a stop token or
        the bundle's ``max_num_tokens``).

        Raises:
            RuntimeAdapterError: LiteRT-LM refused the prompt (too long for the cache...).
        """
        lm = _lib()
        engine = self._require()
        try:
            session = engine.create_session(
                apply_prompt_template=False,
                max_output_tokens=int(max_tokens),
                sampler_config=lm.SamplerConfig(top_k=1, top_p=1.0, temperature=1.0, seed=0),
            )
            try:
                session.run_prefill([text])
                out = session.run_decode()
            finally:
                session.close()
        except Exception as exc:
            raise RuntimeAdapterError(
                f"litert-lm: generation failed on {self._path} (prompt of {len(text)} chars): {exc}"
            ) from exc
        return str(out.texts[0])

    def info(self) -> RuntimeInfo:
        """What ran: LiteRT-LM's version, CPU backend (XNNPACK), float32 activations."""
        return RuntimeInfo(
            runtime="litert-lm",
            version=importlib.metadata.version("litert-lm-api"),
            provider="cpu (xnnpack)",
            arch=host_arch(),
            cpu_model=cpu_model(),
            emulated=False,
            threads=None,
            details={
                "api": "litert_lm.Engine session (TOP_P k=1)",
                "activations": "float32",
                "note": "XNNPACK leaves INT2 FULLY_CONNECTED to LiteRT's builtin kernel",
            },
        )
