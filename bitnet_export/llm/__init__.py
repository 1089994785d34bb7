"""Language models on device: KV-cache decoders for onnxruntime-genai and LiteRT-LM."""
