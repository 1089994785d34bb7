"""Generation parity: greedy tokens from PyTorch vs every runtime that runs the exported LM.

For each prompt, PyTorch generates the reference (HF ``generate(do_sample=False)`` or the
model's forward, see :func:`bitnet_export.llm.generate.torch_greedy`); each target generates
from the exported folder / bundle with the same prompt and step count:

* ``ort-genai``: onnxruntime-genai's generator on the ``ort-genai`` folder;
* ``litert-lm``: LiteRT-LM's engine on the bundle (text in, text out: the prompt is the
  tokenizer's text of the prompt ids after the start token; the continuation is compared, as
  text, with the tokenizer's text of PyTorch's tokens, token by token for the divergent step);
* any other target name of :func:`runtimes.make_adapter` (``ort-cpu``, ``litert-builtin``,
  ``arm64:neoverse-n1:ort``, ``litert-gpu``, ``ort-webgpu``...): a plain step loop
  (:mod:`bitnet_export.llm.generate`) over that adapter, on the same file.

A row passes when its tokens equal PyTorch's. When they differ it records the first divergent
step and PyTorch's logit margin there (top-1 minus top-2: how close the reference itself was
to choosing otherwise); the per-step logits error is reported over the steps that agree.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from bitnet_export.llm.generate import Generation, LiteRtLmLoop, OrtGenaiLoop, room, torch_greedy

__all__ = ["GenerationReport", "GenerationRow", "default_targets", "verify_generation"]

ORT_FAMILY = "ort"
LITERT_FAMILY = "litert"


@dataclass
class GenerationRow:
    """One target on one prompt.

    Attributes:
        target: target name.
        prompt: prompt index.
        steps: tokens compared (PyTorch's count).
        equal: the token sequences are identical.
        first_divergence: first step whose token differs (``None`` when equal).
        margin: PyTorch's top-1 minus top-2 logit at that step.
        max_abs_logits: max |logits - PyTorch's| over the agreeing steps (``None``: no logits).
        max_rel_logits: the same divided by max |PyTorch logits|.
        tokens: the target's tokens.
        stopped: why the target stopped.
        info: what ran.
        error: the runtime's error when it failed to generate.
    """

    target: str
    prompt: int
    steps: int
    equal: bool
    first_divergence: int | None = None
    margin: float | None = None
    max_abs_logits: float | None = None
    max_rel_logits: float | None = None
    tokens: list[int] = field(default_factory=list)
    stopped: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class GenerationReport:
    """Every target on every prompt, against PyTorch's tokens."""

    path: str
    prompts: list[list[int]]
    reference: list[list[int]]
    rows: list[GenerationRow]

    @property
    def passed(self) -> bool:
        """Every row generated PyTorch's tokens."""
        return all(r.equal and not r.error for r in self.rows)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "path": self.path,
            "passed": self.passed,
            "prompts": self.prompts,
            "reference": self.reference,
            "rows": [asdict(r) for r in self.rows],
        }

    def to_json(self) -> str:
        """:meth:`as_dict` as JSON."""
        return json.dumps(self.as_dict(), indent=2, default=float)

    def format_table(self) -> str:
        """One line per target and prompt."""
        lines = [f"generation parity: {self.path}", "target                         prompt steps result"]
        for r in self.rows:
            if r.error:
                result = f"ERROR {r.error}"
            elif r.equal:
                err = "" if r.max_rel_logits is None else f"  logits max_rel {r.max_rel_logits:.1e}"
                result = f"PASS  identical tokens{err}"
            else:
                result = f"FAIL  first divergent step {r.first_divergence}, PyTorch margin {r.margin:.3g}"
            provider = r.info.get("provider", "")
            lines.append(f"{r.target:<30} {r.prompt:>6} {r.steps:>5} {result}  [{provider}]")
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)


def _family(path: Path) -> str:
    return ORT_FAMILY if path.is_dir() else LITERT_FAMILY


