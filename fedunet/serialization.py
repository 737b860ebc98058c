"""The payload format: named tensors as raw little-endian buffers behind a JSON header.

What a client sends is serialized for real, and the byte counts in the metrics are the
lengths of these payloads.  The format is strict and never unpickled::

    b"FUNPAY01"                      8 bytes, magic and version
    header length                    uint64, little endian
    header                           UTF-8 JSON, space-padded to a multiple of 8
    tensor data                      each tensor's raw bytes, 8-byte aligned, in header order

The header is ``{"tensors": [{"name", "dtype", "shape", "offset", "nbytes"}...],
"metadata": {str: str}}`` with offsets relative to the start of the data.  The layout
is canonical (offsets follow from the shapes), so a decoder can reject anything else:
wrong lengths, overlaps, trailing bytes.  Floating tensors may be cast to fp16/bf16 on
the wire; integer tensors (BatchNorm's ``num_batches_tracked``) keep their dtype.
"""

from __future__ import annotations

import functools
import json
import struct
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

MAGIC = b"FUNPAY01"
_PREFIX = len(MAGIC) + 8
MAX_HEADER_BYTES = 16 * 1024 * 1024
WIRE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPES = {**WIRE_DTYPES, "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8}
_NAMES = {v: k for k, v in DTYPES.items()}


class PayloadError(ValueError):
    """A payload that is malformed or does not match what the receiver expects."""


def _align(n: int) -> int:
    return (n + 7) & ~7


def _wire_dtype(t: Tensor, float_dtype: torch.dtype | None) -> torch.dtype:
    return float_dtype if float_dtype is not None and t.is_floating_point() else t.dtype


def _layout(tensors: Mapping[str, Tensor], metadata, float_dtype: str | None) -> tuple[list[dict], bytes, int]:
    cast = WIRE_DTYPES[float_dtype] if float_dtype is not None else None
    entries, offset = [], 0
    for name, t in tensors.items():
        dtype = _wire_dtype(t, cast)
        if dtype not in _NAMES:
            raise PayloadError(f"tensor {name!r} has unsupported dtype {dtype}")
        nbytes = t.numel() * dtype.itemsize
        entries.append({"name": name, "dtype": _NAMES[dtype], "shape": list(t.shape), "offset": offset, "nbytes": nbytes})
        offset = _align(offset + nbytes)
    header = json.dumps({"tensors": entries, "metadata": dict(metadata or {})}, separators=(",", ":")).encode()
    header += b" " * (_align(len(header)) - len(header))
    return entries, header, offset


class Encoder:
    """Serializes payloads into a buffer it keeps: a client sends the same shapes every round,
    so after the first round encoding is one copy of the tensors and no allocation.

    The returned memoryview is valid until the next call on the same encoder.
    """

    def __init__(self):
        self._buffer = torch.empty(0, dtype=torch.uint8)
        self._layout_key: tuple | None = None
        self._layout: tuple | None = None

    def encode(
        self, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None, float_dtype: str | None = None
    ) -> memoryview:
        key = (
            tuple((n, tuple(t.shape), t.dtype) for n, t in tensors.items()),
            tuple(sorted((metadata or {}).items())),
            float_dtype,
        )
        if key != self._layout_key:  # same shapes as last round: reuse the header
            self._layout_key, self._layout = key, _layout(tensors, metadata, float_dtype)
        entries, header, data_bytes = self._layout
        start = _PREFIX + len(header)
        total = start + data_bytes
        if self._buffer.numel() < total:
            self._buffer = torch.empty(total, dtype=torch.uint8)
        buf = self._buffer[:total]
        raw = memoryview(buf.numpy())
        raw[: len(MAGIC)] = MAGIC
        raw[len(MAGIC) : _PREFIX] = struct.pack("<Q", len(header))
        raw[_PREFIX:start] = header
        for entry, t in zip(entries, tensors.values()):
            n = entry["nbytes"]
            if n:
                o = start + entry["offset"]
                buf[o : o + n].view(DTYPES[entry["dtype"]]).copy_(t.detach().reshape(-1))
            pad = _align(entry["offset"] + n) - entry["offset"] - n
            if pad:
                buf[start + entry["offset"] + n : start + entry["offset"] + n + pad].zero_()
        return raw


def encode(tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None, float_dtype: str | None = None) -> bytearray:
    """Serialize ``tensors`` (any device) into a new buffer; floats cast to ``float_dtype`` if given."""
    return bytearray(Encoder().encode(tensors, metadata, float_dtype))


@dataclass(frozen=True, eq=False)  # compared by identity, so it can key a cache
class PayloadSpec:
    """What a receiver expects: exact names, shapes and wire dtypes, and a size limit.

    A dimension given as ``None`` accepts any length (e.g. the rank of an SVD factor);
    the size limit still bounds the whole payload.
    """

    shapes: dict[str, tuple[int | None, ...]]
    dtypes: dict[str, str]
    max_bytes: int | None = None
    check_finite: bool = True
    allow_metadata: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def for_tensors(cls, tensors: Mapping[str, Tensor], float_dtype: str | None = None, max_bytes: int | None = None, **kw):
        cast = WIRE_DTYPES[float_dtype] if float_dtype is not None else None
        return cls(
            shapes={n: tuple(t.shape) for n, t in tensors.items()},
            dtypes={n: _NAMES[_wire_dtype(t, cast)] for n, t in tensors.items()},
            max_bytes=max_bytes,
            **kw,
        )


def decode(blob: bytes | bytearray | memoryview, spec: PayloadSpec | None = None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Parse and check a payload; the returned tensors are views into ``blob`` (no copy).

    Without ``spec`` only the structure is checked; with it, the names, shapes, dtypes,
    size limit and (for floats) finiteness must match.  Raises :class:`PayloadError`.
    """
    size = len(blob)
    if spec is not None and spec.max_bytes is not None and size > spec.max_bytes:
        raise PayloadError(f"payload of {size} bytes exceeds the limit of {spec.max_bytes} bytes")
    if size < _PREFIX or bytes(blob[: len(MAGIC)]) != MAGIC:
        raise PayloadError("not a fedunet payload (bad magic or truncated before the header)")
    (header_len,) = struct.unpack("<Q", bytes(blob[len(MAGIC) : _PREFIX]))
    if header_len > min(size - _PREFIX, MAX_HEADER_BYTES) or header_len % 8:
        raise PayloadError(f"header length {header_len} is invalid for a payload of {size} bytes")
    header_bytes = bytes(blob[_PREFIX : _PREFIX + header_len])
    entries, metadata, runs = _parse_header(header_bytes)
    start = _PREFIX + header_len
    expected_end = start + (_align(entries[-1]["offset"] + entries[-1]["nbytes"]) if entries else 0)
    if size != expected_end:
        what = "truncated" if size < expected_end else "has trailing bytes"
        raise PayloadError(f"payload {what}: {size} bytes, the header describes {expected_end}")
    if spec is not None:
        accepted = _ACCEPTED.setdefault(spec, set())
        if header_bytes not in accepted:  # a sender repeats its header every round
            _check_against_spec(entries, metadata, spec)
            accepted.add(header_bytes)

    tensors: dict[str, Tensor] = {}
    with warnings.catch_warnings():  # read-only buffers (bytes) are fine: we never write to them
        warnings.simplefilter("ignore", UserWarning)
        raw = torch.frombuffer(blob, dtype=torch.uint8) if size else torch.empty(0, dtype=torch.uint8)
    aligned = raw.data_ptr() % 8 == 0
    for e in entries:
        dtype, o = DTYPES[e["dtype"]], start + e["offset"]
        chunk = raw[o : o + e["nbytes"]]
        if not aligned:  # a view needs aligned memory; copy the rare unaligned buffer
            chunk = chunk.clone()
        tensors[e["name"]] = chunk.view(dtype).view(e["shape"])
    if spec is not None and spec.check_finite:
        for first, last, dtype in runs:  # consecutive float tensors of one dtype, checked in one pass
            lo, hi = start + entries[first]["offset"], start + _align(entries[last]["offset"] + entries[last]["nbytes"])
            if hi > lo and not _finite(raw[lo:hi].view(DTYPES[dtype]) if aligned else raw[lo:hi].clone().view(DTYPES[dtype])):
                bad = [e["name"] for e in entries[first : last + 1] if e["nbytes"] and not _finite(tensors[e["name"]])]
                what = f"tensor {bad[0]!r}" if bad else "the padding between tensors"
                raise PayloadError(f"{what} contains NaN or Inf")
    return tensors, metadata


_ACCEPTED: weakref.WeakKeyDictionary[PayloadSpec, set[bytes]] = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=1024)
def _parse_header(header_bytes: bytes) -> tuple[list[dict], dict[str, str], tuple[tuple[int, int, str], ...]]:
    """Parse and check a header once; senders repeat theirs every round (callers must not mutate)."""
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadError(f"header is not valid JSON: {e}") from None
    entries, metadata = _check_header(header)
    runs: list[list] = []
    for i, e in enumerate(entries):
        if not DTYPES[e["dtype"]].is_floating_point:
            continue
        if runs and runs[-1][1] == i - 1 and runs[-1][2] == e["dtype"]:
            runs[-1][1] = i
        else:
            runs.append([i, i, e["dtype"]])
    return entries, metadata, tuple(tuple(r) for r in runs)


def _finite(t: Tensor) -> bool:
    """One pass, no temporary the size of ``t``: NaN propagates into min/max, Inf shows in them."""
    low, high = torch.aminmax(t)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _check_header(header) -> tuple[list[dict], dict[str, str]]:
    if not isinstance(header, dict) or set(header) != {"tensors", "metadata"}:
        raise PayloadError("header must be an object with exactly the keys 'tensors' and 'metadata'")
    entries, metadata = header["tensors"], header["metadata"]
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise PayloadError("header 'metadata' must map strings to strings")
    if not isinstance(entries, list):
        raise PayloadError("header 'tensors' must be a list")
    seen, offset = set(), 0
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or set(e) != {"name", "dtype", "shape", "offset", "nbytes"}:
            raise PayloadError(f"tensor entry {i} must have exactly name, dtype, shape, offset, nbytes")
        name = e["name"]
        if not isinstance(name, str) or name in seen:
            raise PayloadError(f"tensor entry {i}: name {name!r} is not a string or is repeated")
        seen.add(name)
        if e["dtype"] not in DTYPES:
            raise PayloadError(f"tensor {name!r}: dtype {e['dtype']!r} not allowed; allowed: {', '.join(DTYPES)}")
        shape = e["shape"]
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise PayloadError(f"tensor {name!r}: shape {shape!r} must be a list of non-negative integers")
        nbytes = _numel(shape) * DTYPES[e["dtype"]].itemsize
        if e["nbytes"] != nbytes or e["offset"] != offset:
            raise PayloadError(
                f"tensor {name!r}: offset/nbytes {e['offset']}/{e['nbytes']} do not match the canonical layout {offset}/{nbytes}"
            )
        offset = _align(offset + nbytes)
    return entries, metadata


def _check_against_spec(entries: list[dict], metadata: dict[str, str], spec: PayloadSpec) -> None:
    names = [e["name"] for e in entries]
    missing = sorted(set(spec.shapes) - set(names))
    unexpected = sorted(set(names) - set(spec.shapes))
    if missing or unexpected:
        raise PayloadError(f"tensor names do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for e in entries:
        name = e["name"]
        want = tuple(spec.shapes[name])
        got = tuple(e["shape"])
        if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
            shown = tuple("any" if w is None else w for w in want)
            raise PayloadError(f"tensor {name!r}: shape {got}, expected {shown}".replace("'any'", "any"))
        if e["dtype"] != spec.dtypes[name]:
            raise PayloadError(f"tensor {name!r}: dtype {e['dtype']}, expected {spec.dtypes[name]}")
    extra = sorted(set(metadata) - set(spec.allow_metadata))
    if extra:
        raise PayloadError(f"unexpected metadata keys {extra}")
