"""INT8 explicit quantization (Q/DQ) of the frame encoder and temporal head (``cezsar quantize``).

- NVIDIA ModelOpt (``modelopt.onnx.quantization.quantize``, CPU calibration through onnxruntime) inserts
  Q/DQ before Conv/MatMul/Gemm only; the attention batched MatMuls are left unquantized
  (``disable_mha_qdq``). What is not quantized (LayerNormalization, Softmax, residual Adds, the
  attention MatMuls) is FP16 (``high_precision_dtype="fp16"``, ModelOpt's default and its guidance for
  strongly typed TensorRT networks, where the ONNX types are what runs: FP32 there would make the INT8
  engine slower than the FP16 one); the inputs and outputs stay float32. FP16 after a
  DequantizeLinear needs opset 19, which TensorRT 8.x cannot parse, so a deploy folder exported at
  opset < 19 (the default 17) keeps FP32 there (:func:`high_precision_for`); ``cezsar build-engine``
  then builds it weakly typed with the FP16 flag where TensorRT still has one (8.x, 10.x), so TensorRT
  picks FP16 for those layers itself. ModelOpt writes opset 19; the result is converted back to the deploy
  folder's opset when onnx's version converter can do it without changing the outputs (TensorRT
  8.5/8.6 parse opsets up to 17).
- Fallback, only if ModelOpt is missing or fails: onnxruntime ``quantize_static`` in QDQ format,
  INT8 symmetric activations and weights, per-channel weights.

Either result must pass :func:`converter.qdq_check.check_trt_qdq`. The frame encoder is calibrated
on the calibration frames, the head on FP32 frame-encoder features of those frames cut into windows
[B, T, D]. A share of the frames (``holdout``) is never calibrated on and measures the accuracy:
cosine between FP32 and INT8 video embeddings (frame encoder + head) and, with an eval folder,
zero-shot top-1 of both. The gate (mean cosine >= 0.99, top-1 drop <= 2 points) decides whether
the INT8 models are written.

``--target cpu`` (or ``both``, the default) also writes the CPU INT8 models: onnxruntime static QDQ
laid out for its CPU integer kernels (:func:`quantize_cpu`; uint8 activations, int32 bias), which the
TensorRT rules do not apply to and which are not checked against them, on the same calibration data,
with its own report under ``cpu`` and the same gate. When the CPU INT8 temporal head fails the gate,
the head stays FP32 (it runs once per hop; the frame encoder, run once per frame, carries the cost):
the INT8 frame encoder with the FP32 head is gated again and, if it passes, only
the CPU INT8 frame encoder is written and the manifest's CPU INT8 key of the temporal head names the FP32
head (``report["cpu"]["head_precision"] == "fp32"``, the refused INT8 head's numbers under ``int8_head``).

The report says per target what was written and what was refused (``targets``, ``summary``) and
``exit_code``: 0 when at least one usable INT8 deployment was written, 1 when the gate refused every
requested target (bad input raises CezsarError, exit 2 in the CLI).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.backends.base import run_batched
from cezsar.backends.onnxruntime import ort_runner, ort_session
from cezsar.deploy import layout
from cezsar.deploy.manifest import Manifest, file_sha256, load_manifest, save_manifest
from cezsar.errors import CezsarError
from converter.common import cosine_rows
from converter.qdq_check import check_trt_qdq

log = logging.getLogger("cezsar.quantize")

MIN_COSINE = 0.99
MAX_TOP1_DROP = 0.02
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
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return HIGH_PRECISION if opset >= FP16_DQ_OPSET else "fp32"


# -- windows of frame features ------------------------------------------------------------------


def group_order(source_index: np.ndarray, times: np.ndarray) -> list[np.ndarray]:
    """Indices of the frames of each source, in time order."""
    groups = []
    for s in np.unique(source_index):
        idx = np.flatnonzero(source_index == s)
        groups.append(idx[np.argsort(times[idx], kind="stable")])
    return groups


def make_windows(feats: np.ndarray, groups: list[np.ndarray], window: int, stride: int) -> np.ndarray:
    """Cut [N, D] features into [B, window, D] windows that slide over the frames in (source, time) order.

    Calibration sets hold a few frames from each of many clips, or many from one long video; sliding over
    the concatenation gives temporal windows in the second case and scene changes inside a window in the
    first, without repeating frames. Fewer than ``window`` frames in all: the frames repeat.
    """
    order = np.concatenate([g for g in groups if len(g)]) if groups else np.zeros(0, dtype=np.int64)
    if len(order) == 0:
        raise CezsarError("no frames to build feature windows from")
    if len(order) < window:
        return feats[np.resize(order, window)][None].astype(np.float32)
    starts = range(0, len(order) - window + 1, max(1, stride))
    return np.stack([feats[order[s : s + window]] for s in starts]).astype(np.float32)


# -- quantizers ---------------------------------------------------------------------------------


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
    """Run ``converter.quantize.<func>(src, dst, name, data.npy, *rest)`` in a fresh interpreter: ModelOpt
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
        code = f"import sys, json; from converter.quantize import {func} as f; f(*json.loads(sys.argv[1]))"
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
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
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
    have = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
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


