"""How a window's embedding and scores are stored, compactly and self-describing.

Embedding blobs start with one byte that says their encoding:

- ``0x01`` int8: a float32 scale, then J int8 (``x ~ scale * q``, ``scale = max|x| / 127``): 5 + J bytes;
- ``0x02`` fp16: J float16: 1 + 2 J bytes.

Scores are what the decisions saw (rounded to 4 decimals), as int16 ten-thousandths in the order of
the window's scoring's action names; :data:`NO_SCORE` marks an action not decided on that stream.
``k / 10000`` gives back exactly the float the live decisions used.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

import numpy as np

INT8, FP16 = 1, 2
ENCODINGS = {"int8": INT8, "fp16": FP16}
NO_SCORE = -32768
SCORE_SCALE = 10000


def encode_embedding(x: np.ndarray, encoding: str = "int8") -> bytes:
    v = np.asarray(x, dtype=np.float32).reshape(-1)
    if ENCODINGS[encoding] == FP16:
        return bytes([FP16]) + v.astype("<f2").tobytes()
    scale = float(np.abs(v).max()) / 127.0
    q = np.zeros(v.shape, np.int8) if scale == 0 else np.clip(np.rint(v / scale), -127, 127).astype(np.int8)
    return bytes([INT8]) + np.float32(scale).astype("<f4").tobytes() + q.tobytes()


def encode_many(x: np.ndarray, encoding: str = "int8") -> list[bytes]:
    """(N, J) -> N blobs, as :func:`encode_embedding` makes them one by one (vectorized: indexing)."""
    v = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    if ENCODINGS[encoding] == FP16:
        raw = v.astype("<f2").view(np.uint8).reshape(len(v), -1)
        return [bytes([FP16]) + r.tobytes() for r in raw]
    scale = np.abs(v).max(axis=1, keepdims=True) / 127.0
    q = np.clip(np.rint(v / np.where(scale == 0, 1.0, scale)), -127, 127).astype(np.int8)
    head = scale.astype("<f4").view(np.uint8).reshape(len(v), 4)
    return [bytes([INT8]) + h.tobytes() + r.tobytes() for h, r in zip(head, q, strict=True)]


def blob_dim(blob: bytes) -> int:
    return (len(blob) - 5) if blob[0] == INT8 else (len(blob) - 1) // 2


def decode_embedding(blob: bytes) -> np.ndarray:
    """One blob -> (J,) float32 (the stored vector, dequantized)."""
    return decode_many([blob])[0]


def decode_many(blobs: Sequence[bytes], dim: int | None = None) -> np.ndarray:
    """Blobs of one dimension -> (N, J) float32; blobs of another dimension give rows of NaN."""
    if not blobs:
        return np.zeros((0, dim or 0), np.float32)
    dim = dim or blob_dim(blobs[0])
    kinds = np.frombuffer(bytes(b[0] for b in blobs), np.uint8)
    sizes = np.fromiter(map(len, blobs), np.int64, len(blobs))
    if (kinds == INT8).all() and (sizes == 5 + dim).all():  # the usual history: one encoding throughout
        raw = np.frombuffer(b"".join(blobs), np.uint8).reshape(len(blobs), 5 + dim)
        return raw[:, 5:].view(np.int8).astype(np.float32) * raw[:, 1:5].copy().view("<f4").astype(np.float32)
    out = np.full((len(blobs), dim), np.nan, np.float32)
    for kind, size in ((INT8, 5 + dim), (FP16, 1 + 2 * dim)):
        idx = [int(i) for i in np.flatnonzero(kinds == kind) if len(blobs[int(i)]) == size]
        if not idx:
            continue
        raw = np.frombuffer(b"".join(blobs[i] for i in idx), np.uint8).reshape(len(idx), size)
        if kind == INT8:
            scale = raw[:, 1:5].copy().view("<f4").astype(np.float32)
            out[idx] = raw[:, 5:].view(np.int8).astype(np.float32) * scale
        else:
            out[idx] = raw[:, 1:].copy().view("<f2").astype(np.float32)
    return out


def signs(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """(N, ceil(J/64)) uint64 sign bits of each stored vector (the search's first pass)."""
    words = (dim + 63) // 64
    if not blobs:
        return np.zeros((0, words), np.uint64)
    x = decode_many(blobs, dim)
    bits = np.packbits(np.nan_to_num(x) > 0, axis=1)
    pad = words * 8 - bits.shape[1]
    if pad:
        bits = np.pad(bits, ((0, 0), (0, pad)))
    return np.ascontiguousarray(bits).view(np.uint64)


def encode_scores(scores: Mapping[str, float], names: Sequence[str]) -> bytes:
    """A window's scores in ``names``' order (plain Python: the writer encodes one per window)."""
    out = []
    for n in names:
        v = scores.get(n)
        if v is None or not math.isfinite(v):
            out.append(NO_SCORE)
        else:
            out.append(max(-32767, min(32767, round(float(v) * SCORE_SCALE))))
    return struct.pack(f"<{len(out)}h", *out)


def decode_scores(blob: bytes | None, count: int) -> np.ndarray:
    """(count,) float64 scores, NaN where the action was not decided."""
    if not blob:
        return np.full(count, np.nan)
    k = np.frombuffer(blob, "<i2").astype(np.int64)
    out = np.where(k == NO_SCORE, np.nan, k / SCORE_SCALE)
    if len(out) < count:
        out = np.concatenate([out, np.full(count - len(out), np.nan)])
    return out[:count]
