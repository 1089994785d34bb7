"""LiteRT on the CPU: the Interpreter with an explicit kernel set, and the CompiledModel API.

Which kernels run a TFLite model changes its numbers (FIELD_NOTES): XNNPACK quantizes hybrid
FULLY_CONNECTED rows asymmetrically whatever the model says, the optimized builtin int8 kernel is
+1 LSB on a few percent of outputs, the reference kernels match "single rounding" exactly. So the
kernel set is chosen explicitly and checked after loading, never assumed:

* :class:`LiteRtInterpreterAdapter` (``litert-xnnpack``, ``litert-builtin``, ``litert-reference``)
  reads the interpreter's node list after ``allocate_tensors``. A delegated partition shows up as
  a ``DELEGATE`` node whose inputs/outputs are the partition's boundary tensors; the original
  nodes stay in the list. XNNPACK must have taken every op (or the load fails); builtin and
  reference must show no delegate node. (LiteRT's "Created TensorFlow Lite XNNPACK delegate"
  line is printed once per process only, so stderr is no evidence.)
* :class:`LiteRtCompiledModelAdapter` (``litert-compiled-cpu``) uses ``CompiledModel`` with the
  CPU accelerator only (XNNPACK kernel mode) and requires ``is_fully_accelerated()``.

Inputs and outputs are addressed by the model's SignatureDef names (``serving_default``), or by
tensor names when a model has no signature. Dimensions that are ``-1`` in the model's
``shape_signature`` (the batch) are resized to the inputs; fixed ones must match.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import numpy as np
from ai_edge_litert.compiled_model import CompiledModel
from ai_edge_litert.cpu_kernel_mode import CpuKernelMode
from ai_edge_litert.hardware_accelerator import HardwareAccelerator
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from ai_edge_litert.options import CpuOptions, Options

from runtimes._feed import InputSpec, check_feed
from runtimes._host import cpu_model, host_arch
from runtimes._worker_side import delegate_placement
from runtimes.protocol import RuntimeAdapterError, RuntimeInfo

__all__ = ["KERNELS", "LiteRtCompiledModelAdapter", "LiteRtInterpreterAdapter", "litert_version"]

#: Interpreter kernel choice -> op resolver. ``AUTO`` applies LiteRT's default delegate (XNNPACK).
KERNELS: Final = {
    "xnnpack": OpResolverType.AUTO,
    "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    "reference": OpResolverType.BUILTIN_REF,
}
SIGNATURE_KEY: Final = "serving_default"
_TFLITE_IDENTIFIER: Final = b"TFL3"


@cache
def litert_version() -> str:
    """Version of the installed ``ai-edge-litert`` distribution."""
    try:
        return importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:  # a source build without dist metadata
        return "unknown"


# --------------------------------------------------------------------------- shared helpers
@dataclass(frozen=True)
class _IoSpec:
    """One model input or output as the user addresses it."""

    name: str  # signature name (tensor name when the model has no signature)
    index: int  # tensor index in the interpreter's subgraph
    signature: tuple[int, ...]  # shape_signature: -1 marks a resizable dimension
    dtype: np.dtype[Any]

    def shape_spec(self) -> list[int | str]:
        """Shape with free dimensions named (ints are fixed), as ``OrtCpuAdapter`` reports it."""
        return [d if d >= 0 else ("batch" if i == 0 else f"dim{i}") for i, d in enumerate(self.signature)]


def _check_file(target: str, path: Path) -> None:
    """Fail early, naming the file, when it is missing or clearly not a TFLite flatbuffer."""
    if not path.is_file():
        raise RuntimeAdapterError(f"{target}: model file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != _TFLITE_IDENTIFIER:
        raise RuntimeAdapterError(
            f"{target}: {path} is not a valid TFLite model ({path.stat().st_size} bytes, no TFL3 "
            "identifier); is it truncated or of another format?"
        )


def _open_interpreter(target: str, path: Path, resolver: OpResolverType, threads: int | None) -> Interpreter:
    """Create an Interpreter from ``path`` (LiteRT verifies the flatbuffer here)."""
    _check_file(target, path)
    try:
        return Interpreter(
            model_path=str(path), experimental_op_resolver_type=resolver, num_threads=threads or 1
        )
    except (ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())
        if "Didn't find op" in reason:  # a valid file with an op (version) this LiteRT lacks
            raise RuntimeAdapterError(
                f"{target}: LiteRT {litert_version()} cannot run {path}: {reason}"
            ) from exc
        raise RuntimeAdapterError(
            f"{target}: {path} is not a valid TFLite model ({path.stat().st_size} bytes; truncated "
            f"or corrupt?): LiteRT says: {reason}"
        ) from exc


def _spec(name: str, details: Mapping[str, Any]) -> _IoSpec:
    return _IoSpec(
        name=name,
        index=int(details["index"]),
        signature=tuple(int(d) for d in details["shape_signature"]),
        dtype=np.dtype(details["dtype"]),
    )


def _signature_key(
    target: str, path: Path, signatures: Sequence[str], wanted: str | None = None
) -> str | None:
    """``wanted`` when given, else ``serving_default``, else the only signature, else None (no
    signature: tensor names)."""
    if wanted is not None:
        if wanted not in signatures:
            raise RuntimeAdapterError(
                f"{target}: {path} has no signature {wanted!r} (it has {list(signatures)})"
            )
        return wanted
    if not signatures:
        return None
    if SIGNATURE_KEY in signatures:
        return SIGNATURE_KEY
    if len(signatures) == 1:
        return signatures[0]
    raise RuntimeAdapterError(
        f"{target}: {path} has signatures {list(signatures)} and none is {SIGNATURE_KEY!r}; "
        "export the model with a single signature"
    )


def _io_specs(
    target: str, path: Path, interp: Interpreter, wanted: str | None = None
) -> tuple[str | None, list[_IoSpec], list[_IoSpec]]:
    """Signature key, input and output specs of an interpreter (signature order)."""
    key = _signature_key(target, path, list(interp.get_signature_list()), wanted)
    if key is None:
        ins = [_spec(d["name"], d) for d in interp.get_input_details()]
        outs = [_spec(d["name"], d) for d in interp.get_output_details()]
        return None, ins, outs
    runner = interp.get_signature_runner(key)
    in_details = runner.get_input_details()
    out_details = runner.get_output_details()
    names = interp.get_signature_list()[key]
    ins = [_spec(n, in_details[n]) for n in names["inputs"]]
    outs = [_spec(n, out_details[n]) for n in names["outputs"]]
    return key, ins, outs


def _check_inputs(
    target: str, specs: Sequence[_IoSpec], inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Names, dtypes and shapes of ``inputs`` against the model; -1 dimensions are free."""
    wanted = [InputSpec(s.name, s.shape_spec(), s.dtype, str(s.dtype)) for s in specs]
    return check_feed(target, wanted, inputs, free="resizable")


