"""Stand-ins for the ``tensorrt`` module of each version (the boundary fake of the build-plan tests): only
the attributes the build code reads by feature detection."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


def fake_trt(version: str, explicit_batch: bool, strongly_typed: bool, fp16_flag: bool) -> Any:
    ndf: dict[str, int] = {}
    if explicit_batch:
        ndf["EXPLICIT_BATCH"] = 0
    if strongly_typed:
        ndf["STRONGLY_TYPED"] = 1
    bf = {"FP16": 0, "INT8": 1, "TF32": 2} if fp16_flag else {"TF32": 2}
    return SimpleNamespace(
        __version__=version,
        Builder=object,
        NetworkDefinitionCreationFlag=SimpleNamespace(**ndf),
        BuilderFlag=SimpleNamespace(**bf),
        MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
    )


TRT85 = fake_trt("8.5.2.2", explicit_batch=True, strongly_typed=False, fp16_flag=True)
TRT86 = fake_trt("8.6.2.3", explicit_batch=True, strongly_typed=False, fp16_flag=True)
TRT10 = fake_trt("10.3.0.30", explicit_batch=True, strongly_typed=True, fp16_flag=True)
TRT11 = fake_trt("11.0.0.1", explicit_batch=True, strongly_typed=True, fp16_flag=False)
