"""Retrain the example BitNet language model and write its checkpoint.

A ternary TinyBitNetLM (``bitnet_export.zoo.text_lm.CONFIG``) trained quantization-aware on the
bytes of Python's standard-library sources; the shipped checkpoint was made with the defaults::

    python examples/tiny_lm/train.py --steps 1000 --out bitnet_export/zoo/data/tiny_lm.pt

It prints the training and held-out loss as it goes, then a greedy continuation.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import torch

from bitnet_export._io import atomic_write_bytes
from bitnet_export.llm.tokenizer import decode
from bitnet_export.zoo.text_lm import CHECKPOINT, corpus, evaluate, generate, split, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=CHECKPOINT)
    args = parser.parse_args()
    t0 = time.perf_counter()
    model = train(args.steps, args.seq_len, args.batch, args.seed)
    _, heldout = split(corpus())
    print(f"held-out loss {evaluate(model, heldout):.3f} nats/byte ({time.perf_counter() - t0:.0f} s)")
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out} ({len(buf.getvalue()) / 1e6:.1f} MB)")
    print(repr("def __init__(self" + decode(generate(model, "def __init__(self", 48))))


if __name__ == "__main__":
    main()
