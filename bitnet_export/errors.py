"""The two error families of bitnet_export.

* :class:`QuantConfigError`, :class:`NotCalibratedError` and :class:`ExportError` are
  *user* errors: the model, an option or an input is wrong. Their message names the
  module path, the op or option, and the fix.
* :class:`InternalError` is *our* bug: an invariant of the pipeline did not hold.
"""

from __future__ import annotations

__all__ = [
    "BitNetExportError",
    "ExportError",
    "InternalError",
    "NotCalibratedError",
    "QuantConfigError",
]


class BitNetExportError(Exception):
    """Base class of every error raised on purpose by bitnet_export."""


class QuantConfigError(BitNetExportError, ValueError):
    """An invalid quantization option or value (a ``ValueError``)."""


class NotCalibratedError(BitNetExportError, RuntimeError):
    """A static-activation layer was run or exported before its range was calibrated."""


class ExportError(BitNetExportError):
    """The model cannot be exported as asked; the message names module, op, stage and fix."""


class InternalError(BitNetExportError):
    """An invariant of bitnet_export itself was broken: please report it."""
