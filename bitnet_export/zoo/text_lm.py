"""A tiny pretrained BitNet language model: bytes of Python's standard-library sources.

:data:`CONFIG` is a :class:`~bitnet_export.zoo.transformer.TinyBitNetLM` over the byte-level
tokenizer of :mod:`bitnet_export.llm.tokenizer` (ids 0..255 bytes, ``<bos>`` 256, ``<eos>``
257). Every projection is a ternary :class:`~bitnet_export.layers.bitnet.BitNetLayer`
(weights ``{-1, 0, 1} * scale``, per-token int8 activations), trained quantization-aware from
scratch: the forward pass computes with the quantized values, the straight-through estimator
updates the latent float weights.

Data (:func:`corpus`): the ``.py`` files of the running interpreter's standard library
(``sysconfig.get_paths()["stdlib"]``), in sorted path order, without test directories and
``site-packages``. :func:`split` keeps the first 90% for training and holds the last 10%
out (whole lines; later files in path order, never seen in training). Each training sequence
is ``<bos>`` followed by the bytes from a random line start.

The shipped checkpoint :data:`CHECKPOINT` (the ``state_dict``) was made with::

    python examples/tiny_lm/train.py --steps 1000 --out bitnet_export/zoo/data/tiny_lm.pt

(``train(steps=1000, seq_len=128, batch=16, seed=0)``, CPython 3.11.7 stdlib, torch 2.13
CPU, the 2-core dev VM shared with a benchmark run): 432 s wall time, final train loss 1.36
nats/byte (mean of the last 50 steps), held-out loss 1.66 nats/byte (:func:`evaluate`, 64
windows of 256 bytes); the uniform baseline is ln(258) = 5.55. Greedy continuation of
``def __init__(self``: ``, self._context):\n        return self._context()``.
"""

from __future__ import annotations

import math
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bitnet_export.llm.tokenizer import BOS, EOS, VOCAB_SIZE, encode
from bitnet_export.training.convert import name_layers
from bitnet_export.zoo.transformer import TinyBitNetLM, TinyLMConfig

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "HELDOUT_FRACTION",
    "corpus",
    "evaluate",
    "generate",
    "load_pretrained",
    "sample_batch",
    "split",
    "stdlib_files",
    "train",
]

#: The model of the shipped checkpoint (~0.85M parameters, 3.4 MB in float32).
CONFIG = TinyLMConfig(
    vocab_size=VOCAB_SIZE,
    hidden=128,
    layers=4,
    heads=4,
    kv_heads=2,
    intermediate=384,
    max_seq_len=256,
    bos_token_id=BOS,
    eos_token_ids=(EOS,),
)

#: The shipped checkpoint: ``TinyBitNetLM(CONFIG).state_dict()`` saved with ``torch.save``.
CHECKPOINT = Path(__file__).resolve().parent / "data" / "tiny_lm.pt"

#: The share of the corpus (its end) held out of training.
HELDOUT_FRACTION = 0.1

_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files, sorted by path, without test dirs and site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [
        p for p in root.rglob("*.py") if p.is_file() and not _SKIP_DIRS & set(p.relative_to(root).parts[:-1])
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def corpus(max_bytes: int | None = None) -> bytes:
    """The concatenated standard-library sources (:func:`stdlib_files` order), as UTF-8 bytes.

    Each file ends with a newline. Files that are not valid UTF-8 are skipped.

    Args:
        max_bytes: cut the text to at most this many bytes, at a line end (None: all of it,
            about 12 MB on CPython 3.11).

    Raises:
        ValueError: ``max_bytes`` is not positive.
    """
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"corpus: max_bytes={max_bytes} must be positive")
    parts: list[bytes] = []
    total = 0
    for path in stdlib_files():
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if not data.endswith(b"\n"):
            data += b"\n"
        parts.append(data)
        total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    text = b"".join(parts)
    if max_bytes is not None and len(text) > max_bytes:
        text = text[: text.rfind(b"\n", 0, max_bytes) + 1]
    return text


def split(data: bytes, heldout_fraction: float = HELDOUT_FRACTION) -> tuple[bytes, bytes]:
    """``(train, held_out)``: the first and the last ``heldout_fraction`` of ``data``, cut at a line end."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"split: heldout_fraction={heldout_fraction} must lie in (0, 1)")
    cut = data.rfind(b"\n", 0, int(len(data) * (1.0 - heldout_fraction))) + 1
    return data[:cut], data[cut:]


def _line_starts(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """Offsets of the line starts from which ``length`` tokens fit in ``tokens``."""
    arr = tokens.numpy()
    starts = np.concatenate([[0], np.flatnonzero(arr == ord("\n")) + 1])
    return torch.from_numpy(starts[starts + length <= len(arr)])


def _windows(tokens: torch.Tensor, starts: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[<bos>, t0 .. t(L-2)]`` and targets ``[t0 .. t(L-1)]`` of the windows at ``starts``."""
    idx = starts.reshape(-1, 1) + torch.arange(seq_len).reshape(1, -1)
    body = tokens[idx].long()  # [N, seq_len]
    bos = torch.full((body.shape[0], 1), BOS, dtype=torch.long)
    return torch.cat([bos, body[:, :-1]], dim=1), body


