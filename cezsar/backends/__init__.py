"""Inference backends as a registry: each backend module registers its class and declares what it
runs (:mod:`cezsar.backends.base`, :mod:`cezsar.backends.registry`). The converter and the edge both
use them; none imports its library (onnxruntime, TensorRT, torch) until it is used.
"""
