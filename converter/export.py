"""Export a trained CEZSAR model folder to a deploy folder of ONNX networks (``cezsar export``).

Three networks, each checked against PyTorch with onnxruntime before anything is written (file
names: cezsar.deploy.layout):

- the frame encoder: "frames" [N, 3, S, S] float32 (N dynamic) -> "features" [N, D]
- the temporal head: "features" [B, T, D] float32 (B dynamic, T = the model's window) -> "embedding" [B, J]
- the text encoder: "input_ids", "attention_mask" int64 [B, L] (B, L dynamic) -> "embedding" [B, J];
  the sentence-transformers transformer, its pooling, its Normalize (if any) and the trained TextHead.

The tokenizer file (for the ``tokenizers`` library) is configured with the sentence model's truncation
length and pad-to-longest padding, so the edge runtime embeds new descriptions without torch.
:func:`export_video_parts` writes a deploy folder of the two video networks only (no text model needed:
engines, quantization and benchmarks of the video path).

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. It emits opset 16/17 graphs of
plain ONNX ops (LayerNormalization as one op at opset 17, attention as MatMul/Softmax), which the
TensorRT ONNX parsers of 8.5 to 10.x read; the dynamo exporter targets opset 18 and newer.
The text model is exported with the "eager" attention implementation (no SDPA masking subgraph).
"""

from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.backends.onnxruntime import ort_session
from cezsar.deploy import layout
from cezsar.deploy.manifest import Manifest, file_sha256, save_manifest
from cezsar.errors import CezsarError
from converter.common import cosine_distance, synthetic_frames

log = logging.getLogger("cezsar.export")

DEFAULT_OPSET = 17  # LayerNormalization as one op: TensorRT 8.6, 10.x, 11.x. JetPack 5 (TensorRT 8.5): 16.
MIN_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear
MAX_OPSET = 20
PARITY_TOL = 1e-4  # worst cosine distance allowed between onnxruntime and PyTorch


@dataclass
class PartParity:
    """Worst cosine distance / max abs difference between onnxruntime and PyTorch for one network."""

    cases: dict[str, float] = field(default_factory=dict)  # case name -> worst cosine distance
    max_abs_diff: float = 0.0

    @property
    def worst(self) -> float:
        return max(self.cases.values()) if self.cases else 0.0

    def add(self, case: str, ref: np.ndarray, got: np.ndarray) -> None:
        if ref.shape != got.shape:
            raise CezsarError(f"parity case '{case}': onnxruntime output shape {got.shape} != PyTorch {ref.shape}")
        d = float(np.max(cosine_distance(ref, got)))
        if not np.all(np.isfinite(got)):
            d = float("inf")
        self.cases[case] = max(self.cases.get(case, 0.0), d)
        self.max_abs_diff = max(self.max_abs_diff, float(np.max(np.abs(ref.astype(np.float64) - got))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "worst_cosine_distance": self.worst,
            "max_abs_diff": self.max_abs_diff,
            "cases": dict(self.cases),
        }


# -- export -------------------------------------------------------------------------------------


def export_onnx(
    module: Any,
    args: tuple[Any, ...],
    path: str | Path,
    opset: int,
    inputs: list[str],
    output: str,
    dynamic: dict[str, dict[int, str]],
    output_dims: list[int | str] | None = None,
) -> Path:
    """Export one torch module to ONNX the way ``cezsar export`` does: the TorchScript exporter at
    ``opset`` with named inputs/output and ``dynamic`` axes, the fused MHA fast path off, the ONNX
    checker run; with ``output_dims``, the output's shape written into the graph (the tracer leaves
    some dims unnamed) and weights behind Identity nodes inlined. A failure is one CezsarError line."""
    import torch

    path = Path(path)
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if mha is not None:  # the fused inference kernel (_transformer_encoder_layer_fwd) has no ONNX form
                mha.set_fastpath_enabled(False)
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=inputs,
                output_names=[output],
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        except TypeError as e:
            raise CezsarError(
                f"torch {torch.__version__}: the TorchScript ONNX exporter is unavailable ({e})"
            ) from None
        except Exception as e:  # noqa: BLE001 - any exporter failure becomes one line naming the part
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CezsarError(
                f"{path.stem}: ONNX export failed at opset {opset} ({type(e).__name__}: {first})"
            ) from None
        finally:
            if mha is not None and fastpath is not None:
                mha.set_fastpath_enabled(fastpath)
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as e:  # noqa: BLE001
        raise CezsarError(f"{path.name}: exported graph fails the ONNX checker ({e})") from None
    if output_dims is not None:
        _declare_output(path, output, output_dims)
    return path


def _inline_identity_constants(model: Any) -> int:
    """Replace ``Identity(initializer)`` nodes with a copy of the initializer; returns how many.

    The TorchScript exporter deduplicates equal weights (e.g. equal folded BatchNorm biases) behind
    Identity nodes; quantizers and onnxruntime's Q/DQ fusions want weights and biases as initializers.
    """
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    keep, n = [], 0
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            copy = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0])
            model.graph.initializer.append(copy)
            n += 1
        else:
            keep.append(node)
    if n:
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return n