def default_targets(path: str | Path) -> list[str]:
    """The host CPU targets for an export: the app runtime plus the plain loop."""
    if _family(Path(path)) == ORT_FAMILY:
        return ["ort-genai", "ort-cpu"]
    return ["litert-lm", "litert-builtin"]


def _margin(logits: np.ndarray) -> float:
    top = np.sort(logits.astype(np.float64))[-2:]
    return float(top[1] - top[0])


def _compare(target: str, index: int, ref: Generation, got: Generation) -> GenerationRow:
    steps = len(ref.tokens)
    mine = got.tokens[:steps]
    diverge = next((i for i, (a, b) in enumerate(zip(ref.tokens, mine, strict=False)) if a != b), None)
    if diverge is None and len(mine) != steps:
        diverge = len(mine)
    agree = steps if diverge is None else diverge
    abs_err = rel_err = None
    if got.logits is not None and ref.logits is not None and agree:
        a = np.asarray(got.logits[:agree], np.float64)
        b = np.asarray(ref.logits[:agree], np.float64)
        abs_err = float(np.abs(a - b).max())
        rel_err = abs_err / (float(np.abs(b).max()) or 1.0)
    margin = None
    if diverge is not None and ref.logits is not None and diverge < len(ref.logits):
        margin = _margin(np.asarray(ref.logits[diverge]))
    return GenerationRow(
        target=target,
        prompt=index,
        steps=steps,
        equal=diverge is None,
        first_divergence=diverge,
        margin=margin,
        max_abs_logits=abs_err,
        max_rel_logits=rel_err,
        tokens=list(got.tokens),
        stopped=got.stopped,
        info=dict(got.info),
    )


class _Engine:
    """One target, loaded once, generating for every prompt."""

    def __init__(self, target: str, path: Path, workdir: Path) -> None:
        from bitnet_export.llm.export import llm_info
        from runtimes import make_adapter

        self.target = target
        self.family = _family(path)
        self.record = llm_info(path)
        self.app: Any = None
        self.loop: Any = None
        if target == "ort-genai":
            from runtimes.ort_genai import OrtGenaiAdapter

            self.app = OrtGenaiAdapter()
            self.app.load(path)
        elif target == "litert-lm":
            from runtimes.litert_lm import LiteRtLmAdapter

            self.app = LiteRtLmAdapter()
            self.app.load(path)
        elif self.family == ORT_FAMILY:
            if target.startswith("litert") or target.endswith(
                ("litert-builtin", "litert-xnnpack", "litert-reference")
            ):
                raise ValueError(f"{target} runs TFLite; {path} is an ort-genai folder")
            # a dynamic-length decoder's shape arithmetic (int64) stays on ORT's CPU EP
            extra = {"cpu_shape_ops": True} if target == "ort-webgpu" else {}
            self.loop = OrtGenaiLoop(make_adapter(target, **extra), path)
        else:
            if target.startswith("ort") or target.endswith(":ort"):
                raise ValueError(f"{target} runs ONNX; {path} is a LiteRT-LM bundle")
            extra = {"allow_partial": True} if target.endswith("xnnpack") else {}
            self.loop = LiteRtLmLoop(lambda sig: make_adapter(target, signature=sig, **extra), path, workdir)

    def generate(self, prompt: Sequence[int], steps: int, eos: Sequence[int], max_seq_len: int) -> Generation:
        if self.loop is not None:
            return self.loop.generate(prompt, steps, eos)
        n = room(len(prompt), steps, max_seq_len)
        if self.target == "ort-genai":
            tokens, logits = self.app.generate(prompt, n)
            return Generation(self.target, list(prompt), tokens, logits, "steps", self.app.info().as_dict())
        # litert-lm: text in, text out; the engine puts the start token before the prompt
        start = self.app.start_token
        body = list(prompt[1:]) if start is not None and prompt and prompt[0] == start else list(prompt)
        if start is not None and len(body) == len(prompt):
            raise ValueError(
                f"litert-lm: the engine starts every prompt with token {start}; give prompts that "
                "begin with it"
            )
        text = self.app.generate_text(self.app.detokenize(body), n)
        tokens = self.app.tokenize(text)
        return Generation(
            self.target, list(prompt), tokens, None, "steps", self.app.info().as_dict() | {"text": text}
        )

    def compare(self, index: int, ref: Generation, got: Generation) -> GenerationRow:
        """Token comparison; LiteRT-LM's text is compared with the reference tokens' text."""
        if self.target != "litert-lm":
            return _compare(self.target, index, ref, got)
        text = str(got.info.get("text", ""))
        detok = self.app.detokenize
        expected = list(ref.tokens)
        if ref.stopped == "eos":  # LiteRT-LM does not print the stop token
            expected = expected[:-1]
        # a prefix ending inside a UTF-8 sequence decodes to a trailing U+FFFD: drop it
        diverge = next(
            (
                k
                for k in range(len(expected))
                if not text.startswith(detok(expected[: k + 1]).rstrip("\ufffd"))
            ),
            None,
        )
        if diverge is None and text != detok(expected):
            diverge = len(expected)
        margin = None
        if diverge is not None and ref.logits is not None and diverge < len(ref.logits):
            margin = _margin(np.asarray(ref.logits[diverge]))
        return GenerationRow(
            target=self.target,
            prompt=index,
            steps=len(ref.tokens),
            equal=diverge is None,
            first_divergence=diverge,
            margin=margin,
            tokens=list(got.tokens),
            stopped=got.stopped,
            info=dict(got.info) | {"compared": "text (LiteRT-LM is text out)"},
        )


