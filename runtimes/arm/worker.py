"""Guest side of the aarch64 targets: run by the *emulated* python, never imported on the host.

It may import only the standard library, numpy, onnxruntime, ai_edge_litert and
``_worker_side`` (copied beside it by the host; the guest has no torch, no bitnet_export, no
``runtimes`` package). One process serves many requests, because each emulated start costs ~2 s
(python plus imports). The protocol is :mod:`runtimes._worker_side`'s. All file names in
requests are relative to the working directory: qemu looks absolute paths up in the root
filesystem first.

Requests (``id`` names a loaded model)::

    {"op": "load", "id": "m1", "model": "m1/model.onnx", "runtime": "ort" | "litert-<kernel>",
     "options": {...}}
        -> {"ok": true, "inputs": [{"name", "shape", "dtype", "type"}], "outputs": [names],
            "info": {...}}
    {"op": "run", "id": "m1", "names": [input names], "inputs": "in.npz", "outputs": "out.npz"}
        -> {"ok": true, "outputs": [names], "info": {...}}
        (arrays are stored in the .npz files as a0, a1... and o0, o1..., in the order of the names)
    {"op": "unload", "id": "m1"}  -> {"ok": true}
    {"op": "exit"}                -> {"ok": true}, then the process exits
    {"op": "signal", "signum": 4} -> the process kills itself (tests of the host's crash handling)

Failures reply ``{"ok": false, "error": "..."}``; the process keeps serving.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import numpy as np
from _worker_side import RequestError, delegate_placement, ort_inputs, read_feed, serve, write_outputs

_SIGNATURE_KEY = "serving_default"
_ORT_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC"}
_ORT_LEVELS.update(extended="ORT_ENABLE_EXTENDED", all="ORT_ENABLE_ALL")
_LITERT_RESOLVERS = {
    "xnnpack": "AUTO",
    "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
    "reference": "BUILTIN_REF",
}


def cpu_facts() -> dict[str, Any]:
    """The CPU as the guest OS shows it (qemu emulates /proc/cpuinfo and /sys/.../cpu/*)."""
    features: list[str] = []
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "Features" and not features:
                    features = value.split()
                elif key in ("model name", "CPU part") and not model:
                    model = value.strip()
    except OSError:
        pass
    possible = ""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            possible = f.read().strip()
    except OSError:
        pass
    have = set(features)
    return {
        "machine": platform.machine(),
        "features": features,
        "dotprod": "asimddp" in have,
        "i8mm": "i8mm" in have,
        "sve": "sve" in have,
        "sve2": "sve2" in have,
        "sme": "sme" in have,
        "cpuinfo_model": model,
        "cpus_possible": possible,
        "os_cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


# --------------------------------------------------------------------------- ONNX Runtime
class OrtModel:
    """An onnxruntime session on the CPU execution provider only (checked after creation)."""

    def __init__(self, path: str, options: dict[str, Any]) -> None:
        import onnxruntime as ort

        self.ort = ort
        so = ort.SessionOptions()
        level = options.get("optimization", "all")
        if level not in _ORT_LEVELS:
            raise RequestError(f"optimization={level!r}; choose one of {', '.join(_ORT_LEVELS)}")
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[level])
        so.log_severity_level = 3
        self.threads = options.get("threads")
        if self.threads is not None:
            so.intra_op_num_threads = int(self.threads)
        for key, value in dict(options.get("session_config") or {}).items():
            so.add_session_config_entry(str(key), str(value))
        try:
            self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise RequestError(f"cannot load {path}: {exc}") from exc
        providers = self.session.get_providers()
        if providers != ["CPUExecutionProvider"]:
            raise RequestError(f"asked for CPUExecutionProvider only but ORT assigned {providers}")
        self.level = level

    def inputs(self) -> list[dict[str, Any]]:
        return ort_inputs(self.session)

    def outputs(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(None, feed)
        return dict(zip(self.outputs(), (np.asarray(o) for o in outs), strict=True))

    def info(self) -> dict[str, Any]:
        return {
            "runtime": "onnxruntime",
            "version": self.ort.__version__,
            "provider": ",".join(self.session.get_providers()),
            "threads": self.threads if self.threads is not None else os.cpu_count(),
            "details": {"graph_optimization_level": self.level},
        }


# --------------------------------------------------------------------------- LiteRT
def _free_shape(signature: list[int]) -> list[Any]:
    return [d if d >= 0 else ("batch" if i == 0 else f"dim{i}") for i, d in enumerate(signature)]


class LiteRtModel:
    """A LiteRT Interpreter with an explicit kernel set, checked after every (re)allocation."""

    def __init__(self, path: str, kernel: str, options: dict[str, Any]) -> None:
        import importlib.metadata

        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if kernel not in _LITERT_RESOLVERS:
            raise RequestError(f"kernel={kernel!r}; choose one of {', '.join(_LITERT_RESOLVERS)}")
        self.kernel = kernel
        self.path = path
        self.threads = int(options.get("threads") or 1)
        self.allow_partial = bool(options.get("allow_partial", False))
        self.version = importlib.metadata.version("ai-edge-litert")
        resolver = getattr(OpResolverType, _LITERT_RESOLVERS[kernel])
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError as exc:
            raise RequestError(f"cannot read {path}: {exc}") from exc
        if len(head) < 8 or head[4:8] != b"TFL3":
            raise RequestError(f"{path} is not a valid TFLite model (no TFL3 identifier)")
        try:
            interp = Interpreter(
                model_path=path, experimental_op_resolver_type=resolver, num_threads=self.threads
            )
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RequestError(
                f"LiteRT {self.version} cannot load {path}: {' '.join(str(exc).split())}"
            ) from exc
        self.interp = interp
        signatures = list(interp.get_signature_list())
        if not signatures:
            self.key = None
            ins, outs = interp.get_input_details(), interp.get_output_details()
            self.in_specs = [(d["name"], d) for d in ins]
            self.out_names = [d["name"] for d in outs]
        else:
            wanted = options.get("signature")
            if wanted is not None:
                if wanted not in signatures:
                    raise RequestError(f"{path} has no signature {wanted!r} (it has {signatures})")
                self.key = str(wanted)
            elif _SIGNATURE_KEY in signatures:
                self.key = _SIGNATURE_KEY
            elif len(signatures) == 1:
                self.key = signatures[0]
            else:
                raise RequestError(f"{path} has signatures {signatures} and none is {_SIGNATURE_KEY!r}")
            runner = interp.get_signature_runner(self.key)
            names = interp.get_signature_list()[self.key]
            details = runner.get_input_details()
            self.in_specs = [(n, details[n]) for n in names["inputs"]]
            self.out_names = list(names["outputs"])
        self.shapes = {n: tuple(interp.get_tensor(int(d["index"])).shape) for n, d in self.in_specs}
        self.placement = self.verify()

    def verify(self) -> dict[str, Any]:
        """No silent fallback: the requested kernel set must hold the graph."""
        placement = delegate_placement(self.interp._get_ops_details())
        if self.kernel != "xnnpack":
            if placement["delegate_nodes"]:
                raise RequestError(
                    f"asked for {self.kernel} kernels without delegates but a delegate took "
                    f"{placement['delegated_ops']}"
                )
        elif not placement["delegate_nodes"]:
            raise RequestError(
                f"the XNNPACK delegate was not applied (no DELEGATE node; ops {placement['ops']}): "
                "XNNPACK supports none of them, or LiteRT dropped it (CPU detection)"
            )
        elif placement["undelegated_ops"] and not self.allow_partial:
            raise RequestError(
                f"XNNPACK left {placement['undelegated_ops']} to builtin kernels; "
                "pass allow_partial=True to accept the mix"
            )
        return placement

    def inputs(self) -> list[dict[str, Any]]:
        return [
            {
                "name": n,
                "shape": _free_shape([int(x) for x in d["shape_signature"]]),
                "type": np.dtype(d["dtype"]).name,
                "dtype": np.dtype(d["dtype"]).name,
            }
            for n, d in self.in_specs
        ]

    def outputs(self) -> list[str]:
        return list(self.out_names)

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interp = self.interp
        if self.key is not None:
            outs = interp.get_signature_runner(self.key)(**feed)
            result = {n: np.array(outs[n]) for n in self.out_names}
        else:
            resized = False
            for n, d in self.in_specs:
                if feed[n].shape != self.shapes[n]:
                    interp.resize_tensor_input(int(d["index"]), list(feed[n].shape), strict=True)
                    resized = True
            if resized:
                interp.allocate_tensors()
            for n, d in self.in_specs:
                interp.set_tensor(int(d["index"]), feed[n])
            interp.invoke()
            by_name = {d["name"]: int(d["index"]) for d in interp.get_output_details()}
            result = {n: np.array(interp.get_tensor(by_name[n])) for n in self.out_names}
        shapes = {n: tuple(a.shape) for n, a in feed.items()}
        if shapes != self.shapes:  # new shapes re-prepare the graph: check the kernels again
            self.shapes = shapes
            self.placement = self.verify()
        return result

    def info(self) -> dict[str, Any]:
        provider = self.kernel
        if self.kernel == "xnnpack" and self.placement["undelegated_ops"]:
            provider = "xnnpack+builtin"
        return {
            "runtime": "litert",
            "version": self.version,
            "provider": provider,
            "threads": self.threads,
            "details": {
                "api": "Interpreter",
                "op_resolver": _LITERT_RESOLVERS[self.kernel],
                "signature": self.key,
                **self.placement,
            },
        }


# --------------------------------------------------------------------------- server
class Server:
    """Loaded models by id, and the request dispatch."""

    def __init__(self) -> None:
        self.models: dict[str, OrtModel | LiteRtModel] = {}

    def load(self, req: dict[str, Any]) -> dict[str, Any]:
        runtime = str(req["runtime"])
        path = str(req["model"])
        options = dict(req.get("options") or {})
        if not os.path.isfile(path):
            raise RequestError(f"model file {path} does not exist")
        model: OrtModel | LiteRtModel
        if runtime == "ort":
            model = OrtModel(path, options)
        elif runtime.startswith("litert-"):
            model = LiteRtModel(path, runtime.removeprefix("litert-"), options)
        else:
            raise RequestError(f"unknown runtime {runtime!r}; use ort or litert-<kernel>")
        self.models[str(req["id"])] = model
        return {"inputs": model.inputs(), "outputs": model.outputs(), "info": model.info()}

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        model = self.models.get(str(req["id"]))
        if model is None:
            raise RequestError(f"no model loaded as {req['id']!r}")
        try:
            outs = model.run(read_feed(req))
        except (ValueError, RuntimeError) as exc:
            raise RequestError(f"run failed: {' '.join(str(exc).split())}") from exc
        return {"outputs": write_outputs(req, outs), "info": model.info()}

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "load":
            return self.load(req)
        if op == "run":
            return self.run(req)
        if op == "unload":
            self.models.pop(str(req.get("id")), None)
            return {}
        if op == "signal":
            os.kill(os.getpid(), int(req["signum"]))
            return {}
        raise RequestError(f"unknown op {op!r}")


def main() -> int:
    """Serve requests from stdin until EOF or ``exit``."""
    return serve(cpu_facts, Server().handle)


if __name__ == "__main__":
    sys.exit(main())