def _declare_output(path: Path, name: str, dims: list[int | str]) -> None:
    """Write the known output shape into the graph (the tracer leaves some dims unnamed after reshapes)."""
    import onnx

    model = onnx.load(str(path))
    _inline_identity_constants(model)
    for v in model.graph.output:
        if v.name != name:
            continue
        shape = v.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            if isinstance(d, int):
                shape.dim.add().dim_value = d
            else:
                shape.dim.add().dim_param = d
    onnx.save(model, str(path))


def _check_io(path: Path, want: dict[str, list[int | str]]) -> None:
    """The exported graph's input/output names and fixed dims are what the manifest promises."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    got = {}
    for v in list(g.input) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        got[v.name] = [d.dim_value if d.HasField("dim_value") else "?" for d in dims]
    for name, shape in want.items():
        if name not in got:
            raise CezsarError(f"{path.name}: no tensor named '{name}' (has {sorted(got)})")
        g_shape = got[name]
        ok = len(g_shape) == len(shape) and all(
            (w == "?" and gd == "?") or (isinstance(w, int) and gd == w) for w, gd in zip(shape, g_shape, strict=False)
        )
        if not ok:
            raise CezsarError(f"{path.name}: '{name}' has shape {g_shape}, expected {shape} ('?' = dynamic)")


def _prepare(model_dir: str | Path, out_dir: str | Path, opset: int) -> tuple[Path, Path, Any, Any]:
    """(model_dir, out_dir, config, model) after the argument checks."""
    from training.model import CezsarModel, read_config

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise CezsarError(f"--opset {opset}: choose {MIN_OPSET}..{MAX_OPSET} (17: TensorRT >= 8.6; 16: TensorRT 8.5)")
    model_dir = Path(model_dir)
    out_dir = Path(out_dir)
    if out_dir.resolve() == model_dir.resolve() or model_dir.resolve() in out_dir.resolve().parents:
        raise CezsarError(f"{out_dir}: the deploy folder must not be the model folder or inside it")
    cfg = read_config(model_dir)
    return model_dir, out_dir, cfg, CezsarModel.load(model_dir)


def _export_video(model: Any, cfg: Any, folder: Path, opset: int) -> dict[str, Path]:
    """The frame encoder and temporal head as ONNX files in ``folder``, their I/O checked."""
    import torch

    s, window, dim, joint = cfg.pre.size, cfg.frames, cfg.feature_dim, cfg.joint_dim
    fe_path, th_path = (folder / layout.onnx_name(p) for p in layout.VIDEO_PARTS)
    with torch.no_grad():
        export_onnx(
            model.frame_encoder,
            (torch.randn(2, 3, s, s),),
            fe_path,
            opset,
            ["frames"],
            "features",
            {"frames": {0: "N"}, "features": {0: "N"}},
            ["N", dim],
        )
        export_onnx(
            model.temporal_head,
            (torch.randn(2, window, dim),),
            th_path,
            opset,
            ["features"],
            "embedding",
            {"features": {0: "B"}, "embedding": {0: "B"}},
            ["B", joint],
        )
    _check_io(fe_path, {"frames": ["?", 3, s, s], "features": ["?", dim]})
    _check_io(th_path, {"features": ["?", window, dim], "embedding": ["?", joint]})
    return {"frame_encoder": fe_path, "temporal_head": th_path}


def _video_parity(model: Any, cfg: Any, paths: dict[str, Path], seed: int, parity: dict[str, PartParity]) -> None:
    """onnxruntime vs PyTorch for the two video networks, on random and real-looking inputs, several batches."""
    import torch

    pre, window, dim = cfg.pre, cfg.frames, cfg.feature_dim
    rng = np.random.default_rng(seed)
    fe, th = ort_session(paths["frame_encoder"]), ort_session(paths["temporal_head"])
    frames_real = pre(synthetic_frames(2 * window + 3, seed=seed))
    with torch.no_grad():
        for n in (1, 5):
            x = rng.standard_normal((n, 3, pre.size, pre.size)).astype(np.float32)
            ref = model.frame_encoder(torch.from_numpy(x)).numpy()
            parity["frame_encoder"].add("random", ref, fe.run(None, {"frames": x})[0])
        ref_feats = model.frame_encoder(torch.from_numpy(frames_real)).numpy()
        parity["frame_encoder"].add("frames", ref_feats, fe.run(None, {"frames": frames_real})[0])

        for b in (1, 3):
            x = (
                rng.standard_normal((b, window, dim)) * max(1e-3, float(ref_feats.std())) + float(ref_feats.mean())
            ).astype(np.float32)
            ref = model.temporal_head(torch.from_numpy(x)).numpy()
            parity["temporal_head"].add("random", ref, th.run(None, {"features": x})[0])
        windows = np.stack([ref_feats[i : i + window] for i in (0, window)]).astype(np.float32)
        ref = model.temporal_head(torch.from_numpy(windows)).numpy()
        parity["temporal_head"].add("features", ref, th.run(None, {"features": windows})[0])


def _trained_on(model_dir: Path) -> dict[str, Any]:
    """The model's ``trained_on`` record (cezsar.trainedon), for the manifest; {} for a model without one."""
    import json

    from training.model import CONFIG_FILE

    try:
        training = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8")).get("training") or {}
    except (OSError, ValueError):
        return {}
    found = training.get("trained_on") or (training.get("init") or {}).get("trained_on")
    return {"trained_on": found} if isinstance(found, dict) else {}


