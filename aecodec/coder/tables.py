"""Integer CDF tables and the lane layout: the parts of the rANS bitstream every backend shares."""

from __future__ import annotations

import numpy as np

PRECISION = 16  # CDFs sum to 2**PRECISION; also the renormalisation word size in bits
RANS_L = 1 << 16  # lower bound of the coder state, which lives in [RANS_L, 2**32)
SYMBOLS_PER_LANE = 16384  # lane size for threads: enough lanes to share out, few enough to keep headers small
# Each lane costs 4-6 bytes (final state, word count): 12 lanes per stream were 2.1 % of a quality-1
# Kodak file (bench.overhead). A lane gets at least this many payload bytes, so each lane past the
# first costs under ~0.15 % of its stream.
BYTES_PER_LANE = 4096
MAX_LANES = 256
MAX_QUANTIZED = float(1 << 30)  # quantized values are clamped to +-2**30 so they fit int32 (csrc/rans.h kMaxQuantized)
LUT_BITS = 12  # buckets per table of the native decoders' symbol lookup (csrc/rans.h kLutBits)


def default_lanes(num_symbols: int) -> int:
    return int(min(MAX_LANES, max(1, -(-num_symbols // SYMBOLS_PER_LANE))))


def lanes_for(symbols: np.ndarray, indexes: np.ndarray, tables: "CdfTables") -> int:
    """The encoder's lane count: one per SYMBOLS_PER_LANE symbols, fewer if that leaves lanes with under
    BYTES_PER_LANE bytes each. The size comes from the tables' code lengths: rANS spends within a few
    bytes of it, and it needs no trial encoding."""
    if symbols.size == 0:
        return 1
    bits = tables.cached("code_lengths", code_lengths)
    return lanes_for_size(symbols.size, bits.ravel()[indexes.astype(np.int64) * bits.shape[1] + symbols].sum() / 8)


def lanes_for_size(num_symbols: int, payload_bytes: float) -> int:
    """lanes_for, given the payload's size (for callers that know it without a gather per symbol)."""
    return int(min(default_lanes(num_symbols), max(1, payload_bytes // BYTES_PER_LANE)))


def code_lengths(tables: "CdfTables") -> np.ndarray:
    """(T, width - 1) bits of each table's symbols, 0 past a table's end: one gather per symbol, not two
    gathers and a log (that took 0.6 s for a 24 MP image's 12 M symbols)."""
    freqs = np.diff(tables.cdfs, axis=1)
    return np.where(freqs > 0, PRECISION - np.log2(np.maximum(freqs, 1)), 0.0)


def lane_bounds(num_symbols: int, lanes: int) -> tuple[np.ndarray, np.ndarray]:
    """Lane k codes symbols [k*n, min((k+1)*n, S)) with n = ceil(S / lanes); trailing lanes may be empty."""
    n = -(-num_symbols // lanes) if lanes else 0
    starts = np.minimum(np.arange(lanes, dtype=np.int64) * n, num_symbols)
    return starts, np.minimum(starts + n, num_symbols)


class CdfTables:
    """T quantized CDFs, row i valid on [0, lengths[i]): cdfs[i, 0] = 0, cdfs[i, lengths[i]-1] = 2**PRECISION,
    strictly increasing, so every symbol s < lengths[i] - 1 has frequency cdfs[i, s+1] - cdfs[i, s] >= 1."""

    def __init__(self, cdfs, lengths, offsets):
        self.cdfs = np.ascontiguousarray(np.asarray(cdfs, dtype=np.int32))
        self.lengths = np.ascontiguousarray(np.asarray(lengths, dtype=np.int32))
        self.offsets = np.ascontiguousarray(np.asarray(offsets, dtype=np.int32))
        self._cache = {}
        self._validate()

    def _validate(self) -> None:
        t, width = self.cdfs.shape
        if self.lengths.shape != (t,) or self.offsets.shape != (t,):
            raise ValueError("CDF tables: lengths and offsets need one entry per table")
        if np.any(self.lengths < 2) or np.any(self.lengths > width):
            raise ValueError("CDF tables: lengths out of range")
        for row, n in zip(self.cdfs, self.lengths):
            if row[0] != 0 or row[n - 1] != 1 << PRECISION or np.any(np.diff(row[:n]) <= 0):
                raise ValueError("CDF tables: a table is not a strictly increasing CDF from 0 to 2**PRECISION")

    @property
    def escape_symbols(self) -> np.ndarray:
        """Per table, the last symbol: it stands for a value outside the table's range (see FORMAT.md)."""
        return self.lengths - 2

    def check_symbols(self, symbols: np.ndarray, indexes: np.ndarray) -> None:
        if symbols.shape != indexes.shape:
            raise ValueError("symbols and indexes differ in shape")
        if indexes.size and (indexes.min() < 0 or indexes.max() >= len(self.lengths)):
            raise ValueError("table index out of range")
        if symbols.size and (symbols.min() < 0 or np.any(symbols >= self.lengths[indexes] - 1)):
            raise ValueError("symbol out of its table's range")

    def cached(self, key, build):
        """build(self), computed once per table set: the decoders' lookups and device copies of the tables."""
        if key not in self._cache:
            self._cache[key] = build(self)
        return self._cache[key]

    def min_bits(self) -> np.ndarray:
        """Per table, the code length in bits of its most probable symbol: the least any symbol coded with
        it costs, so the least a stream of known size must hold (decoders check that before decoding)."""
        def build(tables):
            bits = tables.cached("code_lengths", code_lengths)
            return np.where(np.diff(tables.cdfs, axis=1) > 0, bits, np.inf).min(axis=1)

        return self.cached("min_bits", build)

    def bucket_lut(self, bits: int = LUT_BITS) -> np.ndarray:
        """(T, 2**bits) uint16: the symbol owning the first slot of each bucket (the decoders' lookup)."""
        return self.cached(("bucket_lut", bits), lambda tables: _build_bucket_lut(tables, bits))


def _build_bucket_lut(tables: CdfTables, bits: int) -> np.ndarray:
    firsts = np.arange(1 << bits, dtype=np.int64) << (PRECISION - bits)
    return np.stack([
        np.searchsorted(tables.cdfs[i, :n], firsts, side="right") - 1 for i, n in enumerate(tables.lengths)
    ]).astype(np.uint16)
