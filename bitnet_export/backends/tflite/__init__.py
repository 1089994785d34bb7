"""TFLite backend: lower the ONNX IR hub to a TFLite flatbuffer (int8 / hybrid / INT4 / INT2)."""

from bitnet_export.backends.tflite.convert import TFLITE_WEIGHT_MODES, check_supported, convert_hub

__all__ = ["TFLITE_WEIGHT_MODES", "check_supported", "convert_hub"]
