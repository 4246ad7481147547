"""The .aec container (spec: docs/FORMAT.md). Little-endian, varints are unsigned LEB128.

    magic 4 | version 1 | mode 1 | model id 8 | quality u16 | width, height varint
    | stream lengths varint x4 (z, y, escapes, alpha) | symbols CRC32 u32 | file CRC32 u32 | streams

The file CRC covers every byte of the file except itself; the symbols CRC is of the decoded
latent values, so a decoder that derives different CDFs from the encoder's reports it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import DecodeError

MAGIC = b"\x89AEC"
VERSION = 1
MODES = ("L", "LA", "RGB", "RGBA")
STREAMS = ("z", "y", "escapes", "alpha")
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 28  # 268 MP: refuse to allocate for headers that declare more


def varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class ByteReader:
    """Reads a byte string front to back; running off its end is a DecodeError naming what was read."""

    def __init__(self, data: bytes, what: str):
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError(f"{self.what} is truncated")
        chunk = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return chunk

    def varint(self) -> int:
        value = 0
        for shift in range(0, 64, 7):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise DecodeError(f"{self.what} holds an overlong varint")

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def rest(self) -> bytes:
        chunk = bytes(self.data[self.pos :])
        self.pos = len(self.data)
        return chunk


@dataclass
class Header:
    mode: str
    model_id: bytes  # 8 bytes: the start of the sha256 of the weights file
    quality: float  # stored in thousandths
    width: int
    height: int
    symbols_crc: int = 0

    @property
    def quality_milli(self) -> int:
        return round(self.quality * 1000)


def pack(header: Header, streams: dict[str, bytes]) -> bytes:
    if header.mode not in MODES or len(header.model_id) != 8:
        raise ValueError("bad header")
    head = (
        MAGIC
        + bytes([VERSION, MODES.index(header.mode)])
        + header.model_id
        + struct.pack("<H", header.quality_milli)
        + varint(header.width)
        + varint(header.height)
        + b"".join(varint(len(streams.get(name, b""))) for name in STREAMS)
        + struct.pack("<I", header.symbols_crc)
    )
    body = b"".join(streams.get(name, b"") for name in STREAMS)
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def unpack(data: bytes) -> tuple[Header, dict[str, bytes]]:
    """Parse and verify a whole .aec file; any defect raises DecodeError before a byte is decoded."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("an .aec file is bytes")
    reader = ByteReader(data, "file")
    if len(data) < len(MAGIC) or reader.take(len(MAGIC)) != MAGIC:
        raise DecodeError("not an .aec file (wrong magic)")
    version = reader.take(1)[0]
    if version != VERSION:
        raise DecodeError(f"unsupported .aec format version {version} (this aecodec reads version {VERSION})")
    mode = reader.take(1)[0]
    if mode >= len(MODES):
        raise DecodeError(f"unknown image mode code {mode}")
    model_id = reader.take(8)
    quality = reader.u16() / 1000
    width, height = reader.varint(), reader.varint()
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE) or width * height > MAX_PIXELS:
        raise DecodeError(f"implausible image size {width}x{height}")
    lengths = [reader.varint() for _ in STREAMS]
    symbols_crc = reader.u32()
    crc_at = reader.pos
    stored_crc = reader.u32()
    if reader.pos + sum(lengths) != len(data):
        what = "truncated" if reader.pos + sum(lengths) > len(data) else "followed by trailing bytes"
        raise DecodeError(f"file is {what}: its header declares {sum(lengths)} payload bytes")
    if zlib.crc32(bytes(data[crc_at + 4 :]), zlib.crc32(bytes(data[:crc_at]))) != stored_crc:
        raise DecodeError("file CRC mismatch: the file is corrupted")
    streams = {name: reader.take(n) for name, n in zip(STREAMS, lengths)}
    header = Header(MODES[mode], model_id, quality, width, height, symbols_crc)
    return header, streams


def info(data: bytes) -> dict:
    """What an .aec file holds, from its header (verified, not decoded)."""
    from .weights import release_for

    header, streams = unpack(data)
    pixels = header.width * header.height
    release = release_for(header.model_id)
    return {
        "width": header.width,
        "height": header.height,
        "mode": header.mode,
        "quality": header.quality,
        "model_id": header.model_id.hex(),
        "model": release.name if release else None,  # None: weights this aecodec does not ship
        "bytes": len(data),
        "bpp": 8 * len(data) / pixels,
        "streams": {name: len(s) for name, s in streams.items()},
        "format_version": VERSION,
    }
