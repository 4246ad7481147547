"""Fuzzing the stream decoders and the whole decoder with mutated inputs (seeded, bounded here).

AECODEC_FUZZ_ITERATIONS raises the count for a long run: each case must end in DecodeError or a
well-formed result, never a crash or a hang, and the Python and C++ decoders must agree on it.
"""

import os

import numpy as np
import pytest

import aecodec
from aecodec import _native, coder
from aecodec import format as aec
from aecodec.errors import DecodeError
from tests.conftest import natural_like

ITERATIONS = int(os.environ.get("AECODEC_FUZZ_ITERATIONS", 200))
BACKENDS = ["python"] + (["native"] if _native.HAS_EXT else [])


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(5))
        pos = int(rng.integers(len(data) + 1))
        if op == 0 and data:  # overwrite bytes
            data[min(pos, len(data) - 1)] = int(rng.integers(256))
        elif op == 1:  # truncate
            del data[pos:]
        elif op == 2:  # insert random bytes
            data[pos:pos] = rng.integers(256, size=int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif op == 3:  # delete a run
            del data[pos : pos + int(rng.integers(1, 9))]
        else:  # a huge varint (lane counts, word counts)
            data[pos:pos] = b"\xff\xff\xff\xff\x7f"
    return bytes(data)


def outcome(fn):
    try:
        return fn()
    except DecodeError:
        return DecodeError


def test_stream_decoders_survive_and_agree(tiny_model):
    tables = tiny_model.latents.y_tables
    rng = np.random.default_rng(1)
    n = 3000
    indexes = rng.integers(len(tables.lengths), size=n).astype(np.int32)
    symbols = rng.integers(0, tables.lengths[indexes] - 1).astype(np.int32)
    stream = coder.encode_stream(symbols, indexes, tables, lanes=5)
    accepted = 0
    for _ in range(ITERATIONS):
        damaged = mutate(stream, rng)
        results = [outcome(lambda b=b: coder.decode_stream(damaged, indexes, tables, backend=b)) for b in BACKENDS]
        if results[0] is DecodeError:
            assert all(r is DecodeError for r in results)
        else:
            accepted += 1
            for r in results:
                assert r is not DecodeError and r.shape == (n,) and np.array_equal(r, results[0])
                assert np.all(r < tables.lengths[indexes] - 1)
    assert accepted < ITERATIONS  # the mutations do reach the error paths


@pytest.fixture(scope="module")
def valid_file(tiny_model):
    return aecodec.encode(natural_like(64, 80, seed=5), 4.0, weights=tiny_model)


def test_whole_decoder_survives_damaged_streams(tiny_model, valid_file):
    """Damage inside the streams, container checksum recomputed: only the decoder's own checks stand."""
    header, streams = aec.unpack(valid_file)
    rng = np.random.default_rng(2)
    names = ["z", "y", "escapes"]
    for i in range(ITERATIONS // 4):
        damaged = dict(streams)
        name = names[i % len(names)]
        damaged[name] = mutate(streams[name], rng)
        data = aec.pack(header, damaged)
        for backend in BACKENDS:
            result = outcome(lambda: aecodec.decode(data, weights=tiny_model, backend=backend))
            assert result is DecodeError or result.size == (header.width, header.height)