def _finish(
    tmp: Path,
    model_dir: Path,
    cfg: Any,
    opset: int,
    parity_tol: float,
    parity: dict[str, PartParity],
    extra: dict[str, Any],
    text_max_length: int | None = None,
) -> Manifest:
    """Refuse lost parity; else copy the model folder and write the manifest into ``tmp``."""
    import torch

    from cezsar import __version__
    from training.model import WEIGHTS_FILE

    report = {p: r.to_dict() for p, r in parity.items()}
    for p, r in parity.items():
        log.info("parity %s: worst cosine distance %.3g (max abs diff %.3g)", p, r.worst, r.max_abs_diff)
    bad = [(p, r.worst) for p, r in parity.items() if not r.worst <= parity_tol]
    if bad:
        p, w = bad[0]
        cases = ", ".join(f"{k}={v:.3g}" for k, v in parity[p].cases.items())
        raise CezsarError(
            f"{model_dir}: ONNX parity lost for {p} (worst cosine distance {w:.3g} > {parity_tol:g}; {cases}); "
            "nothing written"
        )
    parts = tuple(parity)
    files = layout.export_files(parts)
    shutil.copytree(model_dir, tmp / files[layout.MODEL_DIR], ignore=shutil.ignore_patterns(".*"))
    calibration = model_dir / layout.calibration_name()  # issue 21: the score calibration, when the model has one
    if calibration.is_file():
        from cezsar.scorecal import load_calibration

        load_calibration(calibration)  # a broken file fails the export, not the edge
        files[layout.CALIBRATION] = layout.calibration_name()
        shutil.copy2(calibration, tmp / files[layout.CALIBRATION])
    else:
        log.warning("%s: no score calibration; the deploy folder scores raw margins (see calibrate-scores)", model_dir)
    manifest_file = layout.manifest_path(tmp)
    sums = {
        str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file() and p != manifest_file
    }
    pre, window, dim, joint = cfg.pre, cfg.frames, cfg.feature_dim, cfg.joint_dim
    shapes = {
        "frame_encoder": {"frames": ["N", 3, pre.size, pre.size], "features": ["N", dim]},
        "temporal_head": {"features": ["B", window, dim], "embedding": ["B", joint]},
        "text_encoder": {"input_ids": ["B", "L"], "attention_mask": ["B", "L"], "embedding": ["B", joint]},
    }
    manifest = Manifest(
        model_hash=file_sha256(model_dir / WEIGHTS_FILE),
        opset=opset,
        preprocess=pre.to_dict(),
        fps=float(cfg.fps),
        window=int(window),
        feature_dim=int(dim),
        joint_dim=int(joint),
        files=files,
        sha256=sums,
        extra={
            "parity": {"tolerance": parity_tol, **report},
            **extra,
            "backbone": cfg.backbone,
            "exporter": f"torch.onnx TorchScript (dynamo=False), torch {torch.__version__}",
            "cezsar_version": __version__,
            "shapes": {p: shapes[p] for p in parts},
            **_trained_on(model_dir),
        },
    )
    if text_max_length is not None:
        manifest.text_max_length = int(text_max_length)
    save_manifest(tmp, manifest)
    return manifest


