"""Pretrained image-text towers (issue 11) with TINY random CLIP / SigLIP checkpoints built here.

The checkpoints copy the published repositories' file sets and configs (issue 24;
training/random_checkpoints.py): ``openai/clip-vit-base-patch32`` (legacy ``eos_token_id`` 2, vocab.json +
merges.txt + tokenizer.json), ``google/siglip-base-patch16-224`` (spiece.model only, trained here) and
``sentence-transformers/clip-ViT-B-32`` (modules.json + 0_CLIPModel/), so the loaders read them by the
same path as a downloaded checkpoint.
Random weights: only mechanics and exactness are asserted (identity start, parity, messages reaching a
subscriber), never recognition quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess

ROOT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from training.random_checkpoints import make_clip, make_siglip, make_st_clip

    root = tmp_path_factory.mktemp("ckpt")
    return {
        "clip": make_clip(root / "clip"),
        "siglip": make_siglip(root / "siglip"),
        "st": make_st_clip(root / "st"),
    }


def cos_dist(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return float(np.max(1.0 - np.sum(a * b, axis=-1)))


# -- preprocessing from the checkpoint -------------------------------------------------------------


def test_preprocess_read_from_processor_config(ckpts: dict[str, Path]) -> None:
    from training.pretrained import preprocess_from_folder

    clip = preprocess_from_folder(ckpts["clip"])
    assert (clip.size, clip.resize, clip.resize_mode, clip.interpolation) == (32, 32, "shorter", "bicubic")
    assert clip.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    sig = preprocess_from_folder(ckpts["siglip"])
    assert (sig.size, sig.resize_mode, sig.mean, sig.std) == (32, "squash", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    frame = np.zeros((48, 96, 3), np.uint8)
    frame[:, :48] = 255  # left half white
    # squash keeps the whole frame (half white), the shorter-side crop keeps the middle (a quarter white)
    assert sig.crop_uint8(frame).shape == (32, 32, 3) and abs(sig.crop_uint8(frame)[..., 0].mean() / 255 - 0.5) < 0.05
    assert abs(clip.crop_uint8(frame)[..., 0].mean() / 255 - 0.5) < 0.05
    wide = np.zeros((32, 128, 3), np.uint8)
    wide[:, 48:64] = 255
    assert abs(clip.crop_uint8(wide)[..., 0].mean() / 255 - 0.5) < 0.05  # centre 32 columns: 48..80
    assert abs(sig.crop_uint8(wide)[..., 0].mean() / 255 - 0.125) < 0.05


def test_preprocess_old_manifests_and_bad_values() -> None:
    old = {"size": 64, "resize": 72, "mean": [0.5] * 3, "std": [0.25] * 3, "color": "RGB", "layout": "NCHW"}
    p = Preprocess.from_dict(old)
    assert (p.resize_mode, p.interpolation) == ("shorter", "auto")
    assert Preprocess.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="interpolation 'cubic'"):
        Preprocess.from_dict({**old, "interpolation": "cubic"})
    with pytest.raises(ValueError, match="resize_mode"):
        Preprocess(resize_mode="stretch")


def test_processor_config_errors(tmp_path: Path) -> None:
    from training.pretrained import preprocess_from_folder

    with pytest.raises(CezsarError, match="no preprocessor_config.json"):
        preprocess_from_folder(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 224, "width": 320}}))
    with pytest.raises(CezsarError, match="not square"):
        preprocess_from_folder(tmp_path)


def test_names_and_errors(ckpts: dict[str, Path], tmp_path: Path) -> None:
    from training.backbones import create_backbone
    from training.pretrained import is_pretrained_name, resolve

    assert is_pretrained_name("hf-clip:x") and not is_pretrained_name("timm:vit") and not is_pretrained_name("tiny")
    assert resolve(f"st-clip:{ckpts['st']}").folder == (ckpts["st"] / "0_CLIPModel").resolve()
    with pytest.raises(CezsarError, match="checkpoint folder not found"):
        create_backbone(f"hf-clip:{tmp_path / 'nope'}")
    with pytest.raises(CezsarError, match="expects a siglip model"):
        create_backbone(f"hf-siglip:{ckpts['clip']}")
    with pytest.raises(CezsarError, match="no modules.json"):
        resolve(f"st-clip:{ckpts['clip']}")
    with pytest.raises(CezsarError, match="give a hub name or a local folder"):
        resolve("hf-clip:")
    # a hub name that is not cached, offline: one line saying what to do
    with pytest.raises(CezsarError, match="HF_HUB_OFFLINE=0"):
        resolve("hf-clip:nobody/no-such-clip-model-xyz")


def test_tokenizers_follow_the_checkpoint(ckpts: dict[str, Path]) -> None:
    from training.pretrained import PretrainedTextEncoder

    clip = PretrainedTextEncoder(f"hf-clip:{ckpts['clip']}")
    ids, mask = clip.tokenize(["a person falls", "a person falls to the floor and lies still"])
    assert ids.shape[1] == int(mask[1].sum()) and int(mask[0].sum()) < ids.shape[1]  # pad to the longest
    sig = PretrainedTextEncoder(f"hf-siglip:{ckpts['siglip']}")
    ids, _ = sig.tokenize(["a person falls"])
    assert ids.shape == (1, 64)  # SigLIP: fixed length (the published 64), as trained
    long = sig.tokenize(["word " * 100])[0]
    assert long.shape == (1, 64) and int(long[0, -1]) == 1  # cut, </s> kept last
    # spiece.model converted, and checked against transformers' slow SiglipTokenizer at load
    assert sig.tokenizer_info["checked_against"]["probe_sentences"] >= 50
    e = clip.encode(["a", "b", "a"])
    # the same sentence twice in one batch: equal up to float rounding of the batched matmuls
    assert e.shape == (3, 32) and torch.allclose(e[0], e[2], atol=1e-6)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3))


def test_folders_have_the_published_layouts(ckpts: dict[str, Path]) -> None:
    def files(folder: Path) -> set[str]:
        return {p.name for p in folder.iterdir()}

    tokenizer_files = {"tokenizer_config.json", "special_tokens_map.json"}
    clip = {"config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt",
            "tokenizer.json", *tokenizer_files}  # fmt: skip
    assert files(ckpts["clip"]) == clip
    assert files(ckpts["siglip"]) == {"config.json", "model.safetensors", "preprocessor_config.json",
                                      "spiece.model", *tokenizer_files}  # fmt: skip
    assert files(ckpts["st"]) == {"modules.json", "config_sentence_transformers.json", "0_CLIPModel"}
    assert files(ckpts["st"] / "0_CLIPModel") == clip
    cfg = json.loads((ckpts["clip"] / "config.json").read_text())
    assert (cfg["text_config"]["eos_token_id"], cfg["text_config_dict"]) == (2, None)  # legacy: argmax pooling
    vocab = json.loads((ckpts["clip"] / "vocab.json").read_text())
    assert max(vocab, key=vocab.get) == "<|endoftext|>"  # so the highest id is the end of the text
    assert json.loads((ckpts["clip"] / "preprocessor_config.json").read_text())["size"] == 32  # old integer form
    sig = json.loads((ckpts["siglip"] / "config.json").read_text())["text_config"]
    assert "max_position_embeddings" not in sig and "pad_token_id" not in sig  # the library's 64 and 1


def test_clip_tokenizer_json_is_what_vocab_and_merges_make(ckpts: dict[str, Path], tmp_path: Path) -> None:
    """The folder's tokenizer.json (what cezsar reads) == transformers' CLIPTokenizer from vocab.json + merges.txt."""
    import shutil

    from tokenizers import Tokenizer
    from transformers import CLIPTokenizer

    from training.siglip_tokenizer import PROBES

    bare = tmp_path / "bare"
    shutil.copytree(ckpts["clip"], bare)
    (bare / "tokenizer.json").unlink()
    hf = CLIPTokenizer.from_pretrained(str(bare))
    tok = Tokenizer.from_file(str(ckpts["clip"] / "tokenizer.json"))
    for sentence in PROBES:
        assert tok.encode(sentence).ids == hf(sentence)["input_ids"], sentence


def test_clip_text_tower_pools_at_the_end_of_text(ckpts: dict[str, Path]) -> None:
    """Legacy eos_token_id 2: the embedding is read at <|endoftext|> (the highest id), whatever follows it."""
    from training.pretrained import PretrainedTextEncoder

    clip = PretrainedTextEncoder(f"hf-clip:{ckpts['clip']}")
    ids, mask = clip.tokenize(["a person falls"])
    padded = torch.cat([ids, torch.full((1, 5), int(ids[0, -1]))], dim=1)  # padding is <|endoftext|> too
    with torch.no_grad():
        a = clip.tower(ids, mask)
        b = clip.tower(padded, torch.cat([mask, torch.zeros((1, 5), dtype=mask.dtype)], dim=1))
    assert torch.allclose(a, b, atol=1e-6)


# -- init: the identity start, in torch and ONNX -----------------------------------------------------


@pytest.fixture(scope="module")
def inits(ckpts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from training.init import init_model

    root = tmp_path_factory.mktemp("init")
    specs = {
        "clip": (f"hf-clip:{ckpts['clip']}", None),
        "siglip": (f"hf-siglip:{ckpts['siglip']}", None),
        "clip+minilm": (f"hf-clip:{ckpts['clip']}", MINILM),
    }
    out = {}
    for name, (fe, tt) in specs.items():
        init_model(fe, root / name, text_tower=tt, frames=4, fps=4.0, layers=2)
        out[name] = root / name
    return out


@pytest.mark.parametrize("name", ["clip", "siglip", "clip+minilm"])
def test_init_is_mean_pool_in_torch(inits: dict[str, Path], name: str) -> None:
    from training.model import CezsarModel, read_config

    cfg = read_config(inits[name])
    assert cfg.head == "residual" and cfg.feature_dim == cfg.joint_dim == 32
    model = CezsarModel.load(inits[name])
    torch.manual_seed(1)
    clips = torch.randn(3, 4, 3, 32, 32)
    with torch.no_grad():
        video = model.encode_video(clips).numpy()
        frames = model.frame_encoder(clips.flatten(0, 1)).view(3, 4, -1)
        mean = F.normalize(F.normalize(frames, dim=-1).mean(1), dim=-1).numpy()
    assert cos_dist(video, mean) < 1e-5
    # the heads are not a constant map: different clips, different embeddings
    assert cos_dist(video[:1], video[1:2]) > 1e-4


def test_shared_space_text_is_the_checkpoints_text_embedding(inits: dict[str, Path], ckpts: dict[str, Path]) -> None:
    from training.model import CezsarModel, SentenceEncoder

    model = CezsarModel.load(inits["clip"])
    text = SentenceEncoder(model.config.text_model)
    raw = text.encode(["a person falls to the floor", "someone waves"])
    with torch.no_grad():
        assert cos_dist(model.encode_text(raw).numpy(), raw.numpy()) < 1e-6
    # CLIP frames + MiniLM text: not one space; a trained per-token head (issue 10) maps 384 -> 32
    other = CezsarModel.load(inits["clip+minilm"])
    assert other.config.text_dim == 384 and other.config.text_model == MINILM
    assert other.config.text_input == "tokens" and type(other.text_head).__name__ == "TokenTextHead"
    assert model.config.text_input == "pooled"  # the checkpoint's own text tower keeps its embedding


@pytest.fixture(scope="module")
def deploys(inits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from converter.export import export_model

    root = tmp_path_factory.mktemp("deploy")
    out = {}
    for name, model in inits.items():
        export_model(model, root / name)
        out[name] = root / name
    return out


@pytest.mark.parametrize("name", ["clip", "siglip", "clip+minilm"])
def test_export_parity_and_identity_in_onnx(deploys: dict[str, Path], name: str) -> None:
    from cezsar.backends.onnxruntime import ort_session
    from cezsar.deploy.manifest import load_manifest

    d = deploys[name]
    m = load_manifest(d)
    assert all(m.extra["parity"][p]["worst_cosine_distance"] <= 1e-4 for p in m.files if p in m.extra["parity"])
    assert m.preprocess["interpolation"] == "bicubic"  # the processor's Pillow resize travels to the edge
    assert (m.preprocess["resampler"], m.preprocess["size_rounding"]) == ("pil", "truncate")
    assert m.preprocess["resize_mode"] == ("squash" if name == "siglip" else "shorter")
    fe, th = ort_session(d / "frame_encoder.onnx"), ort_session(d / "temporal_head.onnx")
    x = np.random.default_rng(3).standard_normal((8, 3, 32, 32)).astype(np.float32)
    feats = fe.run(None, {"frames": x})[0].reshape(2, 4, -1)
    video = th.run(None, {"features": feats})[0]
    assert cos_dist(video, feats.mean(1)) < 1e-5


def test_cpu_int8_of_a_vit_quantizes_the_weight_layers_only(deploys: dict[str, Path], tmp_path: Path) -> None:
    """ViT guidance on the CPU INT8 path: Softmax, LayerNorm and attention's activation x activation MatMuls
    read float tensors; scope="all" (the benchmark's comparison) quantizes them too."""
    import onnx

    from converter.common import cosine_rows, synthetic_frames
    from converter.quantizers import quantize_cpu

    src = deploys["clip"] / "frame_encoder.onnx"
    pre = Preprocess(size=32, resize=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    calib = pre(synthetic_frames(24, 48, 64, seed=5))

    def float_inputs(path: Path) -> dict[str, bool]:
        g = onnx.load(str(path)).graph
        dq = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
        inits = {t.name for t in g.initializer}
        weights = inits | {n.output[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
        kinds: dict[str, bool] = {}
        for n in g.node:  # Softmax, LayerNorm and the MatMuls without a weight operand: is their input float?
            if n.op_type in ("Softmax", "LayerNormalization") or (
                n.op_type == "MatMul" and not any(i in weights for i in n.input)
            ):
                kinds[n.op_type] = kinds.get(n.op_type, True) and not any(i in dq for i in n.input[:1])
        return kinds

    out, every = tmp_path / "fe.int8.onnx", tmp_path / "fe.all.int8.onnx"
    assert quantize_cpu(src, out, "frames", calib, 8)["scope"] == "weight layers"
    assert quantize_cpu(src, every, "frames", calib, 8, scope="all")["scope"] == "all"
    assert float_inputs(out) == {"Softmax": True, "LayerNormalization": True, "MatMul": True}
    assert float_inputs(every)["Softmax"] is False and float_inputs(every)["LayerNormalization"] is False
    g = onnx.load(str(out)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in g.node) >= 4  # the weight MatMuls/Conv are INT8
    x = pre(synthetic_frames(8, 48, 64, seed=6))
    from cezsar.backends.onnxruntime import ort_session

    f32 = ort_session(src).run(None, {"frames": x})[0]
    f8 = ort_session(out).run(None, {"frames": x})[0]
    assert cosine_rows(f32, f8).mean() > 0.99


def test_onnx_text_tower_matches_training_path(deploys: dict[str, Path], inits: dict[str, Path]) -> None:
    """tokenizer.json + text_encoder.onnx (no torch, no transformers) == the training-time text path."""
    from cezsar.backends.onnxruntime import ort_session
    from cezsar.tokenize import SentenceTokenizer
    from training.model import CezsarModel, SentenceEncoder

    sentences = ["a person falls to the floor", "a customer picks up an item", "x"]
    for name in ("clip", "siglip", "clip+minilm"):  # the last: MiniLM's per-token states through the token head
        model = CezsarModel.load(inits[name])
        with torch.no_grad():
            ref = model.encode_text(SentenceEncoder.for_config(model.config).encode(sentences)).numpy()
        got = ort_session(deploys[name] / "text_encoder.onnx").run(
            None, SentenceTokenizer(deploys[name] / "tokenizer.json")(sentences)
        )[0]
        assert cos_dist(ref, got) < 1e-5


def test_token_counts_say_when_a_description_is_cut(deploys: dict[str, Path]) -> None:
    """Issue 24: descriptions past 77 (CLIP) / 64 (SigLIP) tokens are cut: the exported tokenizer's count against
    the manifest's text_max_length says so (what ``actions check --deploy`` warns with)."""
    from cezsar.deploy.manifest import load_manifest
    from cezsar.tokenize import SentenceTokenizer, token_counts

    short = "a person falls to the floor"
    sentence = "a person walks into the kitchen, opens the fridge, takes out a bottle of milk and pours a glass, "
    long = (sentence * 5)[:500]  # the most the actions validator allows
    for name, limit, cut in (("clip", 77, True), ("siglip", 64, True), ("clip+minilm", 256, False)):
        assert load_manifest(deploys[name]).text_max_length == limit, name
        counts = token_counts(deploys[name] / "tokenizer.json", [short, long])
        assert counts[0] <= limit and (counts[1] > limit) is cut and counts[1] > 50, (name, counts)
        # what reaches the text encoder (mask ones) is the count, specials included, up to the limit
        mask = SentenceTokenizer(deploys[name] / "tokenizer.json")([short, long])["attention_mask"]
        assert counts[0] == int(mask[0].sum()) and int(mask[1].sum()) == min(limit, counts[1]), name


# -- the whole chain through the CLI, on the CPU ------------------------------------------------------


def _cezsar(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "CEZSAR_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "cezsar", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if check:
        assert res.returncode == 0, f"cezsar {' '.join(args)}:\n{res.stderr[-3000:]}"
    return res


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip", "siglip", "st", "clip+minilm"])
def test_chain_init_export_quantize_run(ckpts: dict[str, Path], tmp_path: Path, name: str) -> None:
    """The three published layouts (and CLIP frames + MiniLM text) through init, export, calibrate, quantize, run."""
    from cezsar.data.synthetic import render_stream
    from tests.helpers.collect import Collector
    from tests.helpers.net import free_port

    fe = {"clip": f"hf-clip:{ckpts['clip']}", "siglip": f"hf-siglip:{ckpts['siglip']}",
          "st": f"st-clip:{ckpts['st']}"}[name.split("+")[0]]  # fmt: skip
    extra = ["--text-tower", MINILM] if name == "clip+minilm" else []
    model, deploy = tmp_path / "model", tmp_path / "deploy"
    res = _cezsar("init", "--frame-encoder", str(fe), "--out", str(model), "--frames", "4", "--fps", "4", "--json",
                  *extra)  # fmt: skip
    assert json.loads(res.stdout)["shared_space"] is (name != "clip+minilm")
    _cezsar("export", str(model), "--out", str(deploy))
    video = tmp_path / "v.mp4"
    render_stream(video, [("staying still", 2.0), ("moving left", 3.0), ("staying still", 2.0)], seed=1)
    _cezsar("calibrate", "--deploy", str(deploy), "--source", str(video), "--out", str(tmp_path / "calib.npz"),
            "--frames", "48")  # fmt: skip
    q = _cezsar("quantize", str(deploy), "--calib", str(tmp_path / "calib.npz"), "--target", "cpu", check=False)
    manifest = json.loads((deploy / "manifest.json").read_text())
    if q.returncode == 0:  # the gate passed: the INT8 model is in the manifest
        assert "frame_encoder.int8-cpu" in manifest["files"] or any("int8" in k for k in manifest["files"])
    else:  # refused: one line naming the gate, nothing written
        errors = [ln for ln in q.stderr.splitlines() if ln.startswith("error:")]
        assert q.returncode == 1 and len(errors) == 1 and "not written" in errors[0], q.stderr[-2000:]
        assert not any("int8" in k for k in manifest["files"])
    actions = tmp_path / "actions.yaml"
    actions.write_text(
        "defaults: {threshold: -2, min_duration: 0, smoothing: 1}\n"
        "background: [a shape staying still]\n"
        "actions:\n  - name: moving left\n    descriptions: [a shape moving to the left]\n"
    )
    pub = f"tcp://127.0.0.1:{free_port()}"
    collector = Collector(pub)
    try:
        run = _cezsar("run", "--deploy", str(deploy), "--source", f"cam={video}", "--actions", str(actions),
                      "--pub", pub, "--backend", "onnxruntime", check=False)  # fmt: skip
        collector.wait("event", lambda d: d["phase"] == "start", 10)
    finally:
        collector.close()
        collector.join(2)
    assert run.returncode == 0, run.stderr[-3000:]
    scores = collector.of("scores")
    assert scores and all("moving left" in d["scores"] for d in scores)
    assert all(np.isfinite(d["scores"]["moving left"]) and np.isfinite(d["cosine"]["moving left"]) for d in scores)
    assert collector.of("event"), "threshold -2: every window is on, so an event must start"


# -- ready-made actions files -------------------------------------------------------------------------


EXAMPLES = sorted((ROOT / "examples" / "actions").glob("*.yaml"))


def test_examples_exist() -> None:
    assert {p.stem for p in EXAMPLES} >= {"home", "shop", "workplace"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_actions_files_pass_check(path: Path) -> None:
    from typer.testing import CliRunner

    from cezsar.cli import app
    from edge.actions import load_actions

    res = CliRunner().invoke(app, ["actions", "check", str(path)])
    assert res.exit_code == 0 and ": ok," in res.output, res.output
    doc = load_actions(path)
    assert len(doc.background) >= 3 and all(len(a.descriptions) >= 3 for a in doc.actions)


# -- fine-tuning from an init -------------------------------------------------------------------------


def test_train_init_fine_tunes_the_heads(inits: dict[str, Path], tmp_path: Path) -> None:
    """`cezsar train --init`: the init's towers and preprocessing, frozen-feature mode, heads move."""
    from cezsar.data.synthset import synthesize
    from training.model import CezsarModel

    world = tmp_path / "w"
    synthesize(world, seed=3, train_clips_per_class=2, eval_clips_per_class=1)
    out = tmp_path / "tuned"
    res = _cezsar("train", "--data", str(world), "--out", str(out), "--init", str(inits["clip"]), "--epochs", "2",
                  "--threads", "1", "--json")  # fmt: skip
    assert json.loads(res.stdout.strip().splitlines()[-1])["epochs_run"] == 2
    before, after = CezsarModel.load(inits["clip"]), CezsarModel.load(out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["mode"] == "frozen" and cfg["head"] == "residual"
    assert cfg["backbone"] == before.config.backbone and cfg["preprocess"] == before.config.preprocess
    b, a = before.state_dict(), after.state_dict()
    assert all(torch.equal(b[k], a[k]) for k in b if k.startswith("frame_encoder."))  # frozen
    assert any(not torch.equal(b[k], a[k]) for k in b if k.startswith("temporal_head."))  # trained
    with pytest.raises(CezsarError, match="not a cezsar model folder"):
        from training.train import TrainConfig, train

        train(world, tmp_path / "x", TrainConfig(init=str(tmp_path)), progress=False)


def test_train_init_end2end_trains_the_vit_at_its_own_rate(inits: dict[str, Path], tmp_path: Path) -> None:
    """`train --init --mode end2end`: the ViT trains too; `--backbone-lr 0` keeps it as it is."""
    from cezsar.data.synthset import synthesize
    from training.model import CezsarModel

    world = tmp_path / "w"
    synthesize(world, seed=4, train_clips_per_class=2, eval_clips_per_class=1)
    before = CezsarModel.load(inits["clip"]).state_dict()
    moved = {}
    for lr in ("0.001", "0"):
        out = tmp_path / f"tuned-{lr}"
        _cezsar("train", "--data", str(world), "--out", str(out), "--init", str(inits["clip"]), "--epochs", "2",
                "--mode", "end2end", "--backbone-lr", lr, "--threads", "1")  # fmt: skip
        assert json.loads((out / "config.json").read_text())["training"]["mode"] == "end2end"
        after = CezsarModel.load(out).state_dict()
        moved[lr] = [k for k in before if k.startswith("frame_encoder.") and not torch.equal(before[k], after[k])]
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("temporal_head."))
    assert len(moved["0.001"]) > 10 and moved["0"] == []
    bad = _cezsar("train", "--data", str(world), "--out", str(tmp_path / "bad"), "--init", str(inits["clip"]),
                  "--mode", "end2end", "--backbone-lr", "-1", check=False)  # fmt: skip
    assert bad.returncode == 2 and "--backbone-lr -1.0: must be >= 0" in bad.stderr
