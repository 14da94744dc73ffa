"""Datasets without torch: the file formats (:mod:`.formats`), the ActivityNet Captions import
(:mod:`.activitynet`) and the procedurally rendered synthetic action world (:mod:`.synthetic`).

The torch side (clip banks, tensors, the model) stays in ``training/``; the edge demo, the converter
and calibration read and render datasets through this package without importing torch.
"""
