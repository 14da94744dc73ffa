"""One ONNX model to INT8 (``cezsar quantize``'s quantizers; :mod:`converter.quantize` runs them on a deploy
folder and gates the result).

- TensorRT target (:func:`quantize_onnx`): NVIDIA ModelOpt (``modelopt.onnx.quantization.quantize``, CPU
  calibration through onnxruntime) inserts Q/DQ before Conv/MatMul/Gemm only; the attention batched MatMuls
  are left unquantized (``disable_mha_qdq``). What is not quantized (LayerNormalization, Softmax, residual
  Adds, the attention MatMuls) is FP16 (``high_precision_dtype="fp16"``, ModelOpt's default and its guidance
  for strongly typed TensorRT networks, where the ONNX types are what runs: FP32 there would make the INT8
  engine slower than the FP16 one); the inputs and outputs stay float32. FP16 after a DequantizeLinear
  needs opset 19, which TensorRT 8.x cannot parse, so a deploy folder exported at opset < 19 (the default
  17) keeps FP32 there (:func:`high_precision_for`); ``cezsar build-engine`` then builds it weakly typed
  with the FP16 flag where TensorRT still has one (8.x, 10.x), so TensorRT picks FP16 for those layers
  itself. ModelOpt writes opset 19; the result is converted back to the deploy folder's opset when onnx's
  version converter can do it without changing the outputs (TensorRT 8.5/8.6 parse opsets up to 17).
  Fallback, only if ModelOpt is missing or fails: onnxruntime ``quantize_static`` in QDQ format, INT8
  symmetric activations and weights, per-channel weights. Either result must pass
  :func:`converter.qdq_check.check_trt_qdq`.
- CPU target (:func:`quantize_cpu`): onnxruntime static QDQ laid out for its CPU integer kernels (uint8
  activations, int32 bias), which the TensorRT rules do not apply to and which are not checked against them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.backends.onnxruntime import ort_session
from cezsar.errors import CezsarError
from converter.common import cosine_rows, onnx_opset
from converter.qdq_check import check_trt_qdq

log = logging.getLogger("cezsar.quantize")

QUANT_OPS = ["Conv", "MatMul", "Gemm"]
KEEP_HIGH_PRECISION = ["LayerNormalization", "Softmax"]
METHODS = ("auto", "modelopt", "ort")
# ModelOpt's precision for what is not quantized. Strongly typed TensorRT runs the ONNX types as written,
# so "fp32" would keep LayerNorm, Softmax and the residual Adds in FP32 (slower than the FP16 engine).
HIGH_PRECISION = "fp16"
FP16_DQ_OPSET = 19  # DequantizeLinear with a float16 output


def high_precision_for(onnx_path: Path) -> str:
    """ModelOpt's ``high_precision_dtype`` for a model: fp16 when its opset allows FP16 Q/DQ (>= 19,
    TensorRT >= 10), else fp32 (the model must stay parseable by TensorRT 8.x at its opset)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return HIGH_PRECISION if onnx_opset(model) >= FP16_DQ_OPSET else "fp32"


