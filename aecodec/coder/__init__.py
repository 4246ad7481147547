"""Entropy coding of symbol arrays into byte streams: lane framing here, the coding in a backend.

Backends: `python` (pure-Python reference, always there) and `native` (the C++ extension: threads, CUDA).
Both implement encode(symbols, indexes, tables, lanes) -> (payload, lane_words),
decode(payload, lane_words, indexes, tables) -> symbols and prepare(values, means, indexes, tables)
-> (symbols, quantized), and must agree byte for byte.
"""

from __future__ import annotations

import numpy as np

from .. import _native
from ..errors import DecodeError, OptionError
from ..format import ByteReader, varint
from . import python as python_coder
from .tables import MAX_LANES, CdfTables, lanes_for

__all__ = ["CdfTables", "encode_stream", "decode_stream", "split_stream", "prepare", "BACKENDS", "default_backend"]

BACKENDS = {"python": python_coder}
if _native.HAS_EXT:
    from . import native as native_coder

    BACKENDS["native"] = native_coder


def default_backend() -> str:
    return "native" if _native.HAS_EXT else "python"


def _backend(name: str | None):
    name = name or default_backend()
    if name == "native" and not _native.HAS_EXT:
        raise OptionError(f"the native backend is not built in this install ({_native.IMPORT_ERROR}); use 'python'")
    if name not in BACKENDS:
        raise OptionError(f"unknown backend {name!r}: choose from python, native")
    return BACKENDS[name]


def encode_stream(symbols, indexes, tables: CdfTables, lanes: int | None = None, backend: str | None = None) -> bytes:
    """Stream = varint lane count, varint 16-bit word count per lane, then the lane payloads."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
    indexes = np.ascontiguousarray(indexes, dtype=np.int32).ravel()
    if lanes is None:
        tables.check_symbols(symbols, indexes)  # lanes_for indexes the tables with them
        lanes = lanes_for(symbols, indexes, tables)
    if not 1 <= lanes <= MAX_LANES:
        raise ValueError(f"lanes must be in [1, {MAX_LANES}]")
    payload, lane_words = _backend(backend).encode(symbols, indexes, tables, lanes)
    return varint(lanes) + b"".join(varint(int(w)) for w in lane_words) + payload


def decode_stream(data: bytes, indexes, tables: CdfTables, backend: str | None = None) -> np.ndarray:
    indexes = np.ascontiguousarray(indexes, dtype=np.int32).ravel()
    if indexes.size and (indexes.min() < 0 or indexes.max() >= len(tables.lengths)):
        raise ValueError("table index out of range")
    lane_words, payload = split_stream(data)
    return _backend(backend).decode(payload, lane_words, indexes, tables)


def split_stream(data: bytes) -> tuple[np.ndarray, bytes]:
    """A stream's lane table (16-bit words per lane) and its payload (each lane: 4-byte state + words)."""
    reader = ByteReader(data, "rANS stream")
    lanes = reader.varint()
    if not 1 <= lanes <= MAX_LANES:
        raise DecodeError(f"rANS stream declares {lanes} lanes")
    lane_words = [reader.varint() for _ in range(lanes)]
    payload = reader.rest()
    # Python ints: a hostile count (up to 2**70) must neither overflow int64 nor wrap the sum around.
    if sum(4 + 2 * words for words in lane_words) != len(payload):
        raise DecodeError("rANS stream length does not match its lane table")
    return np.array(lane_words, dtype=np.int64), payload


def prepare(values, means, indexes, tables: CdfTables, backend: str | None = None):
    """Latent values (torch, any device) -> (symbols, quantized values) as int32 NumPy arrays."""
    return _backend(backend).prepare(values, means, indexes, tables)
