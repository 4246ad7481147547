"""The refinement layer (the qualities above REFINED_FROM): its tables, its round trip through the API on
every backend and mode, and damage to it."""

import hashlib

import numpy as np
import pytest

import aecodec
from aecodec import format as aec_format
from aecodec import refine
from aecodec.coder import BACKENDS
from aecodec.coder.tables import PRECISION
from aecodec.errors import DecodeError, OptionError
from aecodec.quality import QUALITY_MAX, REFINED_FROM
from tests.conftest import natural_like


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_tables_are_laplace_cdfs_narrow_to_wide():
    t = refine.tables()
    assert len(t.lengths) == refine.SCALES
    zero = t.cdfs[np.arange(refine.SCALES), -t.offsets + 1] - t.cdfs[np.arange(refine.SCALES), -t.offsets]
    assert np.all(np.diff(zero) < 0)  # P(0) falls as the scale grows
    assert zero[0] > 0.99 * (1 << PRECISION) and zero[-1] < 0.01 * (1 << PRECISION)
    for s in (0, 10, refine.SCALES - 1):  # symmetric around zero
        radius = -int(t.offsets[s])
        freqs = np.diff(t.cdfs[s, : t.lengths[s]])
        np.testing.assert_array_equal(freqs[:radius], freqs[radius + 1 : 2 * radius + 1][::-1])


def test_tables_are_pinned():
    """The tables are part of the format (docs/FORMAT.md, Refined files): a change breaks every refined file."""
    t = refine.tables()
    digest = hashlib.sha256()
    for array in (t.cdfs, t.lengths, t.offsets):
        digest.update(np.ascontiguousarray(array, dtype="<i4").tobytes())
    assert t.cdfs.shape == (refine.SCALES, 2 * refine.RADIUS_MAX + 3)
    assert digest.hexdigest() == "ff2d302e3c6da601f223e7e471029bab3dabf351c0e98d466bc24c3c4e9d6e68"


def test_step_halves_with_each_quality():
    assert refine.plan(REFINED_FROM) is None and refine.plan(REFINED_FROM - 1) is None
    assert refine.plan(REFINED_FROM + 1) == (REFINED_FROM, refine.FIRST_STEP / 2)
    assert refine.plan(REFINED_FROM + 2.5) == (REFINED_FROM, pytest.approx(refine.FIRST_STEP / 2**2.5))


def test_dct_and_colour_transform_are_orthonormal():
    np.testing.assert_allclose(refine.DCT @ refine.DCT.T, np.eye(refine.BLOCK), atol=1e-12)
    np.testing.assert_allclose(refine.COLOUR @ refine.COLOUR.T, np.eye(3), atol=1e-12)
    residual = np.random.default_rng(0).normal(0, 5, (16, 24, 3))
    coefficients = refine._to_coefficients(residual)
    assert np.sum(coefficients**2) == pytest.approx(np.sum(residual**2))
    np.testing.assert_allclose(refine._from_coefficients(coefficients), residual, atol=1e-9)


@pytest.mark.parametrize("quality", [REFINED_FROM + 0.5, 9.0, QUALITY_MAX])
def test_refined_qualities_beat_their_learned_layer(tiny_model, quality):
    image = natural_like(40, 52, seed=1)
    top = aecodec.encode(image, REFINED_FROM, mode="learned", weights=tiny_model)
    data = aecodec.encode(image, quality, mode="learned", weights=tiny_model)
    assert data[4] == aec_format.REFINED_VERSION and top[4] == aec_format.VERSION
    header, streams = aec_format.unpack(data)
    assert (header.quality, header.learned_quality) == (quality, REFINED_FROM)
    _, learned_streams = aec_format.unpack(top)
    assert all(streams[name] == learned_streams[name] for name in learned_streams)  # the same learned layer
    assert aecodec.info(data)["coding"] == "learned + refinement" and aecodec.info(data)["quality"] == quality
    decoded = aecodec.decode(data, weights=tiny_model, precision="float32")
    base = aecodec.decode(top, weights=tiny_model, precision="float32")
    assert psnr(decoded, image) > psnr(base, image) + 0.5
    assert len(data) > len(top)


def test_refinement_follows_the_step(tiny_model):
    """Each quality halves the step: PSNR rises by over 2 dB a quality, and at the finest step the error stays
    within a step."""
    image = natural_like(48, 64, seed=2)
    points = []
    for quality in (8, 9, 10, 11):
        data = aecodec.encode(image, quality, mode="learned", weights=tiny_model)
        decoded = np.asarray(aecodec.decode(data, weights=tiny_model, precision="float32"), np.float64)
        points.append((len(data), psnr(decoded, image)))
    sizes, psnrs = zip(*points)
    assert list(sizes) == sorted(sizes) and list(psnrs) == sorted(psnrs)
    assert psnrs[-1] - psnrs[0] > 6
    top = np.asarray(aecodec.decode(aecodec.encode(image, QUALITY_MAX, mode="learned", weights=tiny_model),
                                    weights=tiny_model, precision="float32"), np.float64)
    assert np.abs(top - image).max() <= 4  # step 2.5: a coefficient's error is below one step


