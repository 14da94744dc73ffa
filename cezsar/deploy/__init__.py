"""The deploy layer: what the converter writes and the edge reads, with no torch.

- :mod:`cezsar.deploy.layout`: the one module that names the files of a deploy folder and answers
  which file serves a (part, precision, device);
- :mod:`cezsar.deploy.manifest`: ``manifest.json``, the contract between the converter and the edge,
  and the sha256 checks of the files it lists;
- :mod:`cezsar.deploy.sidecar`: the JSON sidecar of each TensorRT engine and the staleness check;
- :mod:`cezsar.deploy.tensorrt`: finding TensorRT, CUDA and the GPU, and the process's one TensorRT logger.

It sits at the bottom of the layers, beside the core modules of ``cezsar``; the backends, the
converter and the edge build on it.
"""