def sample_batch(
    tokens: torch.Tensor, starts: torch.Tensor, seq_len: int, batch: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of ``(inputs, targets)`` ``[batch, seq_len]`` int64 from line starts ``starts``."""
    pick = torch.randint(0, len(starts), (batch,), generator=generator)
    return _windows(tokens, starts[pick], seq_len)


def _as_tokens(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


@torch.no_grad()
def evaluate(model: TinyBitNetLM, data: bytes, seq_len: int = 256, windows: int = 64) -> float:
    """Mean cross-entropy (nats per byte) of ``model`` on ``windows`` evenly spaced windows of ``data``.

    Each window is ``<bos>`` then ``seq_len`` bytes from a line start; every byte is scored.
    The model is put in eval mode (the integer inference form of its BitNetLayers).
    """
    tokens = _as_tokens(data)
    starts = _line_starts(tokens, seq_len)
    if len(starts) == 0:
        raise ValueError(f"evaluate: data of {len(data)} bytes has no window of {seq_len} bytes")
    pick = torch.linspace(0, len(starts) - 1, min(windows, len(starts))).round().long()
    inputs, targets = _windows(tokens, starts[pick], seq_len)
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(inputs), 16):
        logits = model(inputs[i : i + 16])
        total += float(F.cross_entropy(logits.flatten(0, 1), targets[i : i + 16].flatten(), reduction="sum"))
    model.train(was_training)
    return total / targets.numel()


def train(
    steps: int = 1000,
    seq_len: int = 128,
    batch: int = 16,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    *,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    warmup: int = 50,
    log_every: int = 50,
    config: TinyLMConfig = CONFIG,
    data: bytes | None = None,
) -> TinyBitNetLM:
    """Train a :class:`TinyBitNetLM` quantization-aware on the training split of :func:`corpus`.

    AdamW (betas 0.9/0.95, weight decay on matrices only), linear warm-up then cosine decay to
    a tenth of ``lr``, gradient clipping at 1. The BitNetLayers stay fully quantized
    (``blend = 1``) throughout: the loss is that of the ternary model.

    Args:
        steps: optimizer steps.
        seq_len: tokens per sequence (``<bos>`` included), at most ``config.max_seq_len``.
        batch: sequences per step.
        seed: seeds the initialization and the batch order (deterministic).
        log: called with a progress line every ``log_every`` steps (None: silent).
        lr: peak learning rate.
        weight_decay: AdamW weight decay of the 2-D weights.
        warmup: warm-up steps.
        log_every: steps between log lines (the held-out loss is logged with them).
        config: the model's sizes.
        data: the text to train on (None: the training split of :func:`corpus`).

    Returns:
        The trained model, in eval mode, with its layers named (:func:`name_layers`).
    """
    if steps < 1 or batch < 1 or not 2 <= seq_len <= config.max_seq_len:
        raise ValueError(
            f"train: steps={steps}, batch={batch} must be >= 1 and seq_len={seq_len} in "
            f"2..{config.max_seq_len}"
        )
    if data is None:
        data, heldout = split(corpus())
    else:
        data, heldout = split(data)
    tokens = _as_tokens(data)
    starts = _line_starts(tokens, seq_len)
    torch.manual_seed(seed)
    model = name_layers(TinyBitNetLM(config))
    assert isinstance(model, TinyBitNetLM)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    recent: list[float] = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        inputs, targets = sample_batch(tokens, starts, seq_len, batch, gen)
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent = [*recent[-(log_every - 1) :], loss.item()]
        if log is not None and (step + 1 == steps or (step + 1) % log_every == 0):
            held = evaluate(model, heldout, seq_len=min(256, config.max_seq_len), windows=16)
            model.train()
            log(
                f"step {step + 1:5d}/{steps}  train loss {sum(recent) / len(recent):.3f}  "
                f"held-out {held:.3f}  lr {lr_at(step):.2e}  {time.perf_counter() - t0:6.1f} s"
            )
    return model.eval()


def load_pretrained(path: str | Path = CHECKPOINT) -> TinyBitNetLM:
    """The shipped pretrained model (:data:`CONFIG`, weights of ``path``), in eval mode.

    Raises:
        FileNotFoundError: the checkpoint is missing (retrain it with
            ``python examples/tiny_lm/train.py``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"load_pretrained: no checkpoint at {path}; it ships with bitnet_export "
            "(bitnet_export/zoo/data/tiny_lm.pt). Recreate it with "
            f"`python examples/tiny_lm/train.py --out {path}`"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = name_layers(TinyBitNetLM(CONFIG))
    assert isinstance(model, TinyBitNetLM)
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def generate(model: TinyBitNetLM, prompt: str | Sequence[int], max_new_tokens: int = 32) -> list[int]:
    """Greedy continuation of ``prompt`` (text, or ids without ``<bos>``): the new ids only.

    Full recompute each step (no KV cache): ``<bos>`` + prompt + generated so far, the last
    ``max_seq_len`` positions. Stops early at an id of ``config.eos_token_ids``.
    """
    ids = [BOS, *(encode(prompt) if isinstance(prompt, str) else prompt)]
    new: list[int] = []
    limit = model.config.max_seq_len
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids[-limit:]], dtype=torch.long))
        nxt = int(logits[0, -1].argmax())
        if nxt in model.config.eos_token_ids:
            break
        ids.append(nxt)
        new.append(nxt)
    return new
