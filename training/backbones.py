"""Image backbones (frame encoders) by name, in the spirit of timm's ``create_model``: one name in, a ready
module out, from one registry in the style of timm's ``register_model``.

Names:
- ``tiny``: a small CNN that trains from scratch on the CPU (tests, the synthetic world, the demo).
- ``hf-clip:REF``, ``hf-siglip:REF``, ``st-clip:REF``: the vision tower of a pretrained image-text
  checkpoint through Hugging Face transformers (:mod:`training.pretrained`); REF is a hub name or a
  local folder, and the checkpoint's weights are always loaded.
- ``torchvision:NAME`` (e.g. ``torchvision:resnet18``): any torchvision classification model.
- ``timm:NAME`` (e.g. ``timm:convnext_tiny``): any timm model.
- a bare name (e.g. ``resnet18``) that is not registered tries the families that take bare names, in the
  order they registered: torchvision first, then timm.

A bare name registers with :func:`register_backbone` (or the :func:`register` decorator); a family of
``PREFIX:REF`` names registers its handler with the :func:`register_prefix` decorator, declaring the
optional modules it needs (checked before it runs, and declared to :mod:`cezsar.extras` with the extra
that installs them). :func:`create_backbone` only looks names up: a new family is one decorated function
in the module that builds it.

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
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cezsar import extras
from cezsar.errors import CezsarError

Factory = Callable[..., tuple[nn.Module, int]]  # (pretrained=False) -> (module, feature_dim)
PrefixFactory = Callable[..., tuple[nn.Module, int]]  # (ref, pretrained=False, name=...) -> (module, feature_dim)

_REGISTRY: dict[str, Factory] = {}  # bare names


@dataclass(frozen=True)
class Family:
    """A ``PREFIX:REF`` family of backbones: its handler and what it needs."""

    prefix: str
    factory: PrefixFactory
    requires: tuple[str, ...] = ()  # optional modules the handler imports
    extra: str | None = None  # the pyproject.toml extra that installs them (None: pip install the module)
    bare: bool = False  # also tried for bare names that are not registered
    placeholder: str = "<name>"  # what follows the prefix, for help texts

    def missing(self) -> str | None:
        """The first required module that is not installed, or None."""
        return next((m for m in self.requires if importlib.util.find_spec(m) is None), None)

    def create(self, name: str, ref: str, pretrained: bool) -> tuple[nn.Module, int]:
        absent = self.missing()
        if absent is not None:
            how = extras.install_hint(self.extra) if self.extra else f"pip install {absent}"
            raise CezsarError(f"backbone '{name}': {absent} is not installed ({how})")
        return self.factory(ref, pretrained=pretrained, name=name)


_PREFIXES: dict[str, Family] = {}


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
        raise CezsarError(f"backbone '{name}': ':' is reserved for prefixes ({', '.join(_PREFIXES)})")
    _REGISTRY[name] = factory
    return True


def register(name: str) -> Callable[[Factory], Factory]:
    """Decorator form of :func:`register_backbone`."""

    def deco(fn: Factory) -> Factory:
        register_backbone(name, fn)
        return fn

    return deco


def register_prefix(
    *prefixes: str,
    requires: tuple[str, ...] = (),
    extra: str | None = None,
    bare: bool = False,
    placeholder: str = "<name>",
) -> Callable[[PrefixFactory], PrefixFactory]:
    """Decorator: ``fn(ref, pretrained=False, name=...)`` builds the backbones named ``PREFIX:REF`` for each
    prefix (``name`` is the whole name). ``requires``: modules it imports, checked first and declared to
    :mod:`cezsar.extras` with ``extra``; ``bare``: also tried for unregistered bare names."""

    def deco(fn: PrefixFactory) -> PrefixFactory:
        for prefix in prefixes:
            if prefix in _PREFIXES or ":" in prefix or not prefix:
                raise CezsarError(f"backbone prefix '{prefix}:' is taken or not a prefix")
            _PREFIXES[prefix] = Family(prefix, fn, tuple(requires), extra, bare, placeholder)
        if extra:
            extras.requires(*requires, extra=extra)
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


@register_prefix("hf-clip", "hf-siglip", "st-clip", requires=("transformers",), extra="train",
                 placeholder="<hub name or folder>")  # fmt: skip
def _image_text(ref: str, pretrained: bool = True, name: str = "") -> tuple[nn.Module, int]:
    """The vision tower of an image-text checkpoint (always its own weights)."""
    from training.pretrained import create_image_tower

    return create_image_tower(name, pretrained=True)


@register_prefix("torchvision", requires=("torchvision",), bare=True)
def _torchvision(ref: str, pretrained: bool = False, name: str = "") -> tuple[nn.Module, int]:
    import torchvision.models as tvm

    if ref not in tvm.list_models():
        raise CezsarError(f"backbone 'torchvision:{ref}': no such torchvision model")
    weights = "DEFAULT" if pretrained else None
    return _strip_classifier(tvm.get_model(ref, weights=weights))


@register_prefix("timm", requires=("timm",), bare=True)
def _timm(ref: str, pretrained: bool = False, name: str = "") -> tuple[nn.Module, int]:
    import timm

    if not timm.list_models(ref, pretrained=False) and not timm.is_model(ref):
        raise CezsarError(f"backbone 'timm:{ref}': no such timm model")
    model = timm.create_model(ref, pretrained=pretrained, num_classes=0)
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
    """The registered names, then each prefix family whose modules are installed (``PREFIX:<...>``)."""
    fams = [f"{f.prefix}:{f.placeholder}" for f in _PREFIXES.values() if f.missing() is None]
    return sorted(_REGISTRY) + fams


def _build(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    if name in _REGISTRY:
        return _REGISTRY[name](pretrained=pretrained)
    prefix, sep, ref = name.partition(":")
    if sep:
        family = _PREFIXES.get(prefix)
        if family is None:
            raise CezsarError(f"backbone '{name}': unknown prefix '{prefix}:' (known: {', '.join(available())})")
        if not ref:
            raise CezsarError(f"'{name}': give a name after '{prefix}:' ({prefix}:{family.placeholder})")
        return family.create(name, ref, pretrained)
    errors = []
    for family in (f for f in _PREFIXES.values() if f.bare):
        try:
            return family.create(f"{family.prefix}:{name}", name, pretrained)
        except CezsarError as e:
            errors.append(f"{family.prefix}: {e}")
    raise CezsarError(f"backbone '{name}': unknown ({'; '.join(errors)}); known: {', '.join(available())}")


def create_backbone(name: str, pretrained: bool = False, checkpoint: str | Path | None = None) -> tuple[nn.Module, int]:
    """Build a backbone by name; returns (module, feature_dim)."""
    model, dim = _build(name, pretrained)
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
