"""Reference rANS coder in NumPy: the bitstream of docs/FORMAT.md ("rANS lanes"), vectorised over lanes.

Every lane is an independent rANS stream over a contiguous run of symbols, so one NumPy operation
advances all lanes by one symbol. The native coder (csrc/rans.h) must produce the same bytes.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DecodeError
from .tables import PRECISION, RANS_L, CdfTables, lane_bounds

_MASK = np.uint64((1 << PRECISION) - 1)
_SHIFT = np.uint64(PRECISION)
_L = np.uint64(RANS_L)


def _lane_matrix(values: np.ndarray, lanes: int, fill: int) -> tuple[np.ndarray, np.ndarray]:
    """Lay a flat array out as (lanes, n) rows of contiguous runs, padded with `fill`; also return run lengths."""
    starts, ends = lane_bounds(values.size, lanes)
    n = int((ends - starts).max(initial=0))
    matrix = np.full((lanes, n), fill, dtype=values.dtype)
    for lane, (a, b) in enumerate(zip(starts, ends)):
        matrix[lane, : b - a] = values[a:b]
    return matrix, ends - starts


def encode(symbols: np.ndarray, indexes: np.ndarray, tables: CdfTables, lanes: int) -> tuple[bytes, np.ndarray]:
    """Code `symbols` (int32, each < tables.lengths[index] - 1) with table `indexes[i]` each.

    Returns the lane payloads concatenated and the number of 16-bit words of each lane (after its
    4-byte final state)."""
    tables.check_symbols(symbols, indexes)
    start_flat = tables.cdfs[indexes, symbols].astype(np.uint64)
    freq_flat = tables.cdfs[indexes, symbols + 1].astype(np.uint64) - start_flat
    start, _ = _lane_matrix(start_flat, lanes, 0)
    freq, _ = _lane_matrix(freq_flat, lanes, 0)  # freq 0 marks padding past a lane's end

    state = np.full(lanes, _L, dtype=np.uint64)
    words = np.zeros((lanes, freq.shape[1]), dtype=np.uint16)
    emitted = np.zeros(lanes, dtype=np.int64)
    rows = np.arange(lanes)
    for t in range(freq.shape[1] - 1, -1, -1):  # rANS encodes backwards so decoding runs forwards
        f, s = freq[:, t], start[:, t]
        active = f > 0
        emit = active & (state >= (f << _SHIFT))
        if emit.any():
            words[rows[emit], emitted[emit]] = (state[emit] & _MASK).astype(np.uint16)
            emitted += emit
            state[emit] >>= _SHIFT
        f_safe = np.where(active, f, np.uint64(1))
        state = np.where(active, ((state // f_safe) << _SHIFT) + state % f_safe + s, state)

    parts = []
    for lane in range(lanes):
        parts.append(state[lane].astype("<u4").tobytes())
        parts.append(words[lane, : emitted[lane]][::-1].astype("<u2").tobytes())
    return b"".join(parts), emitted


def decode(payload: bytes, lane_words: np.ndarray, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
    """Inverse of encode(): symbols (int32) for the given `indexes`; raises DecodeError on a corrupt stream."""
    lanes = len(lane_words)
    sizes = 4 + 2 * np.asarray(lane_words, dtype=np.int64)
    if int(sizes.sum()) != len(payload):
        raise DecodeError("rANS payload size does not match its lane table")
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    buf = np.frombuffer(payload, dtype=np.uint8)
    state = np.empty(lanes, dtype=np.uint64)
    max_words = int(np.max(lane_words, initial=0))
    words = np.zeros((lanes, max_words + 1), dtype=np.uint64)  # +1: never index past the row
    for lane in range(lanes):
        a = int(offsets[lane])
        state[lane] = int(buf[a : a + 4].view("<u4")[0])
        words[lane, : lane_words[lane]] = buf[a + 4 : int(offsets[lane + 1])].view("<u2")
    if np.any(state < _L) or np.any(state >> np.uint64(32)):
        raise DecodeError("rANS lane starts with an invalid state")

    idx, counts = _lane_matrix(np.asarray(indexes, dtype=np.int64), lanes, 0)
    out = np.zeros(idx.shape, dtype=np.int32)
    read = np.zeros(lanes, dtype=np.int64)
    lane_words = np.asarray(lane_words, dtype=np.int64)
    rows = np.arange(lanes)
    lut = tables.slot_lut()
    for t in range(idx.shape[1]):
        active = t < counts
        table = idx[:, t]
        slot = state & _MASK
        symbol = lut[table, slot.astype(np.int64)].astype(np.int64)
        start = tables.cdfs[table, symbol].astype(np.uint64)
        freq = tables.cdfs[table, symbol + 1].astype(np.uint64) - start
        out[:, t] = symbol
        state = np.where(active, freq * (state >> _SHIFT) + slot - start, state)
        need = active & (state < _L)
        if need.any():
            if np.any(read[need] >= lane_words[need]):
                raise DecodeError("rANS lane ran out of data")
            state[need] = (state[need] << _SHIFT) | words[rows[need], read[need]]
            read += need
    if np.any(state != _L) or np.any(read != lane_words):
        raise DecodeError("rANS lane did not end in its initial state: corrupt stream or mismatched model")
    return np.concatenate([out[lane, : counts[lane]] for lane in range(lanes)]) if lanes else out.ravel()


MAX_QUANTIZED = float(1 << 30)  # quantized values are clamped to +-2**30 so they fit int32


def prepare(values: torch.Tensor, means: torch.Tensor, indexes: torch.Tensor, tables: CdfTables):
    """q = round_half_even(value - mean) in float64, clamped; symbol = q - offset, or the table's escape
    symbol when q is outside the table. Returns (symbols, q), int32 NumPy arrays."""
    q = np.rint(values.detach().cpu().double().numpy().ravel() - means.detach().cpu().double().numpy().ravel())
    q = np.clip(q, -MAX_QUANTIZED, MAX_QUANTIZED)
    idx = indexes.detach().cpu().numpy().ravel().astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(tables.lengths)):
        raise ValueError("table index out of range")
    s = q - tables.offsets[idx]
    escape = tables.escape_symbols[idx]
    symbols = np.where((s >= 0) & (s < escape), s, escape)
    return symbols.astype(np.int32), q.astype(np.int32)
