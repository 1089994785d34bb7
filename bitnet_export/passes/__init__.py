"""Passes over the ONNX IR hub: small, one per file, each saying whether it changed anything."""
