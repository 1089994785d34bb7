"""Name hub nodes after the module that produced them (``norm/LayerNormalization``).

torch's exporter names nodes after FX nodes (``node_layer_norm``) and records the module path
in ``pkg.torch.onnx.name_scopes``; a graph viewer then shows FX names, not the user's model.
"""

from __future__ import annotations

import ast
import itertools

import onnx_ir as ir

__all__ = ["SOURCE_KEYS", "module_path_of", "name_nodes"]

#: Metadata keys that carry a node's source location (module path and class); lowerings copy
#: them to every node they emit. The Python stack trace stays on torch's own nodes only: on
#: ~10 emitted nodes per layer it would dominate a small model's file size.
SOURCE_KEYS = ("namespace", "pkg.torch.onnx.name_scopes")


def module_path_of(node: ir.Node) -> str:
    """The dotted module path recorded by torch's exporter (``""`` at the model's root)."""
    raw = node.metadata_props.get("pkg.torch.onnx.name_scopes")
    if not raw:
        return ""
    try:
        scopes = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return ""
    modules = [str(s) for s in scopes[1:-1] if s]
    if not modules:
        return ""
    # torch 2.13 records each scope as the full module path (["", "model", "model.layers.0"]);
    # older releases recorded one attribute name per level (["", "model", "layers", "0"]).
    # Joining full paths would read "model.model.layers.0": take the innermost one then.
    full = all(b.startswith(a + ".") for a, b in itertools.pairwise(modules))
    return modules[-1] if full else ".".join(modules)


def name_nodes(model: ir.Model) -> bool:
    """Rename every node to ``<module path>/<op type>`` (unique, ``_1``, ``_2`` suffixes).

    Returns:
        Whether any node was renamed.
    """
    taken: set[str] = set()
    changed = False
    for node in model.graph:
        path = module_path_of(node)
        base = f"{path}/{node.op_type}" if path else node.op_type
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        if node.name != name:
            node.name = name
            changed = True
    return changed
