"""The refinement layer: the top qualities add the learned file's residual, transform-coded.

The learned transforms flatten out near 35.5 dB on Kodak whatever the rate (README, Models), and from
about quality 7 up each further dB costs the model more bits than a classic coder spends on what it misses.
So a quality above REFINED_FROM codes the image at REFINED_FROM, then the difference between the image and
that file's decoded pixels as a classic codec would: an orthonormal colour transform, 8x8 orthonormal DCTs,
uniform quantization (a step per colour component), and rANS coding of the integers with a two-sided geometric
(discrete Laplace) table per colour and frequency band, chosen by the encoder from a fixed family.

The symbols, and so the bitstream, are exact on every backend; the pixels they add to are the learned
decoder's, so like those they may differ by a fraction of a level with the synthesis precision.
"""

from __future__ import annotations

import functools
from decimal import Decimal, localcontext

import numpy as np

from . import coder
from . import image as images
from .coder.tables import MAX_QUANTIZED, PRECISION, CdfTables, code_lengths
from .entropy import EscapeReader, zigzag
from .errors import DecodeError
from .format import ByteReader, varint
from .quality import REFINED_FROM

BLOCK = 8
BANDS = 2 * BLOCK - 1  # a coefficient's band is u + v: 0 (DC) to 14
STEP_UNITS = 64  # steps are stored in 1/64 of a level
MAX_STEP_UNITS = 255 * 8 * STEP_UNITS  # a step of 2040 levels zeroes any 8x8 block
# The step just above REFINED_FROM, halving with each quality up to QUALITY_MAX's 2.5 (~50 dB). Chosen on
# 20 training photos: their learned files at quality 7 refined beat those at 6, 8, 9 or 10 refined to the
# same PSNR, and quality 8's step (40) gives more PSNR than the model's own quality 8 in fewer bits.
FIRST_STEP = 80.0
# The encoder rounds |coefficient| / step up from 0.75, not 0.5: a dead zone, which for these
# Laplacian-like coefficients saves more bits than it costs in PSNR (Kodak: the same curve as 0.5 at
# -2 % refinement bits).
ROUNDING = 0.25
# Table s is the discrete Laplace distribution with scale SCALE_MIN * SCALE_RATIO**s (in steps).
SCALES = 36
SCALE_MIN = Decimal("0.1")
SCALE_RATIO = Decimal("1.25")
RADIUS_MAX = 2047  # values beyond a table's radius (at most this) are escaped
BAND_BLOCK_ROWS = 32  # blocks rows coded or decoded at a time
# Orthonormal, so the squared error of the coefficients is the image's: (1, 1, 1)/sqrt3, (1, 0, -1)/sqrt2,
# (1, -2, 1)/sqrt6.
COLOUR = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], dtype=np.float64)
COLOUR /= np.linalg.norm(COLOUR, axis=1, keepdims=True)


def plan(quality: float) -> tuple[float, float] | None:
    """(the learned layer's quality, the refinement step) for a quality above REFINED_FROM; None below."""
    if quality <= REFINED_FROM:
        return None
    return REFINED_FROM, FIRST_STEP * 2.0 ** (REFINED_FROM - quality)


def channels(mode: str, colour: np.ndarray) -> np.ndarray:
    """What the refinement codes, (H, W, C): the colour, or for grey images (L, LA) their one channel."""
    return images.assemble_array("L", colour, None)[..., None] if mode in ("L", "LA") else colour


def to_colour(refined: np.ndarray) -> np.ndarray:
    """Refined channels -> (H, W, 3) colour (grey replicated, which Pillow converts back to itself)."""
    return np.repeat(refined, 3, axis=2) if refined.shape[2] == 1 else refined


def _dct_matrix() -> np.ndarray:
    k = np.arange(BLOCK)
    m = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * BLOCK)) * np.sqrt(2 / BLOCK)
    m[0] /= np.sqrt(2)
    return m


DCT = _dct_matrix()


def _theta(s: int) -> int:
    """exp(-1 / scale_s) in units of 2**-32; decimal's exp is correctly rounded, so every platform agrees."""
    with localcontext() as ctx:
        ctx.prec = 40
        return int((Decimal(-1) / (SCALE_MIN * SCALE_RATIO**s)).exp() * (1 << 32))