@contextlib.contextmanager
def _quiet_stdout() -> Any:
    """ModelOpt prints progress to stdout; keep stdout clean for --json."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _modelopt(src: Path, dst: Path, name: str, data: np.ndarray, batch: int, calibration_method: str) -> None:
    from modelopt.onnx.quantization import quantize as mo_quantize

    shape = "x".join(str(d) for d in (min(batch, len(data)), *data.shape[1:]))
    with _quiet_stdout():
        mo_quantize(
            str(src),
            quantize_mode="int8",
            calibration_data={name: data},
            calibration_method=calibration_method,
            calibration_shapes=f"{name}:{shape}",
            calibration_eps=["cpu"],
            op_types_to_quantize=list(QUANT_OPS),
            op_types_to_exclude=list(KEEP_HIGH_PRECISION),
            high_precision_dtype=high_precision_for(src),  # FP16 where not INT8 (opset >= 19); float32 I/O
            disable_mha_qdq=True,
            use_zero_point=False,
            output_path=str(dst),
            log_level="ERROR",
        )


def _in_fresh_interpreter(func: str, src: Path, dst: Path, name: str, data: np.ndarray, *rest: Any) -> None:
    """Run ``converter.quantizers.<func>(src, dst, name, data.npy, *rest)`` in a fresh interpreter: ModelOpt
    monkeypatches onnxruntime's calibrators process-wide once it has run, which breaks a later in-process
    quantize_static."""
    import json
    import subprocess

    with tempfile.TemporaryDirectory(prefix="cezsar-ortq-") as td:
        npy = Path(td) / "data.npy"
        np.save(npy, data)
        args = json.dumps([str(src), str(dst), name, str(npy), *rest])
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        code = f"import sys, json; from converter.quantizers import {func} as f; f(*json.loads(sys.argv[1]))"
        res = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, env=env)
        if res.returncode != 0:
            lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
            raise RuntimeError(lines[-1] if lines else f"exit status {res.returncode}")


def _ort_static(src: Path, dst: Path, name: str, data: np.ndarray, batch: int, calibration_method: str) -> None:
    """onnxruntime quantize_static (TensorRT rules) in a fresh interpreter (see :func:`_in_fresh_interpreter`)."""
    _in_fresh_interpreter("_ort_static_inproc", src, dst, name, data, batch, calibration_method)


def _calibration_reader(data: np.ndarray, batch: int, name: str) -> Any:
    """An onnxruntime CalibrationDataReader feeding ``data`` to input ``name`` in batches (rewindable)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.chunks = [data[i : i + batch] for i in range(0, len(data), batch)]
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= len(self.chunks):
                return None
            self.i += 1
            return {name: self.chunks[self.i - 1]}

        def rewind(self) -> None:
            self.i = 0

    return Reader()


def _ort_static_inproc(src: str, dst: str, name: str, npy: str, batch: int, calibration_method: str) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    # attention's batched MatMuls (activation x activation) stay in high precision, as with ModelOpt
    mha = _activation_matmuls(onnx.load(src).graph)
    # onnxruntime's entropy calibrator fails on these graphs (ragged histogram arrays); MinMax always
    method = CalibrationMethod.MinMax
    with _quiet_stdout():
        quantize_static(
            src,
            dst,
            _calibration_reader(np.load(npy), batch, name),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANT_OPS),
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            nodes_to_exclude=mha,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )


CPU_METHOD = "ort-cpu (QDQ, U8S8, per-channel, int32 bias)"


def quantize_cpu(
    src: str | Path, dst: str | Path, name: str, data: np.ndarray, batch: int = 16, scope: str = "auto"
) -> dict[str, Any]:
    """INT8 for onnxruntime's CPU execution provider (``--target cpu``); returns {"method", "opset"}.

    onnxruntime static QDQ in the form its CPU integer kernels fuse: uint8 activations (asymmetric),
    int8 per-channel weights, int32 biases, MinMax calibration on ``data``; every op type onnxruntime quantizes for
    convolutional graphs, the weight layers only for transformers (:func:`_cpu_scope`). The TensorRT rules (int8
    symmetric activations, float bias) do not apply and are not checked: onnxruntime does not fuse a Conv with a
    float bias, so a TensorRT-style model runs FP32 kernels between Q/DQ pairs on the CPU, no faster than FP32. Runs
    in a fresh interpreter (ModelOpt's process-wide patches of onnxruntime's calibrators, see
    :func:`_in_fresh_interpreter`). ``scope="all"`` quantizes every op type for transformers too (the
    benchmark's comparison, scripts/bench_tower.py).
    """
    import onnx

    src, dst = Path(src), Path(dst)
    with tempfile.TemporaryDirectory(prefix="cezsar-quant-cpu-") as td:
        out = Path(td) / dst.name
        try:
            _in_fresh_interpreter("_quantize_cpu_inproc", src, out, name, data, batch, scope)
        except RuntimeError as e:
            raise CezsarError(f"{src.name}: CPU INT8 quantization failed ({e})") from None
        if not out.is_file():
            raise CezsarError(f"{src.name}: CPU INT8 quantization wrote no model")
        model = onnx.load(str(out))
        opset = onnx_opset(model)
        n_q = sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear")
        transformer = any(n.op_type in KEEP_HIGH_PRECISION for n in model.graph.node)  # the test _cpu_scope makes
        shutil.copyfile(out, dst)
    res = {"method": CPU_METHOD, "calibration": "max", "opset": int(opset), "quantize_linear": n_q}
    return {**res, "scope": "weight layers" if transformer and scope != "all" else "all"}


