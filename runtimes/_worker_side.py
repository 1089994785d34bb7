"""The worker's half of the protocol of :mod:`runtimes._worker`, shared by every worker script.

Runs inside the worker (the emulated aarch64 python, or the host python with the
``onnxruntime-webgpu`` site first): standard library and numpy only, and never imported as part
of the ``runtimes`` package there. The host copies it next to the worker script, which imports it
as the top-level module ``_worker_side``; host code may import it as ``runtimes._worker_side``
(the LiteRT adapters share :func:`delegate_placement` with the aarch64 worker).

Protocol: one JSON object per line on stdin; one JSON reply per line on the original stdout.
Native libraries that print to stdout would corrupt the replies, so fd 1 is pointed at stderr
(the host's log file) and replies go to a duplicate of the original fd 1. The first reply is the
worker's hello (``{"ok": true, "hello": {...}}``); ``{"op": "exit"}`` ends the loop. A request that
cannot be served replies ``{"ok": false, "error": "..."}`` and the worker keeps serving. Arrays
travel in ``.npz`` files as ``a0, a1...`` (inputs) and ``o0, o1...`` (outputs), in the order of
the names in the request: a tensor may be named ``file`` or ``a/b``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ORT_TYPES",
    "RequestError",
    "delegate_placement",
    "ort_inputs",
    "read_feed",
    "serve",
    "write_outputs",
]

#: ORT input type -> numpy dtype name, for the host's input checks.
ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32"}


#: The op name of a LiteRT delegate partition in the interpreter's node list.
DELEGATE_OP = "DELEGATE"


class RequestError(Exception):
    """A request that cannot be served; the message goes back to the host."""


def ort_inputs(session: Any) -> list[dict[str, Any]]:
    """``name``, ``shape``, ORT ``type`` and numpy ``dtype`` of an InferenceSession's inputs."""
    return [
        {"name": i.name, "shape": list(i.shape), "type": i.type, "dtype": ORT_TYPES.get(i.type)}
        for i in session.get_inputs()
    ]


def delegate_placement(nodes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Which model ops LiteRT delegate partitions took, from ``Interpreter._get_ops_details()``.

    A ``DELEGATE`` node's inputs and outputs are the boundary tensors of its partition and the
    original nodes stay in the list, so every op reached backwards from a delegate's outputs
    without crossing one of its inputs belongs to it.

    Returns:
        ``ops`` (every node), ``delegated_ops``, ``undelegated_ops`` (``"OP (node i)"``) and
        ``delegate_nodes`` (the partition count).
    """
    originals = [n for n in nodes if n["op_name"] != DELEGATE_OP]
    delegates = [n for n in nodes if n["op_name"] == DELEGATE_OP]
    producer = {int(t): int(n["index"]) for n in originals for t in n["outputs"] if int(t) >= 0}
    by_index = {int(n["index"]): n for n in originals}
    covered: set[int] = set()
    for d in delegates:
        boundary = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while stack:
            tensor = stack.pop()
            if tensor in seen or tensor in boundary:
                continue
            seen.add(tensor)
            node = producer.get(tensor)
            if node is not None and node not in covered:
                covered.add(node)
                stack.extend(int(t) for t in by_index[node]["inputs"] if int(t) >= 0)
    return {
        "ops": [str(n["op_name"]) for n in nodes],
        "delegated_ops": [str(n["op_name"]) for n in originals if int(n["index"]) in covered],
        "undelegated_ops": [
            f"{n['op_name']} (node {n['index']})" for n in originals if int(n["index"]) not in covered
        ],
        "delegate_nodes": len(delegates),
    }


def read_feed(req: dict[str, Any]) -> dict[str, np.ndarray]:
    """The input arrays of a ``run`` request, by name."""
    names = [str(n) for n in req["names"]]
    with np.load(str(req["inputs"])) as data:
        return {n: data[f"a{i}"] for i, n in enumerate(names)}


def write_outputs(req: dict[str, Any], outs: dict[str, np.ndarray]) -> list[str]:
    """Store a ``run`` request's outputs in its ``outputs`` file; returns their names in order."""
    arrays: dict[str, Any] = {f"o{i}": a for i, a in enumerate(outs.values())}
    np.savez(str(req["outputs"]), **arrays)
    return list(outs)


def serve(hello: Callable[[], dict[str, Any]], handle: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """Send ``hello()``'s facts, then answer requests with ``handle`` until EOF or ``exit``."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # native code printing to stdout lands in the log, not in the replies
    sys.stdout = sys.stderr
    replies = os.fdopen(reply_fd, "w", buffering=1)

    def send(obj: dict[str, Any]) -> None:
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    try:
        send({"ok": True, "hello": hello()})
    except Exception as exc:
        send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            if req.get("op") == "exit":
                send({"ok": True})
                return 0
            send({"ok": True, **handle(req)})
        except RequestError as exc:
            send({"ok": False, "error": str(exc)})
        except Exception as exc:  # a worker bug: report it with its traceback, keep serving
            traceback.print_exc()
            send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    return 0
