"""Model conversion: ONNX export, INT8 Q/DQ quantization, TensorRT engine build and checks."""