def _quantize_cpu_inproc(src: str, dst: str, name: str, npy: str, batch: int, scope: str = "auto") -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = Path(dst).with_name(Path(dst).stem + ".pre.onnx")
    try:
        quant_pre_process(src, str(pre))
    except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs (Reshape in the head)
        quant_pre_process(src, str(pre), skip_symbolic_shape=True)
    limits = _cpu_scope(str(pre)) if scope == "auto" else {}
    with _quiet_stdout():
        quantize_static(
            str(pre),
            dst,
            _calibration_reader(np.load(npy), batch, name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            **limits,
        )
    pre.unlink()


def _cpu_scope(path: str) -> dict[str, Any]:
    """What the CPU INT8 model quantizes: everything onnxruntime can, for convolutional graphs (their
    ReLU/pooling/Add chains then stay in integer kernels); for transformers (a Softmax or a
    LayerNormalization in the graph) only the weight layers (Conv, MatMul, Gemm with an initializer
    operand), the ViT guidance ModelOpt follows for TensorRT. Softmax, LayerNorm, GELU, residual Adds and
    attention's activation x activation MatMuls keep float: with per-tensor MinMax ranges they are where
    a ViT's INT8 error comes from (the bench's ViT-B/32: mean cosine 0.961 with all ops, see
    docs/models.md), while the weight MatMuls carry nearly all of the compute."""
    import onnx

    g = onnx.load(path, load_external_data=False).graph
    if not any(n.op_type in KEEP_HIGH_PRECISION for n in g.node):
        return {}
    return {"op_types_to_quantize": list(QUANT_OPS), "nodes_to_exclude": _activation_matmuls(g)}


def _activation_matmuls(g: Any) -> list[str]:
    """Names of the MatMuls with no weight operand (attention's Q.K^T and P.V)."""
    weights = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in g.node if n.op_type == "MatMul" and n.name and not any(i in weights for i in n.input)]


def fold_weight_quantizers(path: Path) -> int:
    """Replace ``QuantizeLinear(float weight initializer)`` by a precomputed INT8 initializer, in place.

    ModelOpt leaves weights as FP32 initializers behind a QuantizeLinear; TensorRT folds that itself,
    but onnxruntime only fuses DequantizeLinear(int8 initializer) -> Conv/MatMul into its integer
    kernels. Rounding follows the ONNX spec (to nearest even, saturate to [-128, 127]). Returns the
    number of weights folded.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, int] = {}
    for node in g.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    keep, folded, drop = [], 0, set()
    for node in g.node:
        x = node.input[0] if node.input else ""
        if (
            node.op_type == "QuantizeLinear"
            and x in inits
            and len(node.input) == 3
            and node.input[1] in inits
            and node.input[2] in inits
        ):
            w = numpy_helper.to_array(inits[x]).astype(np.float32)
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            zp = numpy_helper.to_array(inits[node.input[2]])
            if zp.dtype == np.int8 and w.dtype.kind == "f":
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                if scale.size > 1:
                    shape = [1] * w.ndim
                    shape[axis % w.ndim] = scale.size
                    scale, zp = scale.reshape(shape), zp.reshape(shape)
                q = np.clip(np.rint(w / scale) + zp.astype(np.int32), -128, 127).astype(np.int8)
                g.initializer.append(numpy_helper.from_array(q, node.output[0]))
                folded += 1
                if consumers.get(x, 0) == 1:
                    drop.add(x)
                continue
        keep.append(node)
    if folded:
        del g.node[:]
        g.node.extend(keep)
        kept = [t for t in g.initializer if t.name not in drop]
        del g.initializer[:]
        g.initializer.extend(kept)
        onnx.save(model, str(path))
    return folded


def _match_opset(path: Path, opset: int, probe: np.ndarray, name: str) -> int:
    """Convert ``path`` in place to ``opset`` when the outputs stay identical; returns the opset it has."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    have = onnx_opset(model, default=opset)
    if have <= opset:
        return int(have)
    try:
        down = version_converter.convert_version(model, opset)
        onnx.checker.check_model(down)
    except Exception as e:  # noqa: BLE001 - keep the newer opset, say so
        log.warning("%s: cannot convert opset %d to %d (%s); keeping %d", path.name, have, opset, e, have)
        return int(have)
    tmp = path.with_name(path.stem + ".down.onnx")
    onnx.save(down, str(tmp))
    try:
        a = ort_session(path).run(None, {name: probe})[0]
        b = ort_session(tmp).run(None, {name: probe})[0]
        same = a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-6)
    except CezsarError:
        same = False
    if not same:
        tmp.unlink()
        log.warning("%s: opset %d conversion changes the outputs; keeping opset %d", path.name, opset, have)
        return int(have)
    os.replace(tmp, path)
    return opset


