"""The .aec container: round trip, size, and every kind of damage gives DecodeError."""

import numpy as np
import pytest

from aecodec import format as aec
from aecodec.errors import DecodeError

HEADER = aec.Header("RGBA", bytes(range(8)), 3.25, 513, 300, symbols_crc=0xDEADBEEF)
STREAMS = {"z": b"zz" * 10, "y": bytes(range(200)), "escapes": b"\x01\x02", "alpha": b"A" * 30}


def test_round_trip():
    data = aec.pack(HEADER, STREAMS)
    header, streams = aec.unpack(data)
    assert header == HEADER
    assert streams == STREAMS


def test_refined_round_trip_is_version_3():
    header = aec.Header("L", bytes(range(8)), 9.5, 40, 30, symbols_crc=7, learned_quality=7.0)
    streams = {**STREAMS, "alpha": b"", "refine": b"R" * 9}
    data = aec.pack(header, streams)
    assert data[4] == aec.REFINED_VERSION
    assert aec.unpack(data) == (header, streams)
    assert aec.info(data)["coding"] == "learned + refinement"


def test_header_is_small():
    overhead = len(aec.pack(HEADER, STREAMS)) - sum(map(len, STREAMS.values()))
    assert overhead <= 40


def test_every_truncation_fails():
    data = aec.pack(HEADER, STREAMS)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            aec.unpack(data[:cut])


def test_every_bit_flip_fails():
    data = aec.pack(HEADER, STREAMS)
    for pos in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[pos] ^= 1 << bit
            with pytest.raises(DecodeError):
                aec.unpack(bytes(damaged))


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: b"GIF8" + d[4:], "magic"),
        (lambda d: d[:4] + bytes([4]) + d[5:], "version"),
        (lambda d: d + b"\0", "trailing"),
        (lambda d: b"", "magic"),
    ],
)
def test_clear_messages(mutate, message):
    with pytest.raises(DecodeError, match=message):
        aec.unpack(mutate(aec.pack(HEADER, STREAMS)))


def test_huge_declared_size_is_refused():
    head = aec.MAGIC + bytes([aec.VERSION, 2]) + bytes(8) + b"\0\0" + aec.varint(60000) + aec.varint(60000)
    with pytest.raises(DecodeError, match="size"):
        aec.unpack(head + bytes(12))


def test_varint():
    for value in [0, 1, 127, 128, 300, 2**32 - 1, 2**40]:
        reader = aec.ByteReader(aec.varint(value), "test")
        assert reader.varint() == value
    with pytest.raises(DecodeError):
        aec.ByteReader(b"\xff" * 12, "test").varint()
    with pytest.raises(ValueError):
        aec.varint(-1)


def test_not_bytes():
    with pytest.raises(TypeError):
        aec.unpack(np.zeros(4))
