"""The example language model: its corpus, its shipped checkpoint, its training loop."""

from __future__ import annotations

import dataclasses
import math

import torch

from bitnet_export.llm.tokenizer import VOCAB_SIZE, decode
from bitnet_export.training.convert import bitnet_layers
from bitnet_export.zoo.text_lm import (
    CONFIG,
    corpus,
    evaluate,
    generate,
    load_pretrained,
    split,
    stdlib_files,
    train,
)

#: held-out loss of the shipped checkpoint, measured when it was trained (see text_lm's docstring),
#: plus a margin; the uniform baseline is ln(258) = 5.55 nats per byte
HELDOUT_LIMIT = 2.3


def test_corpus_is_the_stdlib_sources() -> None:
    files = stdlib_files()
    assert files and all(p.suffix == ".py" for p in files)
    assert not any("site-packages" in p.parts or "test" in p.parts[-3:-1] for p in files)
    first = corpus(max_bytes=200_000)
    assert first == corpus(max_bytes=200_000)  # deterministic
    assert len(corpus()) > 1_000_000
    assert first.decode("utf-8")  # text
    train_part, held = split(first)
    assert first == train_part + held and 0.05 < len(held) / len(first) < 0.15


def test_shipped_checkpoint_is_a_ternary_language_model() -> None:
    model = load_pretrained()
    assert model.config == CONFIG and CONFIG.vocab_size == VOCAB_SIZE
    for _, layer in bitnet_layers(model):
        codes = layer.quant_params().weight.values
        assert set(torch.from_numpy(codes).unique().tolist()) <= {-1, 0, 1}
    _, held = split(corpus())
    loss = evaluate(model, held)
    print(f"held-out loss {loss:.3f} nats/byte")
    assert loss < HELDOUT_LIMIT < math.log(VOCAB_SIZE)
    text = decode(generate(model, "def __init__(self", 32))
    print(repr(text))
    printable = sum(c.isprintable() or c in "\n\t" for c in text) / max(1, len(text))
    assert len(text) >= 16 and printable >= 0.9


def test_training_lowers_the_loss() -> None:
    data = corpus(max_bytes=300_000)
    small = dataclasses.replace(CONFIG, hidden=32, layers=1, intermediate=64, max_seq_len=64)
    before = evaluate(train(1, 32, 4, 0, None, config=small, data=data, warmup=1), split(data)[1], 32, 8)
    after = evaluate(train(60, 32, 8, 0, None, config=small, data=data, warmup=5), split(data)[1], 32, 8)
    assert after < before - 0.5, (before, after)
