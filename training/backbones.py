"""Image backbones by name, in the spirit of timm's ``create_model``: one name in, a ready module out.

Names:
- ``tiny``: a small CNN that trains from scratch on the CPU (tests, the synthetic world, the demo).
- ``torchvision:NAME`` (e.g. ``torchvision:resnet18``): any torchvision classification model.
- ``timm:NAME`` (e.g. ``timm:convnext_tiny``): any timm model.
- a bare name (e.g. ``resnet18``) tries torchvision first, then timm.
- ``hf-clip:REF``, ``hf-siglip:REF``, ``st-clip:REF``: the vision tower of a pretrained image-text
  checkpoint through Hugging Face transformers (:mod:`training.pretrained`); REF is a hub name or a
  local folder, and the checkpoint's weights are always loaded.

timm and torchvision need a torch build that matches them (torchvision does not import next to the
CPU torch build pinned here, so those two routes are untested in this repository's CI).

Pretrained weights come only through the library's own mechanism (its cache or download, when
the user asks with ``pretrained=True``) or from a local checkpoint file (``.safetensors``, or a
``.pt``/``.pth`` state dict read with ``weights_only=True``). Nothing here assumes network access.
Every backbone returns a pooled feature vector (N, feature_dim) for an (N, 3, H, W) batch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cezsar.errors import CezsarError

_REGISTRY: dict[str, Callable[..., tuple[nn.Module, int]]] = {}


Factory = Callable[..., tuple[nn.Module, int]]  # (pretrained=False) -> (module, feature_dim)


def register_backbone(name: str, factory: Factory, exist_ok: bool = False) -> bool:
    """Make ``factory`` available to :func:`create_backbone` (and ``ModelConfig.backbone``) as ``name``.

    ``factory(pretrained=...)`` returns (module, feature_dim). A name already registered raises
    CezsarError, or with ``exist_ok`` keeps the first factory; returns whether ``factory`` was registered.
    """
    if name in _REGISTRY:
        if exist_ok:
            return False
        raise CezsarError(f"backbone '{name}' is already registered")
    if ":" in name:
        raise CezsarError(f"backbone '{name}': ':' is reserved for library prefixes (torchvision:, timm:)")
    _REGISTRY[name] = factory
    return True


def register(name: str) -> Callable[[Factory], Factory]:
    """Decorator form of :func:`register_backbone`."""

    def deco(fn: Factory) -> Factory:
        register_backbone(name, fn)
        return fn

    return deco


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyCNN(nn.Module):
    """Six small conv blocks, then a coarse 4x4 spatial map flattened into the feature.

    Unlike global average pooling, the flattened grid keeps *where* things are in the frame, so a
    temporal head over per-frame features can tell the direction of a motion.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, grid: int = 4) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w // 2, 2),
            _conv_bn(w // 2, w, 2),
            _conv_bn(w, w, 1),
            _conv_bn(w, 2 * w, 2),
            _conv_bn(2 * w, 2 * w, 1),
            _conv_bn(2 * w, 2 * w, 2),
        )
        self.grid = grid
        self.proj = nn.Sequential(nn.Flatten(1), nn.Linear(2 * w * grid * grid, feature_dim), nn.ReLU(inplace=True))
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        h, w, g = int(f.shape[-2]), int(f.shape[-1]), self.grid
        if h % g or w % g:
            # area-exact: repeat every cell g times, then the bins are even. (Adaptive pooling with
            # uneven bins has no ONNX form, and a Resize op would pin the opset.)
            f = f.repeat_interleave(g, dim=2).repeat_interleave(g, dim=3)
            h, w = h * g, w * g
        return self.proj(F.avg_pool2d(f, (h // g, w // g)))


@register("tiny")
def _tiny(pretrained: bool = False, **kwargs: int) -> tuple[nn.Module, int]:
    if pretrained:
        raise CezsarError("backbone 'tiny' has no pretrained weights; train it, or pass --backbone-checkpoint")
    m = TinyCNN(**kwargs)
    return m, m.feature_dim


def _strip_classifier(model: nn.Module) -> tuple[nn.Module, int]:
    """Replace the classification layer of a torchvision model with identity; return (model, dim)."""
    for attr in ("fc", "classifier", "head", "heads"):
        layer = getattr(model, attr, None)
        if layer is None:
            continue
        linears = [m for m in (layer.modules() if isinstance(layer, nn.Module) else []) if isinstance(m, nn.Linear)]
        if linears:
            dim = linears[0].in_features
            setattr(model, attr, nn.Identity())
            return model, dim
    raise CezsarError(f"cannot find the classifier of {type(model).__name__} to remove")


def _torchvision(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    if importlib.util.find_spec("torchvision") is None:
        raise CezsarError(f"backbone 'torchvision:{name}': torchvision is not installed (pip install torchvision)")
    import torchvision.models as tvm

    if name not in tvm.list_models():
        raise CezsarError(f"backbone 'torchvision:{name}': no such torchvision model")
    weights = "DEFAULT" if pretrained else None
    return _strip_classifier(tvm.get_model(name, weights=weights))


def _timm(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    if importlib.util.find_spec("timm") is None:
        raise CezsarError(f"backbone 'timm:{name}': timm is not installed (pip install timm)")
    import timm

    if not timm.list_models(name, pretrained=False) and not timm.is_model(name):
        raise CezsarError(f"backbone 'timm:{name}': no such timm model")
    model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    return model, int(model.num_features)


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local weights file without unpickling arbitrary objects."""
    p = Path(path)
    if not p.is_file():
        raise CezsarError(f"{p}: backbone checkpoint not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure is the file's fault
        raise CezsarError(f"{p}: not a readable weights file ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CezsarError(f"{p}: expected a state dict of tensors")
    return obj


def available() -> list[str]:
    names = sorted(_REGISTRY) + ["hf-clip:<hub name or folder>", "hf-siglip:<...>", "st-clip:<...>"]
    if importlib.util.find_spec("torchvision") is not None:
        names.append("torchvision:<name>")
    if importlib.util.find_spec("timm") is not None:
        names.append("timm:<name>")
    return names


def create_backbone(name: str, pretrained: bool = False, checkpoint: str | Path | None = None) -> tuple[nn.Module, int]:
    """Build a backbone by name; returns (module, feature_dim)."""
    from training.pretrained import create_image_tower, is_pretrained_name

    if is_pretrained_name(name):
        model, dim = create_image_tower(name, pretrained=True)
    elif name in _REGISTRY:
        model, dim = _REGISTRY[name](pretrained=pretrained)
    elif name.startswith("torchvision:"):
        model, dim = _torchvision(name.split(":", 1)[1], pretrained)
    elif name.startswith("timm:"):
        model, dim = _timm(name.split(":", 1)[1], pretrained)
    else:
        errors = []
        for lib, fn in (("torchvision", _torchvision), ("timm", _timm)):
            try:
                model, dim = fn(name, pretrained)
                break
            except CezsarError as e:
                errors.append(f"{lib}: {e}")
        else:
            raise CezsarError(f"backbone '{name}': unknown ({'; '.join(errors)}); known: {', '.join(available())}")
    if checkpoint is not None:
        state = load_state_file(checkpoint)
        missing, unexpected = model.load_state_dict(state, strict=False)
        head_only = all(k.split(".")[0] in ("fc", "classifier", "head", "heads") for k in unexpected)
        if missing or not head_only:
            raise CezsarError(
                f"{checkpoint}: does not match backbone '{name}' "
                f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[:3]})"
            )
    return model, dim
