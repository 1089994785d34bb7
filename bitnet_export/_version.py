"""Version of bitnet_export (also written into exported files as the producer version)."""

__version__ = "0.1.0"
