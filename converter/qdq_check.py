"""Check an INT8 Q/DQ ONNX graph against what TensorRT's explicit quantization accepts.

Rules (TensorRT developer guide, "Explicit Quantization"; onnx-tensorrt operator notes:
QuantizeLinear/DequantizeLinear "y_zero_point must be 0"):

- quantization is expressed only with QuantizeLinear/DequantizeLinear: no DynamicQuantizeLinear,
  QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger, or com.microsoft quantized ops;
- the quantized type is INT8 (signed): zero points are INT8 tensors, never UINT8; a Q/DQ without
  a zero point is UINT8 by the ONNX spec and is refused too;
- every zero point is all zeros (symmetric quantization);
- scales are constants, finite and > 0;
- per-channel (axis-bearing, more than one scale) Q/DQ only on weights: the quantized input
  (or the input of the QuantizeLinear feeding a DequantizeLinear) is an initializer/Constant;
  activations are per-tensor;
- every QuantizeLinear is consumed by DequantizeLinear nodes only (Q/DQ pairs).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from converter.common import onnx_opset

FORBIDDEN = {
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QLinearAdd",
    "QLinearMul",
    "QAttention",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
}


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(a.t)
    return out


def _node_name(node: Any, i: int) -> str:
    return node.name or f"{node.op_type}#{i} (output {node.output[0] if node.output else '?'})"


def check_trt_qdq(model: Any, source: str = "model") -> dict[str, Any]:
    """Raise CezsarError naming the first offending node; otherwise return a summary of the Q/DQ graph.

    ``model``: an onnx.ModelProto or a path.
    """
    import onnx

    if isinstance(model, (str, Path)):
        source = str(model)
        model = onnx.load(str(model))
    g = model.graph
    consts = _constants(g)
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    graph_outputs = {o.name for o in g.output}

    n_q = n_dq = per_channel = 0
    quantized_ops: Counter[str] = Counter()
    for i, node in enumerate(g.node):
        where = f"{source}: node {_node_name(node, i)}"
        if node.op_type in FORBIDDEN or (node.domain not in ("", "ai.onnx") and "Quant" in node.op_type):
            raise CezsarError(f"{where}: {node.op_type} is not TensorRT explicit quantization (use Q/DQ pairs)")
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.op_type == "QuantizeLinear":
            n_q += 1
        else:
            n_dq += 1
        if len(node.input) < 3 or not node.input[2]:
            raise CezsarError(f"{where}: no zero point, which makes it UINT8; TensorRT needs INT8 (zero point 0)")
        scale_name, zp_name = node.input[1], node.input[2]
        if scale_name not in consts:
            raise CezsarError(f"{where}: scale '{scale_name}' is not a constant")
        if zp_name not in consts:
            raise CezsarError(f"{where}: zero point '{zp_name}' is not a constant")
        scale, zp = consts[scale_name], consts[zp_name]
        if zp.dtype == np.uint8:
            raise CezsarError(f"{where}: UINT8 quantization; TensorRT needs INT8 (signed, zero point 0)")
        if zp.dtype != np.int8:
            raise CezsarError(f"{where}: zero point type {zp.dtype} is not INT8")
        if np.any(zp != 0):
            raise CezsarError(f"{where}: nonzero zero point {zp.ravel()[:4].tolist()}; TensorRT needs symmetric (0)")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise CezsarError(f"{where}: scale must be finite and > 0")
        if any(a.name == "block_size" and a.i > 0 for a in node.attribute):
            raise CezsarError(f"{where}: block quantization is not INT8 explicit quantization")
        if scale.size > 1:
            per_channel += 1
            data = node.input[0]
            if node.op_type == "DequantizeLinear" and data not in consts:
                q = producers.get(data)
                data = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else data
            if data not in consts:
                raise CezsarError(
                    f"{where}: per-channel scales on activation '{node.input[0]}'; only weights may be per-channel"
                )
        if node.op_type == "QuantizeLinear":
            out = node.output[0]
            users = consumers.get(out, [])
            if out in graph_outputs or not users or any(u.op_type != "DequantizeLinear" for u in users):
                kinds = sorted({u.op_type for u in users}) or ["graph output"]
                raise CezsarError(f"{where}: QuantizeLinear must feed DequantizeLinear only (feeds {kinds})")
        else:
            for u in consumers.get(node.output[0], []):
                quantized_ops[u.op_type] += 1
    if n_q == 0 and n_dq == 0:
        raise CezsarError(f"{source}: no QuantizeLinear/DequantizeLinear nodes; not a Q/DQ model")
    return {
        "quantize_linear": n_q,
        "dequantize_linear": n_dq,
        "per_channel": per_channel,
        "quantized_inputs_of": dict(sorted(quantized_ops.items())),
        "opset": onnx_opset(model),
    }
