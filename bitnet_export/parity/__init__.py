"""Parity engine: reference vs runtimes -> report."""

from bitnet_export.parity.engine import reference_outputs, run_parity, seeded_inputs
from bitnet_export.parity.metrics import OutputMetrics, compare
from bitnet_export.parity.report import ParityReport, TargetResult, Tolerance
from bitnet_export.parity.tolerances import tolerance_for

__all__ = [
    "OutputMetrics",
    "ParityReport",
    "TargetResult",
    "Tolerance",
    "compare",
    "reference_outputs",
    "run_parity",
    "seeded_inputs",
    "tolerance_for",
]
