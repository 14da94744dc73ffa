"""The split video tower, the checkpoint folder and the backbone registry."""

from __future__ import annotations

import json

import pytest
import torch

from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess
from training.backbones import create_backbone
from training.model import CezsarModel, FactoredTemporalHead, ModelConfig, TemporalHead, read_config


def small_config(**kw) -> ModelConfig:
    return ModelConfig(frames=4, fps=4.0, d_model=32, preprocess=Preprocess(size=32, resize=36).to_dict(), **kw)


def test_split_tower_equals_fused_forward():
    torch.manual_seed(0)
    m = CezsarModel(small_config()).eval()
    clips = torch.randn(3, 4, 3, 32, 32)
    fused = m.encode_video(clips)
    feats = m.frame_encoder(clips.flatten(0, 1)).view(3, 4, -1)
    split = m.temporal_head(feats)
    assert torch.allclose(fused, split, atol=1e-6)
    assert torch.allclose(fused.norm(dim=-1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("kind", [TemporalHead, FactoredTemporalHead])
def test_attention_runs_across_time_not_batch(kind):
    """The reference code's defect: without batch_first, videos of a batch attend to each other."""
    torch.manual_seed(0)
    head = kind(16, 32, 8, heads=2, layers=1, dropout=0.0).eval()
    x = torch.randn(4, 6, 16)
    alone = head(x[:1])
    together = head(x)[:1]
    assert torch.allclose(alone, together, atol=1e-5), "a video's embedding must not depend on its batch mates"
    assert not torch.allclose(head(x[1:2]), alone, atol=1e-3)
    # frame order matters (position embedding): a reversed clip is a different motion
    reversed_clip = head(x[:1].flip(1))
    assert not torch.allclose(reversed_clip, alone, atol=1e-3)


def test_checkpoint_roundtrip(tmp_path):
    m = CezsarModel(small_config()).eval()
    m.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    m2 = CezsarModel.load(tmp_path / "m")
    x = torch.randn(2, 4, 3, 32, 32)
    assert torch.equal(m.encode_video(x), m2.encode_video(x))


def test_factored_head_adds_what_is_in_view_to_how_it_changes(tmp_path):
    torch.manual_seed(0)
    m = CezsarModel(small_config(temporal="factored")).eval()
    assert isinstance(m.temporal_head, FactoredTemporalHead)
    head = m.temporal_head
    x = torch.randn(2, 4, m.config.feature_dim)
    # the appearance part is order-blind; the motion part reads the changes only (a constant shift of every
    # frame's feature moves the appearance part alone)
    f = torch.relu(x)
    app = head.app2(torch.nn.functional.gelu(head.app1(f))).mean(1)
    delta = torch.cat([torch.zeros_like(f[:, :1]), f[:, 1:] - f[:, :-1]], 1)
    mot = head.out(torch.relu(head.encoder(head.inp(delta) + head.pos[:, :4]))).mean(1)
    assert torch.allclose(head(x), torch.nn.functional.normalize(head.norm(app + mot), dim=-1), atol=1e-5)
    m.save(tmp_path / "f")
    loaded = CezsarModel.load(tmp_path / "f")
    assert loaded.config.temporal == "factored" and torch.equal(loaded.temporal_head(x), head(x))
    # an older config without the key is the joint head
    cfg = json.loads((tmp_path / "f" / "config.json").read_text())
    assert cfg["temporal"] == "factored"
    cfg.pop("temporal")
    cfg.pop("weights_sha256")
    assert ModelConfig.from_dict(cfg).temporal == "joint"
    with pytest.raises(CezsarError, match="temporal 'lstm'"):
        ModelConfig.from_dict({**cfg, "temporal": "lstm"})


def test_checkpoint_refuses_other_architecture(tmp_path):
    CezsarModel(small_config()).save(tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    cfg["d_model"] = 64
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CezsarError, match="another architecture"):
        CezsarModel.load(tmp_path / "a")


def test_checkpoint_refuses_corrupt_weights(tmp_path):
    CezsarModel(small_config()).save(tmp_path / "a")
    w = tmp_path / "a" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CezsarError, match="model.safetensors"):
        CezsarModel.load(tmp_path / "a")


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "model folder not found"),
        (lambda d: d.mkdir(), "no config.json"),
        (
            lambda d: (d.mkdir(), (d / "config.json").write_text("{"), (d / "model.safetensors").write_text("")),
            "invalid JSON",
        ),
        (
            lambda d: (
                d.mkdir(),
                (d / "config.json").write_text('{"format": "other"}'),
                (d / "model.safetensors").write_text(""),
            ),
            "not a cezsar model config",
        ),
    ],
)
def test_read_config_errors_name_the_folder(tmp_path, setup, message):
    d = tmp_path / "m"
    setup(d)
    with pytest.raises(CezsarError, match=message) as e:
        read_config(d)
    assert str(d) in str(e.value)


def test_backbone_registry():
    m, dim = create_backbone("tiny")
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, dim)
    with pytest.raises(CezsarError, match="unknown"):
        create_backbone("no-such-backbone-xyz")
    with pytest.raises(CezsarError, match="no pretrained weights"):
        create_backbone("tiny", pretrained=True)


def test_register_backbone_is_public_and_refuses_duplicates(monkeypatch):
    from torch import nn

    from training import backbones

    monkeypatch.setattr(backbones, "_REGISTRY", dict(backbones._REGISTRY))

    def make(pretrained=False):
        return nn.Sequential(nn.Flatten(1), nn.LazyLinear(5)), 5

    assert backbones.register_backbone("test-linear", make) is True
    assert "test-linear" in backbones.available()
    m, dim = create_backbone("test-linear")
    assert dim == 5 and m(torch.zeros(2, 3, 4, 4)).shape == (2, 5)
    assert backbones.register_backbone("test-linear", lambda pretrained=False: None, exist_ok=True) is False
    assert create_backbone("test-linear")[1] == 5  # the first factory is kept
    with pytest.raises(CezsarError, match="already registered"):
        backbones.register_backbone("test-linear", make)
    with pytest.raises(CezsarError, match="reserved"):
        backbones.register_backbone("timm:x", make)