@pytest.mark.parametrize("mode, channels", [("RGB", 3), ("RGBA", 4), ("L", 1), ("LA", 2)])
def test_backends_agree_on_every_mode(tiny_model, mode, channels):
    rgba = np.dstack([natural_like(21, 35, seed=3), np.linspace(0, 255, 21 * 35).reshape(21, 35).astype(np.uint8)])
    pixels = {"RGB": rgba[..., :3], "RGBA": rgba, "L": rgba[..., 1], "LA": rgba[..., 1::2]}[mode]
    files = {backend: aecodec.encode(pixels, 10.25, mode="learned", weights=tiny_model, backend=backend)
             for backend in BACKENDS}
    assert len(set(files.values())) == 1
    data = next(iter(files.values()))
    decoded = [np.asarray(aecodec.decode(data, weights=tiny_model, backend=b, precision="float32")) for b in BACKENDS]
    assert all(np.array_equal(decoded[0], d) for d in decoded)
    assert decoded[0].shape == pixels.shape
    base = np.asarray(aecodec.decode(aecodec.encode(pixels, REFINED_FROM, mode="learned", weights=tiny_model),
                                     weights=tiny_model, precision="float32"))
    colour = slice(0, 1 if channels < 3 else 3)
    if channels > 1 and channels != 3:
        np.testing.assert_array_equal(decoded[0][..., -1], pixels[..., -1])  # alpha stays exact
    as_channels = lambda a: a.reshape(*a.shape[:2], -1)[..., colour]
    assert psnr(as_channels(decoded[0]), as_channels(pixels)) > psnr(as_channels(base), as_channels(pixels)) + 1


def escapes_decoded(data: bytes, tiny_model, monkeypatch) -> int:
    """How many escaped values decoding `data` takes from its refinement's escapes."""
    taken = []

    class Counting(refine.EscapeReader):
        def take(self, n):
            taken.append(n)
            return super().take(n)

    with monkeypatch.context() as patch:
        patch.setattr(refine, "EscapeReader", Counting)
        aecodec.decode(data, weights=tiny_model)
    return sum(taken)


def test_escapes_round_trip(tiny_model, monkeypatch):
    """One dark pixel in a flat image at the finest step: its block's coefficients lie beyond the narrow tables
    that suit every other block."""
    image = np.full((32, 32, 3), 128, np.uint8)
    image[5, 5] = 0
    data = aecodec.encode(image, QUALITY_MAX, mode="learned", weights=tiny_model)
    assert escapes_decoded(data, tiny_model, monkeypatch) > 0
    decoded = np.asarray(aecodec.decode(data, weights=tiny_model, precision="float32"), np.float64)
    assert np.abs(decoded - image).max() <= 4


def test_rate_target_reaches_into_the_refinement(tiny_model):
    image = natural_like(32, 48, seed=4)
    top = aecodec.encode(image, REFINED_FROM, mode="learned", weights=tiny_model)
    budget = 2 * len(top)
    data = aecodec.encode(image, target_bytes=budget, mode="learned", weights=tiny_model)
    assert len(top) < len(data) <= budget
    assert aecodec.info(data)["quality"] > REFINED_FROM


def test_quality_range(tiny_model):
    with pytest.raises(OptionError, match="12"):
        aecodec.encode(natural_like(8, 8), QUALITY_MAX + 0.1, weights=tiny_model)


def _refined_file(tiny_model) -> bytes:
    return aecodec.encode(natural_like(24, 40, seed=5), 9.0, mode="learned", weights=tiny_model)


def _with_refine(data: bytes, refinement: bytes) -> bytes:
    header, streams = aec_format.unpack(data)
    return aec_format.pack(header, {**streams, "refine": refinement})


@pytest.mark.parametrize("damage, message", [  # at: where the steps end, the tables begin
    (lambda r, at: b"\x00" + r[1:], "step"),
    (lambda r, at: r[:at] + bytes([refine.SCALES]) + r[at + 1 :], "table"),
    (lambda r, at: r[: at + 1], "truncated"),
    (lambda r, at: r[:-6], "rANS stream"),
    (lambda r, at: r + b"\x00\x00", "rANS stream"),
])
def test_damaged_refinement_is_a_decode_error(tiny_model, damage, message):
    data = _refined_file(tiny_model)
    _, streams = aec_format.unpack(data)
    reader = aec_format.ByteReader(streams["refine"], "test")
    [reader.varint() for _ in range(3)]
    with pytest.raises(DecodeError, match=message):
        aecodec.decode(_with_refine(data, damage(streams["refine"], reader.pos)), weights=tiny_model)


