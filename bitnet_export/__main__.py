"""``bitnet-export`` / ``python -m bitnet_export``: the console entry point.

Kept free of heavy imports: the CLI module (torch, onnx, LiteRT) is imported inside
:func:`run`, so that Ctrl-C while it loads ends with "interrupted" and exit code 130 instead of
a traceback from deep inside an import.
"""

from __future__ import annotations

import sys

__all__ = ["run"]


def run() -> None:
    """Import the CLI and run it; exit 130 on Ctrl-C at any point."""
    try:
        from bitnet_export.cli import run as cli_run
    except KeyboardInterrupt:
        print("bitnet-export: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    try:
        cli_run()
    except KeyboardInterrupt:  # between main() returning and exit
        print("bitnet-export: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    run()