def test_prefix_families_register_themselves(monkeypatch):
    """A family of PREFIX:REF names is one decorated handler: create_backbone looks it up, checks the modules
    it declares (naming the extra that installs them) and tries bare-name families in order."""
    from torch import nn

    from cezsar import extras
    from training import backbones

    monkeypatch.setattr(backbones, "_PREFIXES", dict(backbones._PREFIXES))
    monkeypatch.setattr(extras, "_EXTRAS", dict(extras._EXTRAS))
    assert list(backbones._PREFIXES) == ["hf-clip", "hf-siglip", "st-clip", "torchvision", "timm"]
    calls = []

    @backbones.register_prefix("lin", bare=True, placeholder="<width>")
    def _linear(ref, pretrained=False, name=""):
        calls.append((ref, pretrained, name))
        if not ref.isdigit():
            raise CezsarError(f"backbone '{name}': not a width")
        return nn.Sequential(nn.Flatten(1), nn.LazyLinear(int(ref))), int(ref)

    @backbones.register_prefix("needs-lib", requires=("no_such_lib_xyz",), extra="imaginary")
    def _needs(ref, pretrained=False, name=""):
        raise AssertionError("not called: its module is missing")

    m, dim = create_backbone("lin:7", pretrained=True)
    assert dim == 7 and m(torch.zeros(2, 3, 4, 4)).shape == (2, 7) and calls == [("7", True, "lin:7")]
    assert "lin:<width>" in backbones.available() and not any(n.startswith("needs-lib") for n in backbones.available())
    with pytest.raises(CezsarError, match=r"no_such_lib_xyz is not installed \(pip install 'cezsar\[imaginary\]'\)"):
        create_backbone("needs-lib:x")
    assert extras.extra_for("no_such_lib_xyz") == "imaginary"
    create_backbone("5")  # a bare name: the bare families in order (torchvision and timm are not importable here)
    assert calls[-1] == ("5", False, "lin:5")
    with pytest.raises(CezsarError, match="unknown prefix 'nope:'"):
        create_backbone("nope:x")
    with pytest.raises(CezsarError, match="give a name after 'lin:'"):
        create_backbone("lin:")
    with pytest.raises(CezsarError, match="taken"):
        backbones.register_prefix("timm")(_linear)


def test_backbone_local_checkpoint(tmp_path):
    from safetensors.torch import save_file

    m, _ = create_backbone("tiny")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "w.safetensors"))
    m2, _ = create_backbone("tiny", checkpoint=tmp_path / "w.safetensors")
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    save_file({"x": torch.zeros(3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CezsarError, match="does not match"):
        create_backbone("tiny", checkpoint=tmp_path / "bad.safetensors")


# -- the per-token text head (issue 10) -------------------------------------------------------------


def test_token_text_head_ignores_padding_and_drops_tokens_only_in_training():
    from training.model import TokenTextHead, pack_tokens

    torch.manual_seed(0)
    head = TokenTextHead(8, 4, dropout=0.0, token_dropout=0.5).eval()
    a, b = torch.randn(3, 8), torch.randn(5, 8)
    packed = pack_tokens([a, b], 8)  # a is padded to 5 tokens
    assert packed.shape == (2, 5 * 9)
    alone = head(pack_tokens([a], 8))
    both = head(packed)
    assert torch.allclose(both[:1], alone, atol=1e-6), "padding must not change a sentence's embedding"
    assert torch.allclose(both.norm(dim=-1), torch.ones(2), atol=1e-5)
    # word order does not matter to the mean over the word-embedding layer's tokens
    assert torch.allclose(head(pack_tokens([a.flip(0)], 8)), alone, atol=1e-6)
    assert torch.equal(head(packed), both), "no token dropout at inference"
    head.train()
    outs = {tuple(head(packed)[1].round(decimals=4).tolist()) for _ in range(8)}
    assert len(outs) > 1, "training drops tokens at random"


def test_token_config_roundtrip_and_errors(tmp_path):
    m = CezsarModel(small_config(text_input="tokens", text_token_dropout=0.3))
    m.save(tmp_path / "m")
    assert type(CezsarModel.load(tmp_path / "m").text_head).__name__ == "TokenTextHead"
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    bad_values = (("text_input", "words", "text_input"), ("text_token_dropout", 1.0, "text_token_dropout"))
    for key, value, message in bad_values:
        bad = {**cfg, key: value}
        bad.pop("weights_sha256")
        (tmp_path / "m" / "config.json").write_text(json.dumps(bad))
        with pytest.raises(CezsarError, match=message):
            read_config(tmp_path / "m")


def test_sentence_encoder_token_states_are_the_word_embedding_layer():
    from training.model import DEFAULT_TEXT_MODEL, SentenceEncoder

    text = SentenceEncoder(DEFAULT_TEXT_MODEL, "tokens", layer=0)
    states = text.states(["a circle moves left", "a circle moves left quickly"])
    assert states[0].shape == (len(states[0]), text.dim) and len(states[1]) == len(states[0]) + 1
    # layer 0 is before any attention: the shared words have the same states in both sentences
    assert torch.allclose(states[0][:-1].float(), states[1][:-2].float(), atol=1e-2)
    packed = text.encode(["a circle moves left", "a circle moves left quickly"])
    assert packed.shape == (2, len(states[1]) * (text.dim + 1))
