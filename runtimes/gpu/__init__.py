"""GPU runtime targets (WebGPU through Dawn -> Vulkan): ONNX Runtime WebGPU EP, LiteRT GPU."""