def test_learned_quality_outside_the_models_range_is_a_decode_error(tiny_model):
    data = _refined_file(tiny_model)
    header, streams = aec_format.unpack(data)
    header.learned_quality = 10.5
    with pytest.raises(DecodeError, match="outside its range"):
        aecodec.decode(aec_format.pack(header, streams), weights=tiny_model)


def test_each_component_has_its_own_step(tiny_model):
    """The encoder gives every component one step; a decoder must apply each component's own."""
    mid_grey = (natural_like(24, 40, seed=5) // 2 + 64).astype(np.uint8)  # little for the refinement to clip
    data = aecodec.encode(mid_grey, 9.0, mode="learned", weights=tiny_model)
    _, streams = aec_format.unpack(data)
    reader = aec_format.ByteReader(streams["refine"], "test")
    steps = [reader.varint() for _ in range(3)]
    assert len(set(steps)) == 1
    rest = streams["refine"][reader.pos :]
    decode = lambda s: np.asarray(aecodec.decode(_with_refine(data, b"".join(map(aec_format.varint, s)) + rest),
                                                 weights=tiny_model, precision="float32"), np.float64)
    same, coarser_chroma = decode(steps), decode([steps[0], 2 * steps[1], 2 * steps[2]])
    # The first component is R + G + B: only the chroma changed, so where no pixel clips at 0 or 255 the
    # channels' mean stays within rounding.
    unclipped = np.all((same > 0) & (same < 255) & (coarser_chroma > 0) & (coarser_chroma < 255), axis=2)
    assert unclipped.mean() > 0.5
    grey_axis = same.mean(axis=2) - coarser_chroma.mean(axis=2)
    assert np.abs(grey_axis[unclipped]).max() <= 1 and np.abs(same - coarser_chroma).max() > 2


def test_bands_change_nothing(tiny_model, monkeypatch):
    """Coding and decoding a few block rows at a time (to bound memory) gives the bytes and pixels of one band,
    escapes included."""
    image = natural_like(70, 36, seed=6)  # 9 block rows, the last one cut
    image[[5, 30, 60, 69], [3, 20, 35, 0]] = 0  # outliers for the escapes, in four bands
    whole = aecodec.encode(image, QUALITY_MAX, mode="learned", weights=tiny_model)
    assert escapes_decoded(whole, tiny_model, monkeypatch) > 0
    expected = np.asarray(aecodec.decode(whole, weights=tiny_model, precision="float32"))
    monkeypatch.setattr(refine, "BAND_BLOCK_ROWS", 2)
    assert aecodec.encode(image, QUALITY_MAX, mode="learned", weights=tiny_model) == whole
    np.testing.assert_array_equal(np.asarray(aecodec.decode(whole, weights=tiny_model, precision="float32")), expected)


def test_activity_counts_nonzero_latents_per_position():
    y = np.zeros((192, 1, 5), np.int64)
    for column, nonzero in enumerate((8, 9, 36, 81, 192)):
        y[:nonzero, 0, column] = np.where(np.arange(nonzero) % 2, 3, -1)
    np.testing.assert_array_equal(refine.activity(y), [[0, 1, 2, 3, 3]])
    # A 16x16 latent position covers 2x2 blocks; an image of 3x5 blocks uses 2x3 positions.
    blocks = refine._block_activity(np.arange(12).reshape(3, 4), 3, 5)
    np.testing.assert_array_equal(blocks, [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [4, 4, 5, 5, 6]])


def test_stream_names_one_table_per_present_class():
    blocks = np.array([[1, 1, 3], [3, 1, 1]])
    present = refine._present_classes(3, blocks)
    assert list(present) == sorted(set(present)) and len(present) == 2 * 3 * refine.BANDS
    assert set(present // (3 * refine.BANDS)) == {1, 3}


def test_older_readers_refuse_refined_files_by_their_version(tiny_model, monkeypatch):
    """aecodec 0.13.0 reads versions 1 and 2: its check, replayed here, refuses a refined file by its version."""
    data = _refined_file(tiny_model)
    monkeypatch.setattr(aec_format, "VERSIONS", (aec_format.VERSION, aec_format.LOSSLESS_VERSION))
    with pytest.raises(DecodeError, match="unsupported .aec format version 3"):
        aecodec.decode(data, weights=tiny_model)
