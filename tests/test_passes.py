"""Hub passes: node naming after modules."""

from __future__ import annotations

import torch

from bitnet_export.capture import capture
from bitnet_export.passes.name_nodes import module_path_of, name_nodes
from bitnet_export.zoo.models import MixedBlock


def test_name_nodes_uses_module_paths():
    hub = capture(MixedBlock(), (torch.randn(2, 32),)).model
    assert name_nodes(hub) is True
    names = [n.name for n in hub.graph]
    assert "norm/LayerNormalization" in names and "embed/BitLinear" in names
    assert "Gelu" in names  # F.gelu at the model's root has no module path
    assert len(set(names)) == len(names)
    assert module_path_of(next(n for n in hub.graph if n.op_type == "LayerNormalization")) == "norm"
    assert name_nodes(hub) is False  # idempotent: nothing left to rename
    assert [v.name for v in hub.graph.outputs] == ["output"]
