"""ONNX Runtime on the CPU execution provider: the first runtime adapter.

No silent fallback: the session is created with the CPU provider only and the providers that
were really assigned are checked after creation. :meth:`OrtCpuAdapter.optimized_graph` saves
ORT's optimized graph so a test can assert which kernels ran (``MatMulIntegerToFloat``...).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
import onnxruntime as ort

from runtimes._feed import InputSpec, check_feed
from runtimes._host import cpu_model, host_arch
from runtimes.protocol import RuntimeAdapterError, RuntimeInfo

__all__ = ["OPT_LEVELS", "OrtCpuAdapter", "RuntimeAdapterError"]

PROVIDER: Final = "CPUExecutionProvider"
OPT_LEVELS: Final = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_NP_TYPES: Final = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OrtCpuAdapter:
    """Run an ``.onnx`` file with ONNX Runtime's CPU execution provider.

    Args:
        threads: intra-op threads (``None``: ORT's default, one per core).
        optimization: graph optimization level: ``disabled``, ``basic``, ``extended``, ``all``.
        session_config: extra ``SessionOptions.add_session_config_entry`` entries.
    """

    name = "ort-cpu"

    def __init__(
        self,
        threads: int | None = None,
        optimization: str = "all",
        session_config: Mapping[str, str] | None = None,
    ) -> None:
        if optimization not in OPT_LEVELS:
            raise ValueError(f"ort-cpu: optimization={optimization!r}; choose one of {', '.join(OPT_LEVELS)}")
        self.threads = threads
        self.optimization = optimization
        self.session_config = dict(session_config or {})
        self._session: ort.InferenceSession | None = None
        self._path: Path | None = None

    def _options(self, optimized_path: Path | None = None) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.graph_optimization_level = OPT_LEVELS[self.optimization]
        so.log_severity_level = 3
        if self.threads is not None:
            so.intra_op_num_threads = self.threads
        for key, value in self.session_config.items():
            so.add_session_config_entry(key, value)
        if optimized_path is not None:
            so.optimized_model_filepath = str(optimized_path)
        return so

    def _create(self, path: Path, optimized_path: Path | None = None) -> ort.InferenceSession:
        try:
            session = ort.InferenceSession(str(path), self._options(optimized_path), providers=[PROVIDER])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise RuntimeAdapterError(f"ort-cpu: cannot load {path}: {exc}") from exc
        providers = session.get_providers()
        if providers != [PROVIDER]:
            raise RuntimeAdapterError(
                f"ort-cpu: asked for {PROVIDER} only but ORT assigned {providers}; refusing to "
                "run on another provider"
            )
        return session

    def load(self, path: Path) -> None:
        """Create the session for ``path``."""
        self._path = Path(path)
        self._session = self._create(self._path)

    def _require(self) -> ort.InferenceSession:
        if self._session is None:
            raise RuntimeAdapterError("ort-cpu: run() before load()")
        return self._session

    def input_specs(self) -> list[tuple[str, list[Any], str]]:
        """``(name, shape, type)`` of each model input (shape entries are ints or names)."""
        return [(i.name, list(i.shape), i.type) for i in self._require().get_inputs()]

    def output_names(self) -> list[str]:
        """Model output names, in order."""
        return [o.name for o in self._require().get_outputs()]

    def _check_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        specs = [
            InputSpec(name, shape, None if typ not in _NP_TYPES else np.dtype(_NP_TYPES[typ]), typ)
            for name, shape, typ in self.input_specs()
        ]
        return check_feed("ort-cpu", specs, inputs)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; returns outputs by name.

        Raises:
            RuntimeAdapterError: wrong input names, dtypes or shapes, or an ORT failure.
        """
        session = self._require()
        feed = self._check_inputs(inputs)
        try:
            outs = session.run(None, feed)
        except Exception as exc:
            raise RuntimeAdapterError(f"ort-cpu: run failed: {exc}") from exc
        return dict(zip(self.output_names(), (np.asarray(o) for o in outs), strict=True))

    def info(self) -> RuntimeInfo:
        """What ran: ORT version, provider, optimization level, arch, CPU, threads."""
        session = self._require()
        return RuntimeInfo(
            runtime="onnxruntime",
            version=ort.__version__,
            provider=",".join(session.get_providers()),
            arch=host_arch(),
            cpu_model=cpu_model(),
            emulated=False,
            threads=self.threads if self.threads is not None else os.cpu_count(),
            details={"graph_optimization_level": self.optimization},
        )

    def optimized_graph(self, path: Path | None = None) -> onnx.ModelProto:
        """ORT's optimized graph of the loaded model (what its kernels really execute).

        Args:
            path: where to keep the optimized model; a temporary file when ``None``.
        """
        if self._path is None:
            raise RuntimeAdapterError("ort-cpu: optimized_graph() before load()")
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(path) if path is not None else Path(tmp) / "optimized.onnx"
            self._create(self._path, target)
            return onnx.load(str(target))
