"""Backends: the hub (ONNX IR) -> a file format (ONNX, TFLite)."""