def verify_generation(
    model: nn.Module,
    path: str | Path,
    prompts: Sequence[Sequence[int]],
    steps: int = 32,
    targets: Sequence[str] | None = None,
    eos: Sequence[int] | None = None,
) -> GenerationReport:
    """Greedy tokens of ``model`` vs each target on the export at ``path``.

    Args:
        model: the PyTorch model that was exported.
        path: an ``ort-genai`` folder or ``.litertlm`` bundle written by ``export_llm``.
        prompts: token-id prompts (for ``litert-lm``, each starting with the start token).
        steps: tokens to generate per prompt (fewer where ``max_seq_len`` is reached).
        targets: target names (default :func:`default_targets`).
        eos: stop tokens (default: the export's ``eos_token_ids``, as onnxruntime-genai and
            LiteRT-LM stop there; ``()``: never stop early, for the plain loops only).

    Returns:
        A :class:`GenerationReport`; a target that fails to load or generate gets error rows.
    """
    from bitnet_export.llm.export import llm_info

    path = Path(path)
    record = llm_info(path)
    max_seq_len = int(record["max_seq_len"])
    eos = tuple(record.get("eos_token_ids") or ()) if eos is None else tuple(eos)
    refs = [torch_greedy(model, p, steps, max_seq_len, eos) for p in prompts]
    rows: list[GenerationRow] = []
    with tempfile.TemporaryDirectory(prefix="bitnet_export-gen-") as tmp:
        for target in targets or default_targets(path):
            try:
                engine = _Engine(target, path, Path(tmp))
            except Exception as exc:  # a target that cannot load is a failed row, not a crash
                rows += [
                    GenerationRow(target, i, len(r.tokens), False, error=f"{type(exc).__name__}: {exc}")
                    for i, r in enumerate(refs)
                ]
                continue
            for i, (prompt, ref) in enumerate(zip(prompts, refs, strict=True)):
                try:
                    got = engine.generate(prompt, len(ref.tokens), eos, max_seq_len)
                except Exception as exc:
                    rows.append(
                        GenerationRow(target, i, len(ref.tokens), False, error=f"{type(exc).__name__}: {exc}")
                    )
                    continue
                rows.append(engine.compare(i, ref, got))
    return GenerationReport(str(path), [list(p) for p in prompts], [r.tokens for r in refs], rows)
