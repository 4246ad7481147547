"""The rANS coder: round trips, lane layouts, table edges, corrupt streams; every backend against the reference."""

import hashlib

import numpy as np
import pytest

from aecodec.coder import BACKENDS, CdfTables, decode_stream, encode_stream, split_stream
from aecodec.coder.tables import BYTES_PER_LANE, MAX_LANES, PRECISION, default_lanes, lane_bounds
from aecodec.errors import DecodeError
from aecodec.format import varint


def random_tables(rng, count=6, max_symbols=40, peaked=True) -> CdfTables:
    lengths = rng.integers(2, max_symbols, count) + 1  # symbols + 1 CDF entries, at least 2 symbols
    width = int(lengths.max())
    cdfs = np.zeros((count, width), dtype=np.int64)
    for i, n in enumerate(lengths):
        symbols = n - 1
        pmf = rng.dirichlet(np.full(symbols, 0.3 if peaked else 5.0))
        freq = np.maximum(1, np.floor(pmf * ((1 << PRECISION) - symbols)).astype(np.int64))
        freq[np.argmax(freq)] += (1 << PRECISION) - freq.sum()
        cdfs[i, 1:n] = np.cumsum(freq)
    return CdfTables(cdfs, lengths, -(lengths // 2))


def random_input(rng, tables, size):
    indexes = rng.integers(0, len(tables.lengths), size).astype(np.int32)
    p = rng.random(size)
    # Mostly probable symbols, with the first and last symbol of each table well represented.
    symbols = np.where(p < 0.1, 0, np.where(p < 0.2, tables.lengths[indexes] - 2, rng.integers(0, 1 << 20, size) % (tables.lengths[indexes] - 1)))
    return symbols.astype(np.int32), indexes


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("size,lanes", [(0, 1), (1, 1), (1, 7), (5, 3), (1000, 1), (1000, 7), (4097, 64), (20000, None), (3000, MAX_LANES)])
def test_round_trip(backend, size, lanes):
    rng = np.random.default_rng(size * 31 + (lanes or 0))
    tables = random_tables(rng)
    symbols, indexes = random_input(rng, tables, size)
    data = encode_stream(symbols, indexes, tables, lanes=lanes, backend=backend)
    np.testing.assert_array_equal(decode_stream(data, indexes, tables, backend=backend), symbols)


@pytest.mark.parametrize("backend", sorted(set(BACKENDS) - {"python"}))
@pytest.mark.parametrize("seed", range(6))
def test_native_matches_python_bytes(backend, seed):
    rng = np.random.default_rng(seed)
    tables = random_tables(rng, count=int(rng.integers(1, 70)), max_symbols=int(rng.integers(3, 3000)), peaked=seed % 2 == 0)
    symbols, indexes = random_input(rng, tables, int(rng.integers(1, 60000)))
    lanes = int(rng.integers(1, MAX_LANES + 1))
    reference = encode_stream(symbols, indexes, tables, lanes=lanes, backend="python")
    assert encode_stream(symbols, indexes, tables, lanes=lanes, backend=backend) == reference
    np.testing.assert_array_equal(decode_stream(reference, indexes, tables, backend=backend), symbols)


def test_compresses_to_the_entropy():
    rng = np.random.default_rng(1)
    tables = random_tables(rng, count=1, max_symbols=30)
    freq = np.diff(tables.cdfs[0, : tables.lengths[0]]) / (1 << PRECISION)
    symbols = rng.choice(len(freq), size=50000, p=freq).astype(np.int32)
    data = encode_stream(symbols, np.zeros_like(symbols), tables, backend="python")
    ideal_bytes = -np.log2(freq[symbols]).sum() / 8
    assert ideal_bytes <= len(data) <= ideal_bytes * 1.01 + 64


def test_rejects_symbols_outside_tables():
    tables = random_tables(np.random.default_rng(2))
    bad = np.array([tables.lengths[0] - 1], dtype=np.int32)  # one past the last codable symbol
    for backend in BACKENDS:
        with pytest.raises(ValueError):
            encode_stream(bad, np.zeros(1, np.int32), tables, backend=backend)
        with pytest.raises(ValueError):
            encode_stream(np.array([-1], np.int32), np.zeros(1, np.int32), tables, backend=backend)
        with pytest.raises(ValueError):
            encode_stream(np.zeros(1, np.int32), np.array([len(tables.lengths)], np.int32), tables, backend=backend)


def test_tables_are_validated():
    with pytest.raises(ValueError):
        CdfTables([[0, 100, 50, 1 << PRECISION]], [4], [0])
    with pytest.raises(ValueError):
        CdfTables([[0, 100, 1 << PRECISION]], [5], [0])


def test_lane_layout():
    starts, ends = lane_bounds(10, 4)
    assert list(zip(starts, ends)) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert default_lanes(0) == 1 and default_lanes(10**9) == MAX_LANES


@pytest.mark.parametrize("coded_fraction,expected_lanes", [(0.01, 1), (0.2, 7), (1.0, 13)])
def test_lanes_hold_at_least_bytes_per_lane(coded_fraction, expected_lanes):
    """A lane's header bytes pay off only with a few KB behind it: low-rate streams get fewer lanes."""
    size = 200_000  # 13 lanes by symbol count
    uniform = np.linspace(0, 1 << PRECISION, 65).astype(np.int64)  # 6 bits per symbol
    certain = np.concatenate([[0], np.arange(65536 - 63, 65537)])  # symbol 0 costs ~0.001 bit
    tables = CdfTables(np.stack([uniform, certain]), [65, 65], [0, 0])
    rng = np.random.default_rng(5)
    indexes = (rng.random(size) >= coded_fraction).astype(np.int32)  # table 0 for ~coded_fraction of them
    symbols = np.where(indexes == 0, rng.integers(0, 64, size), 0).astype(np.int32)
    data = encode_stream(symbols, indexes, tables, backend="python")
    assert data[0] == expected_lanes  # the stream starts with the lane count (a one-byte varint here)
    np.testing.assert_array_equal(decode_stream(data, indexes, tables, backend="python"), symbols)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_corrupt_streams_raise_decode_error(backend):
    rng = np.random.default_rng(3)
    tables = random_tables(rng)
    symbols, indexes = random_input(rng, tables, 3000)
    data = encode_stream(symbols, indexes, tables, lanes=4, backend="python")
    for cut in sorted(set(rng.integers(0, len(data), 40)) | {0, 1, len(data) - 1}):
        with pytest.raises(DecodeError):
            decode_stream(data[:cut], indexes, tables, backend=backend)
    undetected = 0
    for _ in range(300):
        damaged = bytearray(data)
        pos = int(rng.integers(len(damaged)))
        damaged[pos] ^= 1 << int(rng.integers(8))
        try:
            decoded = decode_stream(bytes(damaged), indexes, tables, backend=backend)
        except DecodeError:
            continue
        undetected += not np.array_equal(decoded, symbols)
    # The end-state check catches almost every flip; the file CRC (format tests) catches the rest.
    assert undetected <= 6


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_lane_with_a_word_too_few_or_too_many(backend):
    """A consistent lane table whose lane lacks its last word, or carries one more: each backend names the fault."""
    rng = np.random.default_rng(4)
    tables = random_tables(rng)
    symbols, indexes = random_input(rng, tables, 3000)
    data = encode_stream(symbols, indexes, tables, lanes=1, backend="python")
    lane_words, payload = split_stream(data)
    assert lane_words[0] > 1
    for words, body, message in [(lane_words[0] - 1, payload[:-2], "ran out of data"),
                                 (lane_words[0] + 1, payload + b"\x00\x00", "did not end in its initial state")]:
        with pytest.raises(DecodeError, match=message):
            decode_stream(varint(1) + varint(int(words)) + body, indexes, tables, backend=backend)


def test_golden_stream():
    """The bitstream is a format: this hash changes only with a deliberate format change (docs/FORMAT.md)."""
    rng = np.random.default_rng(1234)
    tables = random_tables(rng)
    symbols, indexes = random_input(rng, tables, 5000)
    data = encode_stream(symbols, indexes, tables, lanes=3, backend="python")
    assert hashlib.sha256(data).hexdigest()[:16] == GOLDEN_STREAM_SHA256


GOLDEN_STREAM_SHA256 = "6728b61ac28e6076"
