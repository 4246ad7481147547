"""Reference rANS coder in plain Python: the bitstream of docs/FORMAT.md ("rANS lanes").

One lane at a time, one symbol per loop iteration on Python ints: rANS is a sequential dependency
chain, and a scalar loop over lists (~0.25 us/symbol) beats NumPy stepping a few lanes at once
(~50 us per step). NumPy does the vectorisable parts (table gathers, byte packing). The native coder
(csrc/rans.h) must produce the same bytes.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DecodeError
from .tables import MAX_QUANTIZED, PRECISION, RANS_L, CdfTables, lane_bounds

_MASK = (1 << PRECISION) - 1
# Fewer buckets than the native LUT_BITS: 2**8 pointers per table (128 KB for 64 tables) stay in cache, where
# 2**12 do not, and that outweighs the few more symbols that step past their bucket's first entry
# (decoding bench.coder's latent: 12 bits 79-87 ms, 10 bits 76, 8 bits 70-72, 6 bits 70, 4 bits 80).
_LUT_BITS = 8
_BUCKET_SHIFT = PRECISION - _LUT_BITS


def encode(symbols: np.ndarray, indexes: np.ndarray, tables: CdfTables, lanes: int) -> tuple[bytes, np.ndarray]:
    """Code `symbols` (int32, each < tables.lengths[index] - 1) with table `indexes[i]` each.

    Returns the lane payloads concatenated and the number of 16-bit words of each lane (after its
    4-byte final state)."""
    tables.check_symbols(symbols, indexes)
    # rANS encodes backwards so decoding runs forwards: gathered in reverse order, lane [begin, end) is
    # [n - end, n - begin) here. Flat gathers: a third of the time of cdfs[indexes, symbols] on 300k symbols.
    n = symbols.size
    reversed_positions = (indexes.astype(np.int64) * tables.cdfs.shape[1] + symbols)[::-1]
    reversed_starts = tables.cdfs.ravel()[reversed_positions]
    reversed_freqs = tables.cdfs.ravel()[reversed_positions + 1] - reversed_starts
    # Memoryviews hand zip one Python int at a time: no two lists of them to build per lane (~4 of 60 ms here).
    # Locals, not module constants, in the per-symbol loops: LOAD_FAST is the cheapest lookup.
    precision, mask, one = PRECISION, _MASK, 1 << PRECISION
    parts, lane_words = [], []
    for begin, end in zip(*lane_bounds(n, lanes)):
        x, emitted = RANS_L, []
        emit = emitted.append
        lane = slice(n - end, n - begin)
        for freq, start in zip(memoryview(reversed_freqs[lane]), memoryview(reversed_starts[lane])):
            if x >> precision >= freq:
                emit(x & mask)
                x >>= precision
            # = (x // freq << precision) + x % freq + start, one division and no modulo
            x += x // freq * (one - freq) + start
        parts.append(x.to_bytes(4, "little"))
        parts.append(np.fromiter(reversed(emitted), dtype="<u2", count=len(emitted)).tobytes())
        lane_words.append(len(emitted))
    return b"".join(parts), np.array(lane_words, dtype=np.int64)


def _symbol_buckets(tables: CdfTables) -> list[list[tuple]]:
    """Per table, per LUT bucket: the entry (symbol, start, end, freq, next symbol's entry) of the symbol owning
    the bucket's first slot. Entries are shared tuples, so a table costs one list of 2**_LUT_BITS pointers
    (small enough to stay in cache, unlike one per slot) and the rare search past a bucket's first
    symbol follows `next` without another table lookup."""
    rows = []
    for cdf, length, lut in zip(tables.cdfs.tolist(), tables.lengths.tolist(), tables.bucket_lut(_LUT_BITS).tolist()):
        entries, following = [None] * (length - 1), None
        for symbol in range(length - 2, -1, -1):
            following = entries[symbol] = (symbol, cdf[symbol], cdf[symbol + 1], cdf[symbol + 1] - cdf[symbol],
                                           following)
        rows.append(list(map(entries.__getitem__, lut)))
    return rows


def decode(payload: bytes, lane_words: np.ndarray, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
    """Inverse of encode(): symbols (int32) for the given `indexes`; raises DecodeError on a corrupt stream."""
    lane_words = [int(w) for w in lane_words]
    if sum(4 + 2 * w for w in lane_words) != len(payload) or min(lane_words, default=0) < 0:
        raise DecodeError("rANS payload size does not match its lane table")
    rows = tables.cached(("python_symbol_buckets", _LUT_BITS), _symbol_buckets)
    precision, mask, bucket_shift, lower = PRECISION, _MASK, _BUCKET_SHIFT, RANS_L
    indexes = np.asarray(indexes).tolist()
    out = []
    append = out.append
    offset = 0
    for (begin, end), num_words in zip(zip(*lane_bounds(len(indexes), len(lane_words))), lane_words):
        x = int.from_bytes(payload[offset : offset + 4], "little")
        # reversed, so pop() hands out the words in order; popping past the last one is a truncated lane
        words = np.frombuffer(payload, dtype="<u2", count=num_words, offset=offset + 4)[::-1].tolist()
        next_word = words.pop
        offset += 4 + 2 * num_words
        if x < lower:
            raise DecodeError("rANS lane starts with an invalid state")
        try:
            for buckets in map(rows.__getitem__, indexes[int(begin) : int(end)]):
                slot = x & mask
                symbol, start, end_of_symbol, freq, following = buckets[slot >> bucket_shift]
                while end_of_symbol <= slot:  # stops inside the row: its last entry ends at 2**PRECISION > slot
                    symbol, start, end_of_symbol, freq, following = following
                x = freq * (x >> precision) + slot - start
                if x < lower:
                    x = (x << precision) | next_word()
                append(symbol)
        except IndexError:
            raise DecodeError("rANS lane ran out of data") from None
        if x != lower or words:
            raise DecodeError("rANS lane did not end in its initial state: corrupt stream or mismatched model")
    return np.fromiter(out, dtype=np.int32, count=len(out))


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
