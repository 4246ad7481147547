"""The .aec container (spec: docs/FORMAT.md). Little-endian, varints are unsigned LEB128.

Version 1, learned coding:
    magic 4 | version 1 | mode 1 | model id 8 | quality u16 | width, height varint
    | stream lengths varint x4 (z, y, escapes, alpha) | symbols CRC32 u32 | file CRC32 u32 | streams
Version 2, lossless coding (a version-1 reader, aecodec 0.1.0, refuses it by its version):
    magic 4 | version 2 | mode 1 | coding 1 | width, height varint | payload length varint
    | file CRC32 u32 | payload (a WebP-lossless or PNG file of the image)
Version 3, learned coding plus a refinement layer (the top qualities; older readers refuse it by its version):
    magic 4 | version 3 | mode 1 | model id 8 | learned quality u16 | quality u16 | width, height varint
    | stream lengths varint x5 (z, y, escapes, alpha, refine) | symbols CRC32 u32 | file CRC32 u32 | streams

The file CRC covers every byte of the file except itself; the symbols CRC is of the decoded
latent values, so a decoder that derives different CDFs from the encoder's reports it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import DecodeError

MAGIC = b"\x89AEC"
VERSION = 1  # learned coding; written for every learned file, so 0.1.0 reads them
LOSSLESS_VERSION = 2
REFINED_VERSION = 3
VERSIONS = (VERSION, LOSSLESS_VERSION, REFINED_VERSION)
MODES = ("L", "LA", "RGB", "RGBA")
LOSSLESS_MODES = MODES + ("I;16",)  # 16-bit grey exists only as a lossless file
STREAMS = ("z", "y", "escapes", "alpha")
REFINED_STREAMS = STREAMS + ("refine",)
LOSSLESS_CODINGS = ("webp", "png")  # the payload's format, by code
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
    model_id: bytes | None  # 8 bytes: the start of the sha256 of the weights file; None when lossless
    quality: float | None  # stored in thousandths; None when lossless
    width: int
    height: int
    symbols_crc: int = 0
    coding: str = "learned"  # or one of LOSSLESS_CODINGS
    # The learned layer's quality when a refinement layer (version 3) codes the rest of `quality`; else None.
    learned_quality: float | None = None

    @property
    def lossless(self) -> bool:
        return self.coding != "learned"

    @property
    def refined(self) -> bool:
        return self.learned_quality is not None

    @property
    def model_quality(self) -> float:
        """The quality the model's synthesis runs at."""
        return self.learned_quality if self.refined else self.quality


def _with_crc(head: bytes, body: bytes) -> bytes:
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def pack_lossless(header: Header, payload: bytes) -> bytes:
    if header.mode not in LOSSLESS_MODES or header.coding not in LOSSLESS_CODINGS:
        raise ValueError("bad header")
    head = (
        MAGIC
        + bytes([LOSSLESS_VERSION, LOSSLESS_MODES.index(header.mode), LOSSLESS_CODINGS.index(header.coding)])
        + varint(header.width)
        + varint(header.height)
        + varint(len(payload))
    )
    return _with_crc(head, payload)


def pack(header: Header, streams: dict[str, bytes]) -> bytes:
    if header.lossless:
        return pack_lossless(header, streams["image"])
    if header.mode not in MODES or len(header.model_id) != 8:
        raise ValueError("bad header")
    qualities = [header.learned_quality, header.quality] if header.refined else [header.quality]
    version, names = (REFINED_VERSION, REFINED_STREAMS) if header.refined else (VERSION, STREAMS)
    head = (
        MAGIC
        + bytes([version, MODES.index(header.mode)])
        + header.model_id
        + b"".join(struct.pack("<H", round(q * 1000)) for q in qualities)
        + varint(header.width)
        + varint(header.height)
        + b"".join(varint(len(streams.get(name, b""))) for name in names)
        + struct.pack("<I", header.symbols_crc)
    )
    return _with_crc(head, b"".join(streams.get(name, b"") for name in names))


def unpack(data: bytes) -> tuple[Header, dict[str, bytes]]:
    """Parse and verify a whole .aec file; any defect raises DecodeError before a byte is decoded.

    A learned file's streams are z, y, escapes and alpha (and refine in version 3); a lossless file's one
    stream is "image"."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("an .aec file is bytes")
    reader = ByteReader(data, "file")
    if len(data) < len(MAGIC) or reader.take(len(MAGIC)) != MAGIC:
        raise DecodeError("not an .aec file (wrong magic)")
    version = reader.take(1)[0]
    if version not in VERSIONS:
        raise DecodeError(f"unsupported .aec format version {version} (this aecodec reads versions "
                          f"{', '.join(map(str, VERSIONS))})")
    learned = version != LOSSLESS_VERSION
    modes = MODES if learned else LOSSLESS_MODES
    mode = reader.take(1)[0]
    if mode >= len(modes):
        raise DecodeError(f"unknown image mode code {mode}")
    learned_quality = None
    if learned:
        coding, model_id, quality = "learned", reader.take(8), reader.u16() / 1000
        if version == REFINED_VERSION:
            learned_quality, quality = quality, reader.u16() / 1000
    else:
        code = reader.take(1)[0]
        if code >= len(LOSSLESS_CODINGS):
            raise DecodeError(f"unknown lossless coding {code}")
        coding, model_id, quality = LOSSLESS_CODINGS[code], None, None
    width, height = reader.varint(), reader.varint()
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE) or width * height > MAX_PIXELS:
        raise DecodeError(f"implausible image size {width}x{height}")
    names = {VERSION: STREAMS, LOSSLESS_VERSION: ("image",), REFINED_VERSION: REFINED_STREAMS}[version]
    lengths = [reader.varint() for _ in names]
    symbols_crc = reader.u32() if learned else 0
    crc_at = reader.pos
    stored_crc = reader.u32()
    if reader.pos + sum(lengths) != len(data):
        what = "truncated" if reader.pos + sum(lengths) > len(data) else "followed by trailing bytes"
        raise DecodeError(f"file is {what}: its header declares {sum(lengths)} payload bytes")
    if zlib.crc32(bytes(data[crc_at + 4 :]), zlib.crc32(bytes(data[:crc_at]))) != stored_crc:
        raise DecodeError("file CRC mismatch: the file is corrupted")
    streams = {name: reader.take(n) for name, n in zip(names, lengths)}
    header = Header(modes[mode], model_id, quality, width, height, symbols_crc, coding, learned_quality)
    return header, streams


def info(data: bytes) -> dict:
    """What an .aec file holds, from its header (verified, not decoded)."""
    from .weights import release_for

    header, streams = unpack(data)
    pixels = header.width * header.height
    release = None if header.lossless else release_for(header.model_id)
    return {
        "width": header.width,
        "height": header.height,
        "mode": header.mode,
        "coding": f"lossless ({header.coding})" if header.lossless else "learned + refinement" if header.refined else "learned",
        "quality": header.quality,
        "learned_quality": header.learned_quality,  # the model's quality under a refinement layer; else None
        "model_id": None if header.lossless else header.model_id.hex(),
        "model": release.name if release else None,  # None: lossless, or weights this aecodec does not ship
        "bytes": len(data),
        "bpp": 8 * len(data) / pixels,
        "streams": {name: len(s) for name, s in streams.items()},
        "format_version": data[len(MAGIC)],
    }
