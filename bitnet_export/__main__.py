"""``python -m bitnet_export ...``: the ``bitnet-export`` command line."""

from bitnet_export.cli import run

if __name__ == "__main__":
    run()