# -- accuracy -----------------------------------------------------------------------------------


def _video_embeddings(fe: Any, th: Any, frames: np.ndarray, groups: list[np.ndarray], window: int) -> np.ndarray:
    feats = run_batched(fe, frames, 32)
    windows = make_windows(feats, groups, window, max(1, window // 4))
    return run_batched(th, windows, 32)


def _top1(
    deploy: Path, m: Manifest, eval_data: Path, sessions: dict[str, tuple[Any, Any]], threads: int | None
) -> dict[str, Any]:
    """Zero-shot top-1 of each (frame encoder, head) pair on an eval folder (testing classes of split.json)."""
    from cezsar import zeroshot
    from cezsar.data.formats import SPLIT_FILE, read_eval_set, read_split
    from cezsar.tokenize import SentenceTokenizer
    from cezsar.video import sample_clip

    evalset = read_eval_set(eval_data)
    names = list(evalset.classes)
    split_path = Path(eval_data) / SPLIT_FILE
    if split_path.is_file():
        names = list(read_split(split_path, names).testing)
    videos = [v for v in evalset.videos if v.label in set(names)]
    if len(names) < 2 or not videos:
        raise CezsarError(f"{eval_data}: need >= 2 classes with videos to measure top-1")
    tx = ort_session(m.path(deploy, "text_encoder"), threads)
    tokenize = SentenceTokenizer(m.path(deploy, "tokenizer"), max_length=m.text_max_length)
    proto = zeroshot.class_prototypes([tx.run(None, tokenize(evalset.classes[name]))[0] for name in names])
    pre = m.pre
    clips = []
    for v in videos:
        clips.append(pre(sample_clip(v.path, m.fps, m.window, v.start, v.end)))
    frames = np.concatenate(clips)
    labels = np.asarray([names.index(v.label) for v in videos])
    out: dict[str, Any] = {"eval_videos": len(videos), "eval_classes": len(names), "split": split_path.is_file()}
    for key, (fe, th) in sessions.items():
        feats = run_batched(fe, frames, 32).reshape(len(videos), m.window, -1)
        emb = run_batched(th, feats, 32)
        out[f"top1_{key}"] = zeroshot.top1_accuracy(zeroshot.cosine_scores(emb, proto), labels)
    return out


def _speed(path_fp32: Path, path_int8: Path, size: int, batch: int = 8, runs: int = 20) -> dict[str, Any]:
    """onnxruntime CPU latency of both frame encoders at one batch size, runs interleaved so that background
    load hits both alike; reports the best (``*_ms``) and the median run."""
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    sessions = {"fp32": ort_session(path_fp32), "int8": ort_session(path_int8)}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {"frames": x})
    for _ in range(runs):
        for key, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {"frames": x})
            times[key].append(time.perf_counter() - t)
    res: dict[str, Any] = {"batch": batch, "threads": os.cpu_count(), "runs": runs}
    for key, ts in times.items():
        res[f"{key}_ms"] = round(1000 * float(np.min(ts)), 3)
        res[f"{key}_median_ms"] = round(1000 * float(np.median(ts)), 3)
    res["speedup"] = round(res["fp32_ms"] / max(res["int8_ms"], 1e-9), 3)
    return res


# -- the command --------------------------------------------------------------------------------


TARGETS = (*layout.INT8_TARGETS, "both")


