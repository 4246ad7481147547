"""The refinement layer: the top qualities add the learned file's residual, transform-coded.

The learned transforms flatten out near 35.5 dB on Kodak whatever the rate (README, Models), and from
about quality 7 up each further dB costs the model more bits than a classic coder spends on what it misses.
So a quality above REFINED_FROM codes the image at REFINED_FROM, then the difference between the image and
that file's decoded pixels as a classic codec would: an orthonormal colour transform, 8x8 orthonormal DCTs,
uniform quantization (a step per colour component), and rANS coding of the integers with a two-sided geometric
(discrete Laplace) table per colour, frequency band and activity (how busy the learned layer's latents are
there), chosen by the encoder from a fixed family.

The symbols, and so the bitstream, are exact on every backend; the pixels they add to are the learned
decoder's, so like those they may differ by a fraction of a level with the synthesis precision.
"""

from __future__ import annotations

import functools
from decimal import Decimal, localcontext

import numpy as np

from . import coder
from . import image as images
from .coder.tables import MAX_QUANTIZED, PRECISION, CdfTables, code_lengths, lanes_for_size
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
# The encoder rounds |coefficient| / step up from 0.75, not 0.5: a dead zone, as video encoders use for
# Laplacian-like coefficients (it zeroes coefficients that would cost more bits than the error they remove).
ROUNDING = 0.25
# Table s is the discrete Laplace distribution with scale SCALE_MIN * SCALE_RATIO**s (in steps).
SCALES = 36
SCALE_MIN = Decimal("0.1")
SCALE_RATIO = Decimal("1.25")
RADIUS_MAX = 2047  # values beyond a table's radius (at most this) are escaped
BAND_BLOCK_ROWS = 32  # blocks rows coded or decoded at a time
# A block's activity class: how many of the learned layer's latents at its 16x16 position are not zero
# (at least 9, 36, 81). Busy areas leave bigger residuals: a table per activity class saved 3.8 % of the
# refined files' bits (BD-rate, 20 training photos).
ACTIVITY_BOUNDS = (9, 36, 81)
ACTIVITIES = len(ACTIVITY_BOUNDS) + 1
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


def activity(y_values: np.ndarray) -> np.ndarray:
    """The learned layer's quantized latents (M, h, w) -> (h, w) uint8 activity classes, 0 .. ACTIVITIES - 1."""
    nonzero = np.count_nonzero(y_values, axis=0)
    return sum((nonzero >= bound).astype(np.uint8) for bound in ACTIVITY_BOUNDS)