def _require_threads(target: str, threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise ValueError(f"{target}: threads={threads}; give a positive count or None (one thread)")


@dataclass(frozen=True)
class _Placement:
    """Which interpreter nodes a delegate took, read from the node list after allocation."""

    ops: tuple[str, ...]  # every node: the model's ops, then one DELEGATE node per partition
    delegated: tuple[str, ...]  # model ops inside a delegate partition
    undelegated: tuple[str, ...]  # model ops left to the interpreter's own kernels
    delegate_nodes: int


def _placement(nodes: Sequence[Mapping[str, Any]]) -> _Placement:
    """Attribute model ops to DELEGATE nodes (:func:`runtimes._worker_side.delegate_placement`)."""
    found = delegate_placement(nodes)
    return _Placement(
        ops=tuple(found["ops"]),
        delegated=tuple(found["delegated_ops"]),
        undelegated=tuple(found["undelegated_ops"]),
        delegate_nodes=int(found["delegate_nodes"]),
    )


# --------------------------------------------------------------------------- Interpreter
class _SignatureIO:
    """``input_specs`` / ``output_names`` from a loaded model's signature (both LiteRT APIs)."""

    _inputs: list[_IoSpec]
    _outputs: list[_IoSpec]
    #: the SignatureDef to run (``None``: ``serving_default`` or the only one)
    signature: str | None = None

    def _require(self) -> object:
        """The loaded interpreter or model; raises before ``load``."""
        raise NotImplementedError

    def input_specs(self) -> list[tuple[str, list[int | str], str]]:
        """``(name, shape, dtype)`` of each input; free (resizable) dimensions are names."""
        self._require()
        return [(s.name, s.shape_spec(), s.dtype.name) for s in self._inputs]

    def output_names(self) -> list[str]:
        """Model output names, in signature order."""
        self._require()
        return [s.name for s in self._outputs]


class LiteRtInterpreterAdapter(_SignatureIO):
    """Run a ``.tflite`` file with LiteRT's ``Interpreter`` and an explicit kernel set.

    Args:
        kernel: ``xnnpack`` (default resolver + XNNPACK delegate), ``builtin`` (optimized builtin
            kernels, no delegate) or ``reference`` (reference kernels).
        threads: interpreter threads (``None``: one, LiteRT's Python default).
        allow_partial: ``xnnpack`` only: accept a graph that XNNPACK took only in part (the rest
            runs on builtin kernels and the provider reads ``xnnpack+builtin``). Off by default:
            a partial delegation is an error.
        signature: the SignatureDef to run (a file with several, e.g. ``prefill`` / ``decode``).

    Raises:
        ValueError: unknown kernel, non-positive threads.
    """

    def __init__(
        self,
        kernel: str = "builtin",
        threads: int | None = None,
        allow_partial: bool = False,
        signature: str | None = None,
    ) -> None:
        self.signature = signature
        if kernel not in KERNELS:
            raise ValueError(f"litert: kernel={kernel!r}; choose one of {', '.join(KERNELS)}")
        self.name = f"litert-{kernel}"
        _require_threads(self.name, threads)
        self.kernel = kernel
        self.threads = threads
        self.allow_partial = allow_partial
        self._interp: Interpreter | None = None
        self._path: Path | None = None
        self._key: str | None = None
        self._inputs: list[_IoSpec] = []
        self._outputs: list[_IoSpec] = []
        self._placement: _Placement | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}

    def load(self, path: Path) -> None:
        """Create the interpreter for ``path``, allocate it and check which kernels took the graph.

        Raises:
            RuntimeAdapterError: missing or invalid file; the requested kernel set did not take
                the graph (XNNPACK absent or partial, or a delegate on builtin/reference).
        """
        self._interp = None
        path = Path(path)
        interp = _open_interpreter(self.name, path, KERNELS[self.kernel], self.threads)
        key, ins, outs = _io_specs(self.name, path, interp, self.signature)
        try:
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise RuntimeAdapterError(f"{self.name}: cannot allocate {path}: {str(exc).strip()}") from exc
        self._path, self._key, self._inputs, self._outputs = path, key, ins, outs
        self._shapes = {s.name: tuple(int(d) for d in interp.get_tensor(s.index).shape) for s in ins}
        self._placement = self._verify(interp)
        self._interp = interp

    def _verify(self, interp: Interpreter) -> _Placement:
        """Check the node list against the requested kernel set (no silent fallback)."""
        placement = _placement(interp._get_ops_details())
        if self.kernel != "xnnpack":
            if placement.delegate_nodes:
                raise RuntimeAdapterError(
                    f"{self.name}: asked for {self.kernel} kernels without delegates but a delegate "
                    f"took {list(placement.delegated)} of {self._path}"
                )
            return placement
        if not placement.delegate_nodes:
            raise RuntimeAdapterError(
                f"{self.name}: the XNNPACK delegate was not applied to {self._path} (no DELEGATE node; "
                f"ops {list(placement.ops)}). XNNPACK supports none of them, or LiteRT dropped it "
                "(CPU detection); use litert-builtin or litert-reference for these ops"
            )
        if placement.undelegated and not self.allow_partial:
            raise RuntimeAdapterError(
                f"{self.name}: XNNPACK took {len(placement.delegated)} of "
                f"{len(placement.delegated) + len(placement.undelegated)} ops of {self._path}; "
                f"{list(placement.undelegated)} would run on builtin kernels. Use litert-builtin, "
                "or allow_partial=True to accept the mix"
            )
        return placement

    def _require(self) -> Interpreter:
        if self._interp is None:
            raise RuntimeAdapterError(f"{self.name}: run() before load()")
        return self._interp

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; inputs whose free dimensions differ from the last run are resized first.

        Raises:
            RuntimeAdapterError: wrong input names, dtypes or shapes; a LiteRT failure; a resize
                after which the requested kernel set no longer holds the graph.
        """
        interp = self._require()
        feed = _check_inputs(self.name, self._inputs, inputs)
        try:
            if self._key is not None:
                # The signature runner resizes every input to its array and re-allocates.
                outs = interp.get_signature_runner(self._key)(**feed)
                result = {s.name: np.array(outs[s.name]) for s in self._outputs}
            else:
                resized = False
                for s in self._inputs:
                    if feed[s.name].shape != self._shapes[s.name]:
                        interp.resize_tensor_input(s.index, list(feed[s.name].shape), strict=True)
                        resized = True
                if resized:
                    interp.allocate_tensors()
                for s in self._inputs:
                    interp.set_tensor(s.index, feed[s.name])
                interp.invoke()
                result = {s.name: np.array(interp.get_tensor(s.index)) for s in self._outputs}
        except (ValueError, RuntimeError) as exc:
            raise RuntimeAdapterError(f"{self.name}: run failed on {self._path}: {str(exc).strip()}") from exc
        shapes = {name: arr.shape for name, arr in feed.items()}
        if shapes != self._shapes:  # new shapes re-prepare the graph: check the kernels again
            self._shapes = shapes
            self._placement = self._verify(interp)
        return result

    def info(self) -> RuntimeInfo:
        """What ran: LiteRT version, kernel set (checked), arch, CPU, threads, node list."""
        self._require()
        placement = self._placement
        if placement is None:  # set together with the interpreter in load()
            raise RuntimeAdapterError(f"{self.name}: info() before load()")
        provider = self.kernel
        if self.kernel == "xnnpack" and placement.undelegated:
            provider = "xnnpack+builtin"
        return RuntimeInfo(
            runtime="litert",
            version=litert_version(),
            provider=provider,
            arch=host_arch(),
            cpu_model=cpu_model(),
            emulated=False,
            threads=self.threads or 1,
            details={
                "api": "Interpreter",
                "op_resolver": KERNELS[self.kernel].name,
                "signature": self._key,
                "ops": list(placement.ops),
                "delegated_ops": list(placement.delegated),
                "undelegated_ops": list(placement.undelegated),
                "delegate_nodes": placement.delegate_nodes,
            },
        )


# --------------------------------------------------------------------------- CompiledModel
class LiteRtCompiledModelAdapter(_SignatureIO):
    """Run a ``.tflite`` file with LiteRT's ``CompiledModel`` on the CPU accelerator only.

    The CPU accelerator is XNNPACK; ``is_fully_accelerated()`` says whether it took every op
    (ops it cannot take run on builtin kernels). The file is first opened by an ``Interpreter``,
    which verifies the flatbuffer: ``CompiledModel`` does not, and fails on truncated files with
    unrelated messages.

    Args:
        threads: CPU threads (``None``: one).
        allow_partial: accept a model the CPU accelerator took only in part (provider
            ``xnnpack+builtin``). Off by default: that is an error.
        signature: the SignatureDef to run (``None``: ``serving_default`` or the only one).

    Raises:
        ValueError: non-positive threads.
    """

    name = "litert-compiled-cpu"

    def __init__(
        self, threads: int | None = None, allow_partial: bool = False, signature: str | None = None
    ) -> None:
        self.signature = signature
        _require_threads(self.name, threads)
        self.threads = threads
        self.allow_partial = allow_partial
        self._model: CompiledModel | None = None
        self._path: Path | None = None
        self._key = ""
        self._inputs: list[_IoSpec] = []
        self._outputs: list[_IoSpec] = []
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._buffers: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._fully = False

    def load(self, path: Path) -> None:
        """Compile ``path`` for the CPU accelerator and check that it took the whole graph.

        Raises:
            RuntimeAdapterError: missing or invalid file; the CPU accelerator took only part of
                the graph (unless ``allow_partial``).
        """
        self._model = None
        path = Path(path)
        io = self._interpreter_io(path)
        options = Options(
            hardware_accelerators=HardwareAccelerator.CPU,
            cpu_options=CpuOptions(num_threads=self.threads or 1, kernel_mode=CpuKernelMode.XNNPACK),
        )
        try:
            model = CompiledModel.from_file(str(path), options=options)
            signatures = list(model.get_signature_list())
            fully = bool(model.is_fully_accelerated())
        except (ValueError, RuntimeError) as exc:
            raise RuntimeAdapterError(f"{self.name}: cannot compile {path}: {str(exc).strip()}") from exc
        self._adopt(model, path, signatures, io, fully)

    def _interpreter_io(self, path: Path) -> tuple[list[_IoSpec], list[_IoSpec]]:
        """Input/output specs read with an Interpreter (checks the file; CompiledModel reports
        no shape signatures)."""
        interp = _open_interpreter(self.name, path, KERNELS["builtin"], None)
        _, ins, outs = _io_specs(self.name, path, interp, self.signature)
        return ins, outs

    def _adopt(
        self,
        model: CompiledModel,
        path: Path,
        signatures: list[str],
        io: tuple[list[_IoSpec], list[_IoSpec]],
        fully: bool,
    ) -> None:
        """Keep a compiled model whose inputs match the interpreter's ``io`` specs; check placement."""
        ins, outs = io
        # A model without a SignatureDef gets a "<placeholder signature>" with tensor names.
        key = _signature_key(self.name, path, signatures, self.signature)
        if key is None:
            raise RuntimeAdapterError(f"{self.name}: LiteRT reports no signature for {path}")
        in_details = model.get_input_tensor_details(key)
        # the Interpreter lists a signature's names sorted, CompiledModel in signature order
        if sorted(s.name for s in ins) != sorted(in_details):
            raise RuntimeAdapterError(
                f"{self.name}: CompiledModel names the inputs of {path} {list(in_details)}, the "
                f"interpreter {[s.name for s in ins]}"
            )
        by_name = {s.name: s for s in ins}
        ins = [by_name[n] for n in in_details]
        self._path, self._key, self._inputs, self._outputs = path, key, ins, outs
        self._shapes = {n: tuple(int(d) for d in v["shape"]) for n, v in in_details.items()}
        self._buffers = None
        self._fully = self._verify(fully)
        self._model = model

    def _verify(self, fully: bool) -> bool:
        """No silent fallback: a partly accelerated model is an error unless allowed."""
        if not fully and not self.allow_partial:
            raise RuntimeAdapterError(
                f"{self.name}: the CPU accelerator (XNNPACK) did not take every op of {self._path} "
                "(is_fully_accelerated() is False); run it on litert-xnnpack to list the ops left "
                "to builtin kernels, or pass allow_partial=True"
            )
        return fully

    def _require(self) -> CompiledModel:
        if self._model is None:
            raise RuntimeAdapterError(f"{self.name}: run() before load()")
        return self._model

    def _io_buffers(self, model: CompiledModel) -> tuple[dict[str, Any], dict[str, Any]]:
        """Input/output TensorBuffers for the current shapes (recreated after a resize)."""
        if self._buffers is None:
            self._buffers = (
                {s.name: model.create_input_buffer_by_name(self._key, s.name) for s in self._inputs},
                {s.name: model.create_output_buffer_by_name(self._key, s.name) for s in self._outputs},
            )
        return self._buffers

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; inputs whose free dimensions differ from the compiled shape are resized.

        TensorBuffer.write accepts short arrays and other dtypes without complaint, so the
        inputs are checked here first.

        Raises:
            RuntimeAdapterError: wrong input names, dtypes or shapes; a LiteRT failure.
        """
        model = self._require()
        feed = _check_inputs(self.name, self._inputs, inputs)
        try:
            for s in self._inputs:
                shape = feed[s.name].shape
                if shape != self._shapes[s.name]:
                    self._buffers = None
                    model.resize_input_tensor_by_name(self._key, s.name, list(shape))
                    self._shapes[s.name] = shape
            if self._buffers is None:  # new shapes: check the placement again
                self._fully = self._verify(bool(model.is_fully_accelerated()))
            in_bufs, out_bufs = self._io_buffers(model)
            for s in self._inputs:
                in_bufs[s.name].write(feed[s.name])
            model.run_by_name(self._key, in_bufs, out_bufs)
            details = model.get_output_tensor_details(self._key)
            result = {}
            for s in self._outputs:
                shape = tuple(int(d) for d in details[s.name]["shape"])
                flat = out_bufs[s.name].read(math.prod(shape), np.dtype(details[s.name]["dtype"]))
                result[s.name] = flat.reshape(shape)
        except (ValueError, RuntimeError) as exc:
            raise RuntimeAdapterError(f"{self.name}: run failed on {self._path}: {str(exc).strip()}") from exc
        return result

    def info(self) -> RuntimeInfo:
        """What ran: LiteRT version, CPU accelerator (XNNPACK) and whether it took every op."""
        self._require()
        return RuntimeInfo(
            runtime="litert",
            version=litert_version(),
            provider="xnnpack" if self._fully else "xnnpack+builtin",
            arch=host_arch(),
            cpu_model=cpu_model(),
            emulated=False,
            threads=self.threads or 1,
            details={
                "api": "CompiledModel",
                "accelerator": "CPU",
                "cpu_kernel_mode": "XNNPACK",
                "fully_accelerated": self._fully,
                "signature": self._key,
            },
        )