def _accuracy(
    fe32: Any, th32: Any, fe8: Any, th8: Any, hold_frames: np.ndarray, groups_hold: list[np.ndarray], window: int
) -> dict[str, Any]:
    """Cosine FP32 vs INT8 on held-out frames: video embeddings (frame encoder + head), frame features, head only."""
    emb32 = _video_embeddings(fe32, th32, hold_frames, groups_hold, window)
    emb8 = _video_embeddings(fe8, th8, hold_frames, groups_hold, window)
    cos = cosine_rows(emb32, emb8)
    f32 = run_batched(fe32, hold_frames, 32)
    f8 = run_batched(fe8, hold_frames, 32)
    feat_cos = cosine_rows(f32, f8)
    hold_windows = make_windows(f32, groups_hold, window, max(1, window // 4))
    head_cos = cosine_rows(run_batched(th32, hold_windows, 64), run_batched(th8, hold_windows, 64))
    return {
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "windows": int(len(cos)),
        "frame_features": {"mean_cosine": float(feat_cos.mean()), "min_cosine": float(feat_cos.min())},
        "head_only": {"mean_cosine": float(head_cos.mean()), "min_cosine": float(head_cos.min())},
    }


def _gate(report: dict[str, Any], min_cosine: float, max_top1_drop: float, force: bool) -> None:
    reasons = []
    if not report["mean_cosine"] >= min_cosine:
        reasons.append(f"mean cosine FP32 vs INT8 {report['mean_cosine']:.4f} < {min_cosine}")
    if report["top1_fp32"] is not None and report["top1_fp32"] - report["top1_int8"] > max_top1_drop + 1e-9:
        reasons.append(
            f"top-1 drops {100 * (report['top1_fp32'] - report['top1_int8']):.1f} points "
            f"({report['top1_fp32']:.3f} -> {report['top1_int8']:.3f}) > {100 * max_top1_drop:.0f}"
        )
    report["passed"] = not reasons
    report["reason"] = "; ".join(reasons) or "within the gate"
    report["forced"] = bool(reasons) and force


CPU_FP32_HEAD = "cpu_fp32_head"  # sessions key: CPU INT8 frame encoder + FP32 head
EXIT_NOTHING_WRITTEN = 1  # every requested target refused by the gate (exit 0: something usable written)


def _summary_line(target: str, t: dict[str, Any]) -> str:
    """One line per target: what was written and what was refused, and why."""
    if not t["written"]:
        return f"{target}: refused, nothing written ({t['reason']})"
    wrote = ", ".join(t["files"])
    if t["head_precision"] == "fp32":
        return f"{target}: wrote {wrote}; temporal head kept in FP32 ({t['reason']})"
    if not t["passed"]:
        return f"{target}: wrote {wrote} although the gate failed (--force: {t['reason']})"
    return f"{target}: wrote {wrote} ({t['reason']})"


def quantize_deploy(
    deploy_dir: str | Path,
    calib: str | Path,
    eval_data: str | Path | None = None,
    force: bool = False,
    method: str = "auto",
    holdout: float = 0.2,
    seed: int = 0,
    calibration_method: str = "entropy",
    min_cosine: float = MIN_COSINE,
    max_top1_drop: float = MAX_TOP1_DROP,
    threads: int | None = None,
    measure_speed: bool = True,
    target: str = "both",
) -> dict[str, Any]:
    """Quantize the deploy folder's frame encoder and head; returns the report (see module doc).

    ``target``: "tensorrt" (Q/DQ by TensorRT's rules), "cpu" (laid out
    for onnxruntime's CPU integer kernels, see :func:`quantize_cpu`; not checked against the TensorRT
    rules) or "both". Each target has its own gate on the same held-out frames, and its files are
    written only when its gate passes, or with ``force``. The report's top-level numbers are the
    TensorRT target's (the CPU target's when only it ran); ``report["cpu"]`` holds the CPU target's
    report, ``report["targets"]`` whether each target passed and was written. The manifest keeps the
    report under ``extra.quantization`` (a later run of one target keeps the other target's report).
    """
    from cezsar.data.calibration import load_calibration

    if target not in TARGETS:
        raise CezsarError(f"--target {target}: choose one of {', '.join(TARGETS)}")
    run_targets = ["tensorrt", "cpu"] if target == "both" else [target]
    deploy = Path(deploy_dir)
    m = load_manifest(deploy)
    fe_path, th_path = m.path(deploy, "frame_encoder"), m.path(deploy, "temporal_head")
    cal = load_calibration(calib, m.pre, m.model_hash)
    if not 0.0 < holdout < 0.9:
        raise CezsarError(f"--holdout {holdout}: must be between 0 and 0.9")
    n = len(cal)
    n_hold = max(1, int(round(n * holdout)))
    if n - n_hold < 16:
        raise CezsarError(f"{calib}: {n} frames leave {n - n_hold} to calibrate on after the hold-out; need >= 16")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    hold, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    t0 = time.perf_counter()

    fe32 = ort_runner(fe_path, threads)
    train_frames = cal.frames[train]
    train_feats = run_batched(fe32, train_frames, 32)
    groups_train = group_order(cal.source_index[train], cal.times[train])
    head_data = make_windows(train_feats, groups_train, m.window, max(1, m.window // 4))
    common = {
        "holdout_frames": int(n_hold),
        "calibration_frames": int(len(train)),
        "calib_file": str(calib),
        "calib_sources": len(cal.sources),
        "gate": {"min_mean_cosine": min_cosine, "max_top1_drop": max_top1_drop},
    }

    with tempfile.TemporaryDirectory(prefix="cezsar-int8-") as td:
        paths: dict[str, dict[str, Path]] = {}
        reports: dict[str, dict[str, Any]] = {}
        for t in run_targets:
            fe8_path, th8_path = (Path(td) / layout.int8_name(part, t) for part in layout.VIDEO_PARTS)
            tt = time.perf_counter()
            if t == "tensorrt":
                cm = calibration_method
                fe_res = quantize_onnx(fe_path, fe8_path, "frames", train_frames, method, m.opset, 32, cm)
                th_res = quantize_onnx(th_path, th8_path, "features", head_data, method, m.opset, 32, cm)
                methods = {fe_res["method"], th_res["method"]}
                meth = "+".join(sorted(methods)) if len(methods) > 1 else fe_res["method"]
            else:
                fe_res = quantize_cpu(fe_path, fe8_path, "frames", train_frames, 32)
                th_res = quantize_cpu(th_path, th8_path, "features", head_data, 32)
                meth = "ort-cpu"
            paths[t] = {"frame_encoder": fe8_path, "temporal_head": th8_path}
            reports[t] = {
                "mean_cosine": 0.0,
                "min_cosine": 0.0,
                "top1_fp32": None,
                "top1_int8": None,
                "method": meth,
                "passed": False,
                "reason": "",
                "target": t,
                "trt_rules_checked": t == "tensorrt",
                **common,
                "calibration_method": fe_res["calibration"],
                "parts": {"frame_encoder": fe_res, "temporal_head": th_res},
                "quantize_seconds": round(time.perf_counter() - tt, 2),
            }

        # -- accuracy on the held-out frames ----------------------------------------------------
        th32 = ort_runner(th_path, threads)
        hold_frames = cal.frames[hold]
        groups_hold = group_order(cal.source_index[hold], cal.times[hold])
        sessions: dict[str, tuple[Any, Any]] = {"fp32": (fe32, th32)}
        fallback: dict[str, Any] | None = None  # the CPU target with its head kept in FP32
        for t in run_targets:
            fe8 = ort_runner(paths[t]["frame_encoder"], threads)
            th8 = ort_runner(paths[t]["temporal_head"], threads)
            sessions[t] = (fe8, th8)
            reports[t].update(_accuracy(fe32, th32, fe8, th8, hold_frames, groups_hold, m.window))
            if t == "cpu":
                sessions[CPU_FP32_HEAD] = (fe8, th32)
                fallback = {
                    "method": reports[t]["method"],
                    "top1_fp32": None,
                    "top1_int8": None,
                    **_accuracy(fe32, th32, fe8, th32, hold_frames, groups_hold, m.window),
                }
        if eval_data is not None:
            top1 = _top1(deploy, m, Path(eval_data), sessions, threads)
            for t in run_targets:
                reports[t].update({k: v for k, v in top1.items() if not k.startswith("top1_")})
                reports[t]["top1_fp32"], reports[t]["top1_int8"] = top1["top1_fp32"], top1[f"top1_{t}"]
            if fallback is not None:
                fallback["top1_fp32"], fallback["top1_int8"] = top1["top1_fp32"], top1[f"top1_{CPU_FP32_HEAD}"]
        for t in run_targets:
            if measure_speed:
                reports[t]["cpu_speed_frame_encoder"] = _speed(fe_path, paths[t]["frame_encoder"], m.pre.size)
            _gate(reports[t], min_cosine, max_top1_drop, force)
        # the head runs once per hop, the frame encoder once per frame: on the CPU an INT8 frame encoder
        # is most of the gain, so when the INT8 head fails the gate, keep the head in FP32
        parts_written = {t: ["frame_encoder", "temporal_head"] for t in run_targets}
        if fallback is not None:
            _gate(fallback, min_cosine, max_top1_drop, False)
            reports["cpu"]["fp32_head"] = {k: v for k, v in fallback.items() if k not in ("method", "forced")}
            if fallback["passed"] and not reports["cpu"]["passed"] and not force:
                int8_reason = reports["cpu"]["reason"]
                keep = ("mean_cosine", "min_cosine", "top1_fp32", "top1_int8", "passed")
                reports["cpu"]["int8_head"] = {
                    "mean_cosine": reports["cpu"]["mean_cosine"],
                    "min_cosine": reports["cpu"]["min_cosine"],
                    "top1_int8": reports["cpu"]["top1_int8"],
                    "reason": int8_reason,
                }
                reports["cpu"].update({k: fallback[k] for k in keep})
                reports["cpu"]["head_precision"] = "fp32"
                reports["cpu"]["reason"] = (
                    f"INT8 head refused ({int8_reason}); INT8 frame encoder + FP32 head within the gate"
                )
                parts_written["cpu"] = ["frame_encoder"]
        for t in run_targets:
            reports[t].setdefault("head_precision", "int8")

        primary = reports.get("tensorrt", reports.get("cpu", {}))
        report: dict[str, Any] = dict(primary)
        if "cpu" in reports:
            report["cpu"] = reports["cpu"]
        report["target"] = target
        write = [t for t in run_targets if reports[t]["passed"] or force]
        report["targets"] = {
            t: {
                "passed": r["passed"],
                "written": t in write,
                "reason": r["reason"],
                "files": [layout.int8_name(part, t) for part in parts_written[t]] if t in write else [],
                "head_precision": r["head_precision"],
            }
            for t, r in reports.items()
        }
        report["summary"] = [_summary_line(t, report["targets"][t]) for t in run_targets]
        report["exit_code"] = 0 if write else EXIT_NOTHING_WRITTEN
        report["seconds"] = round(time.perf_counter() - t0, 2)
        if not write:
            return report

        # -- write: INT8 models first, the manifest last ------------------------------------------
        from cezsar.atomic import atomic_path

        stale: list[Path] = []  # an earlier run's INT8 head, replaced by the FP32 one: removed after the manifest
        for t in write:
            for part, p in paths[t].items():
                key = layout.int8_key(part, t)
                if part not in parts_written[t]:  # kept in FP32: the int8 key names the FP32 file
                    old_rel = m.files.get(key)
                    m.files[key] = m.files[part]
                    if old_rel and old_rel != m.files[part]:
                        m.sha256.pop(old_rel, None)
                        stale.append(deploy / old_rel)
                    continue
                rel = layout.int8_name(part, t)
                with atomic_path(deploy / rel) as tmp:
                    shutil.copyfile(p, tmp)
                m.files[key] = rel
                m.sha256[rel] = file_sha256(deploy / rel)
        old = m.extra.get("quantization")
        stored: dict[str, Any] = dict(old) if isinstance(old, dict) else {}
        if "tensorrt" in write:
            keep_cpu = stored.get("cpu")
            stored = {k: v for k, v in report.items() if k not in ("cpu", "targets")}
            if keep_cpu is not None:
                stored["cpu"] = keep_cpu
        if "cpu" in write:
            stored["cpu"] = reports["cpu"]
        m.extra["quantization"] = stored
        save_manifest(deploy, m)
        for path in stale:
            path.unlink(missing_ok=True)
    return report