@functools.lru_cache(maxsize=1)
def tables() -> CdfTables:
    """The SCALES tables, built in integer arithmetic (so identical everywhere): symbol r + radius stands
    for value r in [-radius, radius], the last symbol for an escape."""
    width = 2 * RADIUS_MAX + 3
    cdfs = np.zeros((SCALES, width), dtype=np.int64)
    lengths, offsets = [], []
    for s in range(SCALES):
        theta, weights = _theta(s), [1 << 32]
        while len(weights) <= RADIUS_MAX and weights[-1]:
            weights.append(weights[-1] * theta >> 32)
        total = weights[0] + 2 * sum(weights[1:])
        # The radius: the last magnitude whose share of the total would still get a frequency of its own.
        radius = max(1, max(r for r, w in enumerate(weights) if (w << PRECISION) >= total))
        kept = [weights[abs(r)] for r in range(-radius, radius + 1)]
        escape = max(total - sum(kept), 1)
        freqs = [max(1, ((w << PRECISION) + total // 2) // total) for w in kept + [escape]]
        freqs[radius] += (1 << PRECISION) - sum(freqs)  # rounding's few units over or under go to zero, the mode
        cdfs[s, 1 : len(freqs) + 1] = np.cumsum(freqs)
        lengths.append(len(freqs) + 1)
        offsets.append(-radius)
    return CdfTables(cdfs, lengths, offsets)


def _class_grid(channels: int) -> np.ndarray:
    """(C, 8, 8): each coefficient's class, component * BANDS + u + v."""
    return np.arange(channels)[:, None, None] * BANDS + np.add.outer(np.arange(BLOCK), np.arange(BLOCK))


def _per_coefficient(grid: np.ndarray, blocks_high: int, blocks_wide: int) -> np.ndarray:
    """A (C, 8, 8) grid repeated over every block, in coding order (component, block row, block column,
    u, v), as one contiguous int32 array."""
    c = grid.shape[0]
    return np.ascontiguousarray(np.broadcast_to(grid[:, None, None], (c, blocks_high, blocks_wide, BLOCK, BLOCK)),
                                dtype=np.int32).ravel()


def _to_coefficients(residual: np.ndarray) -> np.ndarray:
    """(H, W, C) residual, H and W multiples of BLOCK -> (C, H/8, W/8, 8, 8) DCT coefficients."""
    h, w, c = residual.shape
    if c == 3:
        residual = residual @ COLOUR.T
    blocks = residual.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK, c).transpose(4, 0, 2, 1, 3)
    return DCT @ blocks @ DCT.T


def _from_coefficients(coefficients: np.ndarray) -> np.ndarray:
    c, bh, bw = coefficients.shape[:3]
    blocks = DCT.T @ coefficients @ DCT
    residual = blocks.transpose(1, 3, 2, 4, 0).reshape(bh * BLOCK, bw * BLOCK, c)
    return residual @ COLOUR if c == 3 else residual


def _escape_bits(values: np.ndarray) -> np.ndarray:
    return 8.0 * np.maximum(1, np.ceil(np.log2(2 * np.abs(values) + 2) / 7))


def _choose_scales(values: np.ndarray, t: CdfTables) -> np.ndarray:
    """values (C, bh, bw, 8, 8) -> per class, the table that codes its values in the fewest bits
    (escapes included)."""
    span = RADIUS_MAX + 1
    c = values.shape[0]
    hist = np.zeros((c * BANDS, 2 * span + 1))
    classes = _class_grid(c)
    for k in range(c):
        for u in range(BLOCK):
            for v in range(BLOCK):
                clipped = np.clip(values[k, :, :, u, v].ravel(), -span, span) + span
                hist[classes[k, u, v]] += np.bincount(clipped, minlength=2 * span + 1)
    grid = np.arange(-span, span + 1)
    lengths = t.cached("code_lengths", code_lengths)
    costs = np.empty((SCALES, 2 * span + 1))
    for s in range(SCALES):
        radius = -int(t.offsets[s])
        inside = np.abs(grid) <= radius
        costs[s, inside] = lengths[s, grid[inside] + radius]
        costs[s, ~inside] = lengths[s, t.escape_symbols[s]] + _escape_bits(grid[~inside])
    return np.argmin(hist @ costs.T, axis=1).astype(np.uint8)


def _bands(blocks_high: int):
    """Slices of block rows: the float temporaries are a band's, not the image's (a 24 MP image's
    coefficients are 580 MB in float64)."""
    for start in range(0, blocks_high, BAND_BLOCK_ROWS):
        yield slice(start, min(blocks_high, start + BAND_BLOCK_ROWS))


def encode(original: np.ndarray, decoded: np.ndarray, step: float, backend: str | None = None) -> bytes:
    """(H, W, C) uint8 image and its learned decoding (C = 1 or 3) -> the refinement stream: per component
    a varint step in 1/STEP_UNITS | one table index per class | varint escape bytes | escapes | rANS stream.
    Every component gets `step`: equal steps minimise the RGB squared error the bits buy."""
    step_units = min(MAX_STEP_UNITS, max(1, round(step * STEP_UNITS)))
    step = step_units / STEP_UNITS
    h, w, c = original.shape
    bh, bw = -(-h // BLOCK), -(-w // BLOCK)
    values = np.empty((c, bh, bw, BLOCK, BLOCK), dtype=np.int32)
    for band in _bands(bh):
        rows = slice(band.start * BLOCK, min(h, band.stop * BLOCK))
        residual = original[rows].astype(np.float64) - decoded[rows]
        # Edge-replicated to whole blocks: a block cut by the border codes no artificial edge.
        pad = (band.stop - band.start) * BLOCK - residual.shape[0]
        residual = np.pad(residual, ((0, pad), (0, -w % BLOCK), (0, 0)), mode="edge")
        coefficients = _to_coefficients(residual)
        quantized = np.sign(coefficients) * np.floor(np.abs(coefficients) / step + ROUNDING)
        values[:, band] = np.clip(quantized, -MAX_QUANTIZED, MAX_QUANTIZED)
    t = tables()
    scales = _choose_scales(values, t)
    table_grid = scales[_class_grid(c)]
    indexes = _per_coefficient(table_grid, bh, bw)
    symbols = (values - t.offsets[table_grid][:, None, None]).ravel()
    escape = t.escape_symbols[indexes]
    escaped = (symbols < 0) | (symbols >= escape)
    symbols[escaped] = escape[escaped]
    escapes = b"".join(varint(zigzag(int(v))) for v in values.ravel()[escaped])
    stream = coder.encode_stream(symbols, indexes, t, backend=backend)
    return varint(step_units) * c + scales.tobytes() + varint(len(escapes)) + escapes + stream


def decode(data: bytes, decoded: np.ndarray, backend: str | None = None) -> np.ndarray:
    """The refinement stream and the learned decoding (H, W, C) uint8 -> the refined image, uint8."""
    h, w, c = decoded.shape
    reader = ByteReader(data, "refinement stream")
    steps = np.array([reader.varint() for _ in range(c)], dtype=np.float64)
    if not np.all((steps >= 1) & (steps <= MAX_STEP_UNITS)):
        raise DecodeError(f"a refinement step ({', '.join(f'{s:g}' for s in steps)} / {STEP_UNITS}) is out of range")
    scales = np.frombuffer(reader.take(c * BANDS), dtype=np.uint8)
    if scales.max() >= SCALES:
        raise DecodeError("refinement stream names a table that does not exist")
    escapes = EscapeReader(reader.take(reader.varint()))
    stream = reader.rest()
    bh, bw = -(-h // BLOCK), -(-w // BLOCK)
    t = tables()
    table_grid = scales[_class_grid(c)]
    check_size(stream, table_grid, bh * bw, t)
    symbols = coder.decode_stream(stream, _per_coefficient(table_grid, bh, bw), t, backend=backend)
    symbols = symbols.reshape(c, bh, bw, BLOCK, BLOCK)
    escaped = np.nonzero(symbols == t.escape_symbols[table_grid][:, None, None])  # in coding order
    escaped_values = np.array(escapes.take(len(escaped[0])), dtype=np.float64)
    escapes.finish()
    offsets = t.offsets[table_grid][:, None, None].astype(np.float64)
    scale = (steps / STEP_UNITS)[:, None, None, None, None]
    refined = np.empty_like(decoded)
    for band in _bands(bh):
        values = symbols[:, band] + offsets
        inside = (escaped[1] >= band.start) & (escaped[1] < band.stop)
        k, row, col, u, v = (index[inside] for index in escaped)
        values[k, row - band.start, col, u, v] = escaped_values[inside]
        residual = _from_coefficients(values * scale)
        rows = slice(band.start * BLOCK, min(h, band.stop * BLOCK))
        base = decoded[rows]
        refined[rows] = np.clip(np.rint(base + residual[: base.shape[0], :w]), 0, 255)
    return refined


def check_size(stream: bytes, table_grid: np.ndarray, blocks: int, t: CdfTables) -> None:
    """Refuse a stream too short for its symbols before decoding works for them (see
    LatentCoder.check_stream_sizes): no symbol codes in fewer bits than its table's most probable one."""
    least_bits = blocks * float(t.min_bits()[table_grid].sum())
    if 8 * len(stream) < least_bits / 2:
        raise DecodeError(f"refinement stream is too short for the image size in the header "
                          f"({len(stream)} bytes, at least {least_bits / 16:.0f} needed)")
