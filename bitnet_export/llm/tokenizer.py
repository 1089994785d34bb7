"""A byte-level tokenizer as a Hugging Face ``tokenizer.json`` (no ``tokenizers`` needed).

Token ``b`` (0..255) is the byte ``b``; special tokens follow (``<bos>`` 256, ``<eos>`` 257 by
default). It is a BPE model without merges over GPT-2's byte-to-unicode alphabet with the
ByteLevel pre-tokenizer (no regex split, no prefix space) and decoder, so any UTF-8 text
round-trips through ``tokenizers``, onnxruntime-genai and LiteRT-LM. :func:`encode` and
:func:`decode` are the same mapping in pure Python (what training uses).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from bitnet_export._io import atomic_write_bytes

__all__ = ["BOS", "EOS", "VOCAB_SIZE", "byte_tokenizer_json", "decode", "encode", "write_byte_tokenizer"]

BOS = 256
EOS = 257
#: bytes plus ``<bos>`` and ``<eos>``
VOCAB_SIZE = 258


@cache
def _byte_alphabet() -> tuple[str, ...]:
    """GPT-2's printable stand-in character of each byte (what ByteLevel maps bytes to)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


def byte_tokenizer_json(special: Sequence[str] = ("<bos>", "<eos>")) -> dict[str, Any]:
    """The ``tokenizer.json`` document: ids 0..255 bytes, then ``special`` in order."""
    alphabet = _byte_alphabet()
    vocab = {ch: b for b, ch in enumerate(alphabet)}
    added = [
        {
            "id": 256 + i,
            "content": tok,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, tok in enumerate(special)
    ]
    vocab |= {tok: 256 + i for i, tok in enumerate(special)}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": False,
            "use_regex": False,
        },
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": False,
            "use_regex": False,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [],
        },
    }


def write_byte_tokenizer(path: str | Path, special: Sequence[str] = ("<bos>", "<eos>")) -> Path:
    """Write :func:`byte_tokenizer_json` to ``path`` (atomically) and return it."""
    path = Path(path)
    atomic_write_bytes(path, json.dumps(byte_tokenizer_json(special), ensure_ascii=False).encode())
    return path


def encode(text: str) -> list[int]:
    """Token ids of ``text`` (its UTF-8 bytes)."""
    return list(text.encode("utf-8"))


def decode(ids: Sequence[int]) -> str:
    """Text of byte ids (special tokens dropped; invalid UTF-8 replaced)."""
    return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")
