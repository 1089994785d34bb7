"""A model's outputs as a flat, named list of tensors (tuples, dicts, ``ModelOutput``, nesting).

torch.export and torch.onnx flatten a forward's return value with ``torch.utils._pytree``; the
parity engine and the exporters use the same flattening, so output ``i`` of a file is leaf
``i`` of PyTorch's return value, and its name is that leaf's key path: ``logits``,
``hidden_states.1``, ``0.scores``. A single tensor is ``output``, a plain tuple
``output_0``, ``output_1``... (names a user can pass explicitly override all of them).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch.utils import _pytree as pytree

from bitnet_export.errors import ExportError

__all__ = ["flatten_outputs", "output_names"]

_UNSAFE = re.compile(r"[^0-9A-Za-z_.]+")


def _key_name(entry: object) -> str:
    for attr in ("key", "idx", "name"):  # MappingKey, SequenceKey, GetAttrKey
        if hasattr(entry, attr):
            return _UNSAFE.sub("_", str(getattr(entry, attr)))
    return _UNSAFE.sub("_", str(entry))


def _is_cache(value: object) -> bool:
    """A transformers KV-cache object (``DynamicCache``, ``StaticCache``, ...)."""
    return any(cls.__name__.endswith("Cache") for cls in type(value).__mro__)


def _leaves(out: Any, where: str) -> list[tuple[str, torch.Tensor]]:
    problems: list[str] = []
    caches: list[str] = []
    leaves: list[tuple[str, torch.Tensor]] = []

    def visit(path: tuple[object, ...], value: Any) -> None:
        key = ".".join(_key_name(p) for p in path)
        if isinstance(value, torch.Tensor):
            leaves.append((key, value))
        elif value is None:
            return  # torch.export drops None outputs too
        elif _is_cache(value):
            caches.append(f"{key or '<output>'} ({type(value).__name__})")
        elif isinstance(value, (tuple, list, dict)) or pytree.is_namedtuple_instance(value):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                visit((*path, pytree.MappingKey(k) if isinstance(value, dict) else pytree.SequenceKey(k)), v)
        else:
            try:
                children, _ = pytree.tree_flatten_with_path(value)
            except Exception:
                children = []
            if (len(children) == 1 and children[0][1] is value) or not children:
                problems.append(f"{key or '<output>'} is a {type(value).__name__}, not a tensor")
                return
            for sub_path, leaf in children:
                visit((*path, *sub_path), leaf)

    visit((), out)
    if caches:
        raise ExportError(
            f"{where}: the forward returns a KV cache object ({', '.join(caches)}); a cache "
            "object is not a tensor output. Fix: call the model with use_cache=False (or set "
            "model.config.use_cache = False) for a logits-only export"
        )
    if problems:
        raise ExportError(
            f"{where}: the forward returns values that are not tensors: {'; '.join(problems)}. "
            "Fix: return tensors (a tensor, a tuple/dict of tensors or a ModelOutput)"
        )
    if not leaves:
        raise ExportError(
            f"{where}: the forward returned no tensor ({type(out).__name__}); an exported model "
            "needs at least one output. Fix: return the tensor(s) to export"
        )
    return leaves


def flatten_outputs(out: Any, where: str = "outputs") -> list[torch.Tensor]:
    """The tensors of a forward's return value, in torch.export's (pytree) order.

    Raises:
        ExportError: a KV-cache object (fix: ``use_cache=False``), a non-tensor leaf, or no
            tensor at all.
    """
    return [t for _, t in _leaves(out, where)]


def output_names(out: Any, where: str = "outputs") -> list[str]:
    """Names of the outputs (see the module docstring), in :func:`flatten_outputs` order."""
    leaves = _leaves(out, where)
    if isinstance(out, torch.Tensor):
        return ["output"]
    keys = [k for k, _ in leaves]
    if isinstance(out, (tuple, list)) and not any(isinstance(v, (dict, tuple, list)) for v in out):
        return [f"output_{i}" for i in range(len(keys))] if len(keys) > 1 else ["output"]
    # dicts / ModelOutput / nesting: key paths, unique
    seen: dict[str, int] = {}
    names = []
    for k in keys:
        k = k or "output"
        n = seen.get(k, 0)
        seen[k] = n + 1
        names.append(k if n == 0 else f"{k}_{n}")
    return names
