"""Model conversion: ONNX export, INT8 Q/DQ quantization, TensorRT engine build and checks."""

from cezsar.extras import requires

requires("onnx", "onnxscript", extra="train")
requires("modelopt", extra="quant")  # INT8 Q/DQ (converter/quantizers.py); onnxruntime's quantizer is the fallback