def _block_activity(activity_map: np.ndarray, blocks_high: int, blocks_wide: int) -> np.ndarray:
    """(bh, bw): each 8x8 block's activity, that of the 16x16 latent position it lies in."""
    return activity_map[: -(-blocks_high // 2), : -(-blocks_wide // 2)].repeat(2, 0).repeat(2, 1)[:blocks_high, :blocks_wide]


def _class_grid(channels: int) -> np.ndarray:
    """(ACTIVITIES, C, 8, 8): each coefficient's class, (activity * C + component) * BANDS + u + v."""
    band = np.add.outer(np.arange(BLOCK), np.arange(BLOCK))
    return (np.arange(ACTIVITIES)[:, None, None, None] * channels + np.arange(channels)[:, None, None]) * BANDS + band


def _per_coefficient(grid: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """grid (ACTIVITIES, C, 8, 8) looked up by each block's activity, in coding order (component, block row,
    block column, u, v): one contiguous int32 array."""
    return np.ascontiguousarray(grid[blocks].transpose(2, 0, 1, 3, 4), dtype=np.int32).ravel()


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


def _choose_scales(values: np.ndarray, blocks: np.ndarray, t: CdfTables) -> tuple[np.ndarray, float]:
    """values (C, bh, bw, 8, 8), blocks' activities (bh, bw) -> (per class, the table that codes its values
    in the fewest bits (escapes included); those bits in all)."""
    span = RADIUS_MAX + 1
    c = values.shape[0]
    classes = _class_grid(c)
    hist = np.zeros((classes.size, 2 * span + 1))
    by_activity = blocks.ravel().astype(np.int64) * (2 * span + 1)
    for k in range(c):
        for u in range(BLOCK):
            for v in range(BLOCK):
                clipped = np.clip(values[k, :, :, u, v].ravel(), -span, span) + span
                counts = np.bincount(by_activity + clipped, minlength=ACTIVITIES * (2 * span + 1))
                hist[classes[:, k, u, v]] += counts.reshape(ACTIVITIES, 2 * span + 1)
    grid = np.arange(-span, span + 1)
    lengths = t.cached("code_lengths", code_lengths)
    costs = np.empty((SCALES, 2 * span + 1))
    for s in range(SCALES):
        radius = -int(t.offsets[s])
        inside = np.abs(grid) <= radius
        costs[s, inside] = lengths[s, grid[inside] + radius]
        costs[s, ~inside] = lengths[s, t.escape_symbols[s]] + _escape_bits(grid[~inside])
    class_costs = hist @ costs.T
    return np.argmin(class_costs, axis=1).astype(np.uint8), float(class_costs.min(axis=1).sum())


def _present_classes(c: int, blocks: np.ndarray) -> np.ndarray:
    """The classes whose activity some block has, in class order: those the stream names a table for."""
    return np.unique(_class_grid(c)[np.unique(blocks)])


def _bands(blocks_high: int):
    """Slices of block rows: the float temporaries are a band's, not the image's (a 24 MP image's
    coefficients are 580 MB in float64)."""
    for start in range(0, blocks_high, BAND_BLOCK_ROWS):
        yield slice(start, min(blocks_high, start + BAND_BLOCK_ROWS))


def encode(original: np.ndarray, decoded: np.ndarray, activity_map: np.ndarray, step: float,
           backend: str | None = None) -> bytes:
    """(H, W, C) uint8 image, its learned decoding (C = 1 or 3) and that decoding's activity map -> the
    refinement stream: per component a varint step in 1/STEP_UNITS | a table index per present class |
    varint escape bytes | escapes | rANS stream. Every component gets `step`: equal steps minimise the
    RGB squared error the bits buy."""
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
    blocks = _block_activity(activity_map, bh, bw)
    scales, bits = _choose_scales(values, blocks, t)
    table_grid = scales[_class_grid(c)]
    symbols = np.empty_like(values)
    escaped = np.empty(values.shape, dtype=bool)
    for k in range(c):  # a component at a time: the temporaries are a third of the image's
        grid = table_grid[:, k][blocks]
        escape = t.escape_symbols[grid]
        symbols[k] = values[k] - t.offsets[grid]
        escaped[k] = (symbols[k] < 0) | (symbols[k] >= escape)
        symbols[k][escaped[k]] = escape[escaped[k]]
    escapes = b"".join(varint(zigzag(int(v))) for v in values[escaped])
    del values, escaped  # the coder's arrays take their place
    stream = coder.encode_stream(symbols.ravel(), _per_coefficient(table_grid, blocks), t,
                                 lanes=lanes_for_size(symbols.size, bits / 8), backend=backend)
    named = scales[_present_classes(c, blocks)].tobytes()
    return varint(step_units) * c + named + varint(len(escapes)) + escapes + stream


def decode(data: bytes, decoded: np.ndarray, activity_map: np.ndarray, backend: str | None = None) -> np.ndarray:
    """The refinement stream, the learned decoding (H, W, C) uint8 and its activity map -> the refined
    image, uint8."""
    h, w, c = decoded.shape
    reader = ByteReader(data, "refinement stream")
    steps = np.array([reader.varint() for _ in range(c)], dtype=np.float64)
    if not np.all((steps >= 1) & (steps <= MAX_STEP_UNITS)):
        raise DecodeError(f"a refinement step ({', '.join(f'{s:g}' for s in steps)} / {STEP_UNITS}) is out of range")
    bh, bw = -(-h // BLOCK), -(-w // BLOCK)
    blocks = _block_activity(activity_map, bh, bw)
    present = _present_classes(c, blocks)
    scales = np.zeros(_class_grid(c).size, dtype=np.uint8)
    scales[present] = np.frombuffer(reader.take(len(present)), dtype=np.uint8)
    if scales.max() >= SCALES:
        raise DecodeError("refinement stream names a table that does not exist")
    escapes = EscapeReader(reader.take(reader.varint()))
    stream = reader.rest()
    t = tables()
    table_grid = scales[_class_grid(c)]
    check_size(stream, table_grid, blocks, t)
    indexes = _per_coefficient(table_grid, blocks)
    symbols = coder.decode_stream(stream, indexes, t, backend=backend)
    escaped = np.flatnonzero(symbols == t.escape_symbols[indexes])  # in coding order
    escaped_values = np.array(escapes.take(len(escaped)), dtype=np.float64)
    escapes.finish()
    values = (symbols + t.offsets[indexes]).reshape(c, bh, bw, BLOCK, BLOCK)
    del symbols, indexes
    escaped = np.unravel_index(escaped, values.shape)
    scale = (steps / STEP_UNITS)[:, None, None, None, None]
    refined = np.empty_like(decoded)
    for band in _bands(bh):
        coefficients = values[:, band] * scale
        inside = (escaped[1] >= band.start) & (escaped[1] < band.stop)
        k, row, col, u, v = (index[inside] for index in escaped)
        coefficients[k, row - band.start, col, u, v] = escaped_values[inside] * scale[k, 0, 0, 0, 0]
        residual = _from_coefficients(coefficients)
        rows = slice(band.start * BLOCK, min(h, band.stop * BLOCK))
        base = decoded[rows]
        refined[rows] = np.clip(np.rint(base + residual[: base.shape[0], :w]), 0, 255)
    return refined


def check_size(stream: bytes, table_grid: np.ndarray, blocks: np.ndarray, t: CdfTables) -> None:
    """Refuse a stream too short for its symbols before decoding works for them (see
    LatentCoder.check_stream_sizes): no symbol codes in fewer bits than its table's most probable one."""
    per_block = t.min_bits()[table_grid].reshape(ACTIVITIES, -1).sum(axis=1)
    least_bits = float(np.bincount(blocks.ravel(), minlength=ACTIVITIES) @ per_block)
    if 8 * len(stream) < least_bits / 2:
        raise DecodeError(f"refinement stream is too short for the image size in the header "
                          f"({len(stream)} bytes, at least {least_bits / 16:.0f} needed)")