def quantize_onnx(
    src: str | Path,
    dst: str | Path,
    input_name: str,
    data: np.ndarray,
    method: str = "auto",
    opset: int | None = None,
    batch: int = 32,
    calibration_method: str = "entropy",
) -> dict[str, Any]:
    """Quantize one single-input ONNX model to INT8 Q/DQ; returns {"method", "opset", "qdq", "fallback_reason"}.

    ``method``: "modelopt", "ort", or "auto" (ModelOpt, falling back to onnxruntime if it fails).
    ``calibration_method``: ModelOpt's "entropy" (default) or "max"; onnxruntime always uses MinMax.
    The result passes the TensorRT Q/DQ rules or CezsarError is raised.
    """
    if method not in METHODS:
        raise CezsarError(f"--method {method}: choose one of {', '.join(METHODS)}")
    if calibration_method not in ("entropy", "max"):
        raise CezsarError(f"--calibration-method {calibration_method}: choose entropy or max")
    src, dst = Path(src), Path(dst)
    order = ["modelopt", "ort"] if method == "auto" else [method]
    errors: list[str] = []
    for m in order:
        with tempfile.TemporaryDirectory(prefix="cezsar-quant-") as td:
            work = Path(td) / src.name
            shutil.copyfile(src, work)
            out = Path(td) / f"quantized-{Path(dst).name}"
            try:
                (_modelopt if m == "modelopt" else _ort_static)(work, out, input_name, data, batch, calibration_method)
                if not out.is_file():
                    raise RuntimeError("no output model written")
                summary = check_trt_qdq(out, source=f"{src.name} ({m})")
            except ImportError as e:
                errors.append(f"{m}: not installed ({e.name})")
                continue
            except CezsarError as e:
                errors.append(f"{m}: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - a quantizer failure falls through to the next one
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                errors.append(f"{m}: {type(e).__name__}: {first}")
                log.debug("quantizer %s failed", m, exc_info=True)
                continue
            probe = data[: min(4, len(data))]
            ref = ort_session(out).run(None, {input_name: probe})[0]
            folded = fold_weight_quantizers(out)
            if folded:
                got = ort_session(out).run(None, {input_name: probe})[0]
                if float(cosine_rows(ref, got).min()) < 1 - 1e-5:
                    raise CezsarError(f"{src.name}: folding INT8 weights changed the outputs (internal error)")
                summary = check_trt_qdq(out, source=f"{src.name} ({m})")
            have = _match_opset(out, opset, probe, input_name) if opset else summary["opset"]
            summary["opset"] = have
            summary["weights_folded"] = folded
            shutil.copyfile(out, dst)
        return {
            "method": m,
            "calibration": calibration_method if m == "modelopt" else "max",
            "opset": have,
            "qdq": summary,
            "fallback_reason": "; ".join(errors) if errors else None,
        }
    raise CezsarError(f"{src}: INT8 quantization failed ({'; '.join(errors)})")
