"""DEPLOY_DIR/manifest.json: the contract between the converter (writer) and the edge runtime (reader).

Pure JSON, no torch. The file names of a deploy folder and the manifest ``files`` keys are those of
:mod:`cezsar.deploy.layout`. ``files`` maps a key to a path relative to the deploy folder, ``sha256``
a relative path to its digest (checked when a file is opened: :meth:`Manifest.verified`). ``extra``
holds "parity" (export), "text" (tokenizer settings: max_length, padding, pad_id), "quantization"
(the INT8 accuracy report) and more.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cezsar.deploy.layout import MANIFEST, manifest_path
from cezsar.errors import CezsarError
from cezsar.jsonfile import read_json
from cezsar.preprocess import Preprocess

FORMAT = "cezsar-deploy"
VERSION = 1


@dataclass
class Manifest:
    model_hash: str  # sha256 of the source model.safetensors
    opset: int
    preprocess: dict[str, Any]  # Preprocess.to_dict()
    fps: float  # sampling rate the model was trained with
    window: int  # T, frames per window
    feature_dim: int  # D
    joint_dim: int  # J
    text_max_length: int = 128
    files: dict[str, str] = field(default_factory=dict)  # part or "tokenizer"/"model_dir" -> relative path
    sha256: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. parity report, quantization report

    @property
    def pre(self) -> Preprocess:
        return Preprocess.from_dict(self.preprocess)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    def path(self, deploy_dir: str | Path, key: str) -> Path:
        """The file of ``key`` (it must exist), unverified."""
        if key not in self.files:
            raise CezsarError(f"{deploy_dir}: {MANIFEST} names no file for '{key}'")
        p = Path(deploy_dir) / self.files[key]
        if not p.exists():
            raise CezsarError(f"{p}: missing from the deploy folder ({MANIFEST} names it)")
        return p

    def verified(self, deploy_dir: str | Path, key: str) -> Path:
        """:meth:`path` plus an integrity check: a file the manifest lists a sha256 for must match it,
        so a file from another model (or a corrupt copy) is refused at start with a clear message."""
        p = self.path(deploy_dir, key)
        want = self.sha256.get(self.files[key])
        if want and p.is_file() and file_sha256(p) != want:
            raise CezsarError(
                f"{p}: does not match {MANIFEST} (sha256 differs): a file from another model or export, "
                f"or corrupt; re-run `cezsar export` for model {self.model_hash[:12]}"
            )
        return p


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified_path(manifest: Manifest, deploy_dir: str | Path, key: str) -> Path:
    """``manifest.verified(deploy_dir, key)``."""
    return manifest.verified(deploy_dir, key)


def save_manifest(deploy_dir: str | Path, manifest: Manifest) -> Path:
    """Write the deploy folder's manifest atomically; returns its path."""
    from cezsar.atomic import write_json

    path = manifest_path(deploy_dir)
    write_json(path, manifest.to_dict())
    return path


def load_manifest(deploy_dir: str | Path) -> Manifest:
    d = Path(deploy_dir)
    mpath = manifest_path(d)
    if not d.is_dir():
        raise CezsarError(f"{d}: deploy folder not found")
    if not mpath.is_file():
        raise CezsarError(f"{d}: not a deploy folder (no {MANIFEST}; create one with `cezsar export`)")
    raw = read_json(mpath)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CezsarError(f"{mpath}: not a cezsar deploy manifest")
    if int(raw.get("version", -1)) > VERSION:
        raise CezsarError(f"{mpath}: manifest version {raw.get('version')} is newer than this cezsar")
    raw.pop("format")
    raw.pop("version")
    try:
        m = Manifest(**raw)
        _ = m.pre  # validates the preprocessing block
    except (TypeError, KeyError, ValueError) as e:
        raise CezsarError(f"{mpath}: invalid manifest ({e})") from None
    return m