def export_video_parts(
    model_dir: str | Path,
    out_dir: str | Path,
    opset: int = DEFAULT_OPSET,
    parity_tol: float = PARITY_TOL,
    seed: int = 0,
) -> Manifest:
    """Export only the frame encoder and temporal head of ``model_dir`` to the deploy folder ``out_dir``.

    The same exporter, I/O checks, parity check and atomic swap as :func:`export_model`, and a manifest
    listing the two networks and the model folder copy; no text model is loaded. For what needs the
    video path only: TensorRT engines, quantization, benchmarks. The edge runtime needs the full export.
    """
    import torch

    from cezsar.atomic import atomic_dir

    model_dir, out_dir, cfg, model = _prepare(model_dir, out_dir, opset)
    torch.manual_seed(seed)
    parity = {p: PartParity() for p in layout.VIDEO_PARTS}
    with atomic_dir(out_dir) as tmp:
        paths = _export_video(model, cfg, tmp, opset)
        _video_parity(model, cfg, paths, seed, parity)
        manifest = _finish(tmp, model_dir, cfg, opset, parity_tol, parity, {"video_only": True})
    return manifest


def export_model(
    model_dir: str | Path,
    out_dir: str | Path,
    opset: int = DEFAULT_OPSET,
    parity_tol: float = PARITY_TOL,
    seed: int = 0,
) -> Manifest:
    """Export ``model_dir`` (config.json + model.safetensors) to the deploy folder ``out_dir``.

    The folder is built beside ``out_dir`` and swapped in only when every network passes its parity
    check (worst cosine distance to PyTorch <= ``parity_tol``); on failure nothing is written and an
    existing ``out_dir`` stays as it was. Returns the manifest written into ``out_dir``.
    """
    import torch

    from cezsar.atomic import atomic_dir
    from converter.text_tower import text_tower

    model_dir, out_dir, cfg, model = _prepare(model_dir, out_dir, opset)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    text = text_tower(cfg, model)
    parity = {p: PartParity() for p in layout.PARTS}
    with atomic_dir(out_dir) as tmp:
        paths = _export_video(model, cfg, tmp, opset)
        text_info = text.export(tmp, opset)
        # -- parity: onnxruntime vs PyTorch on random and real-looking inputs, several batch sizes --
        _video_parity(model, cfg, paths, seed, parity)
        text.parity(tmp, rng, parity["text_encoder"])
        manifest = _finish(
            tmp, model_dir, cfg, opset, parity_tol, parity, {"text": text_info}, text_max_length=text.max_length
        )
    return manifest
