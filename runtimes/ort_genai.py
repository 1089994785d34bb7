"""onnxruntime-genai: the generator loop apps embed, run on an ``ort-genai`` export folder.

Greedy from token ids (no tokenizer needed): ``og.Generator`` + ``append_tokens`` +
``generate_next_token``. The generator runs the model ahead: ``get_logits`` *before*
``generate_next_token`` returns the logits that token is chosen from (after it, the next
step's, measured). The
folder's ``genai_config.json`` is used as written (CPU provider, ``max_length`` capped by the
model's ``context_length``). onnxruntime-genai's own rules hold and are reported, never worked
around: a prompt as long as ``max_length`` or longer is refused, generation stops at
``max_length`` (it counts the prompt).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtimes._host import cpu_model, host_arch
from runtimes.protocol import RuntimeAdapterError, RuntimeInfo

__all__ = ["OrtGenaiAdapter"]


def _genai() -> Any:
    try:
        import onnxruntime_genai as og
    except ImportError as exc:
        raise RuntimeAdapterError(
            "ort-genai: onnxruntime-genai is not installed (pip install 'bitnet-export[llm]')"
        ) from exc
    return og


class OrtGenaiAdapter:
    """Load an ``ort-genai`` folder in onnxruntime-genai and generate greedily.

    Args:
        threads: intra-op threads written into a private copy of the session options
            (``None``: the config's / ORT's default).
    """

    name = "ort-genai"

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"ort-genai: threads={threads!r} must be positive")
        self.threads = threads
        self._model: Any = None
        self._folder: Path | None = None
        self._config: dict[str, Any] = {}

    def load(self, path: Path) -> None:
        """Load the export folder (``genai_config.json`` + ``model.onnx``).

        Raises:
            RuntimeAdapterError: not an export folder; onnxruntime-genai refuses it.
        """
        og = _genai()
        folder = Path(path)
        cfg_file = folder / "genai_config.json"
        if not cfg_file.is_file():
            raise RuntimeAdapterError(
                f"ort-genai: {folder} has no genai_config.json (export with export_llm)"
            )
        self._config = json.loads(cfg_file.read_text())
        try:
            config = og.Config(str(folder))
            config.clear_providers()  # CPU: onnxruntime-genai's provider when none is listed
            if self.threads is not None:
                overlay = {"model": {"decoder": {"session_options": {"intra_op_num_threads": self.threads}}}}
                config.overlay(json.dumps(overlay))
            self._model = og.Model(config)
        except Exception as exc:  # onnxruntime-genai raises RuntimeError with its reason
            raise RuntimeAdapterError(f"ort-genai: cannot load {folder}: {exc}") from exc
        self._folder = folder

    @property
    def context_length(self) -> int:
        """The model's ``context_length`` (the most tokens, prompt included)."""
        return int(self._config["model"]["context_length"])

    def generate(
        self, prompt: Sequence[int], steps: int, with_logits: bool = True
    ) -> tuple[list[int], np.ndarray | None]:
        """Greedy tokens after ``prompt``: at most ``steps``, fewer at ``max_length``.

        Returns:
            The generated ids and (``with_logits``) the logits row of each.

        Raises:
            RuntimeAdapterError: onnxruntime-genai refused the request (prompt too long...).
        """
        og = _genai()
        if self._model is None:
            raise RuntimeAdapterError("ort-genai: generate() before load()")
        try:
            params = og.GeneratorParams(self._model)
            params.set_search_options(
                max_length=min(len(prompt) + steps, self.context_length), do_sample=False, num_beams=1
            )
            gen = og.Generator(self._model, params)
            gen.append_tokens(np.asarray(list(prompt), dtype=np.int32))
            tokens: list[int] = []
            rows: list[np.ndarray] = []
            while not gen.is_done() and len(tokens) < steps:
                if with_logits:  # the logits the next token is chosen from (computed ahead)
                    rows.append(np.asarray(gen.get_logits(), np.float32).reshape(-1))
                gen.generate_next_token()
                tokens.append(int(gen.get_next_tokens()[0]))
        except RuntimeAdapterError:
            raise
        except Exception as exc:
            raise RuntimeAdapterError(f"ort-genai: generation failed on {self._folder}: {exc}") from exc
        return tokens, (np.stack(rows) if rows else None)

    def info(self) -> RuntimeInfo:
        """What ran: onnxruntime-genai (and the onnxruntime it bundles), CPU provider."""
        og = _genai()
        import importlib.metadata

        return RuntimeInfo(
            runtime="onnxruntime-genai",
            version=str(og.__version__),
            provider="cpu",
            arch=host_arch(),
            cpu_model=cpu_model(),
            emulated=False,
            threads=self.threads,
            details={
                "onnxruntime": importlib.metadata.version("onnxruntime"),
                "api": "og.Generator (greedy, from token ids)",
                "context_length": self._config.get("model", {}).get("context_length"),
            },
        )
