"""The refinement layer (qualities above the model's range): its tables, its round trip through the API on
every backend and mode, and damage to it."""

import numpy as np
import pytest

import aecodec
from aecodec import format as aec_format
from aecodec import refine
from aecodec.coder import BACKENDS
from aecodec.coder.tables import PRECISION
from aecodec.errors import DecodeError, OptionError
from aecodec.quality import LEARNED_MAX, QUALITY_MAX
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


def test_step_halves_with_each_quality():
    assert refine.step_for(11) == refine.STEP_AT_11
    assert refine.step_for(12.5) == pytest.approx(refine.STEP_AT_11 / 2**1.5)
    for bad in (LEARNED_MAX, QUALITY_MAX + 0.5):
        with pytest.raises(ValueError):
            refine.step_for(bad)


def test_dct_and_colour_transform_are_orthonormal():
    np.testing.assert_allclose(refine.DCT @ refine.DCT.T, np.eye(refine.BLOCK), atol=1e-12)
    np.testing.assert_allclose(refine.COLOUR @ refine.COLOUR.T, np.eye(3), atol=1e-12)
    residual = np.random.default_rng(0).normal(0, 5, (16, 24, 3))
    coefficients = refine._to_coefficients(residual)
    assert np.sum(coefficients**2) == pytest.approx(np.sum(residual**2))
    np.testing.assert_allclose(refine._from_coefficients(coefficients), residual, atol=1e-9)


@pytest.mark.parametrize("quality", [10.5, 12.0, QUALITY_MAX])
def test_refined_qualities_beat_the_models_top(tiny_model, quality):
    image = natural_like(40, 52, seed=1)
    top = aecodec.encode(image, LEARNED_MAX, mode="learned", weights=tiny_model)
    data = aecodec.encode(image, quality, mode="learned", weights=tiny_model)
    assert data[4] == aec_format.REFINED_VERSION and top[4] == aec_format.VERSION
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
    for quality in (11, 12, 13, 14):
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
    files = {backend: aecodec.encode(pixels, 12.25, mode="learned", weights=tiny_model, backend=backend)
             for backend in BACKENDS}
    assert len(set(files.values())) == 1
    data = next(iter(files.values()))
    decoded = [np.asarray(aecodec.decode(data, weights=tiny_model, backend=b, precision="float32")) for b in BACKENDS]
    assert all(np.array_equal(decoded[0], d) for d in decoded)
    assert decoded[0].shape == pixels.shape
    base = np.asarray(aecodec.decode(aecodec.encode(pixels, LEARNED_MAX, mode="learned", weights=tiny_model),
                                     weights=tiny_model, precision="float32"))
    colour = slice(0, 1 if channels < 3 else 3)
    if channels > 1 and channels != 3:
        np.testing.assert_array_equal(decoded[0][..., -1], pixels[..., -1])  # alpha stays exact
    as_channels = lambda a: a.reshape(*a.shape[:2], -1)[..., colour]
    assert psnr(as_channels(decoded[0]), as_channels(pixels)) > psnr(as_channels(base), as_channels(pixels)) + 1


def test_escapes_round_trip(tiny_model):
    """One dark pixel in a flat image at the finest step: its block's coefficients lie beyond the narrow tables
    that suit every other block."""
    image = np.full((32, 32, 3), 128, np.uint8)
    image[5, 5] = 0
    data = aecodec.encode(image, QUALITY_MAX, mode="learned", weights=tiny_model)
    _, streams = aec_format.unpack(data)
    reader = aec_format.ByteReader(streams["refine"], "test")
    reader.varint(), reader.take(3 * refine.BANDS)
    assert reader.varint() > 0  # escapes were needed
    decoded = np.asarray(aecodec.decode(data, weights=tiny_model, precision="float32"), np.float64)
    assert np.abs(decoded - image).max() <= 4


def test_rate_target_reaches_into_the_refinement(tiny_model):
    image = natural_like(32, 48, seed=4)
    top = aecodec.encode(image, LEARNED_MAX, mode="learned", weights=tiny_model)
    budget = 2 * len(top)
    data = aecodec.encode(image, target_bytes=budget, mode="learned", weights=tiny_model)
    assert len(top) < len(data) <= budget
    assert aecodec.info(data)["quality"] > LEARNED_MAX


def test_quality_range(tiny_model):
    with pytest.raises(OptionError, match="15"):
        aecodec.encode(natural_like(8, 8), QUALITY_MAX + 0.1, weights=tiny_model)


def _refined_file(tiny_model) -> bytes:
    return aecodec.encode(natural_like(24, 40, seed=5), 12.0, mode="learned", weights=tiny_model)


def _with_refine(data: bytes, refinement: bytes) -> bytes:
    header, streams = aec_format.unpack(data)
    return aec_format.pack(header, {**streams, "refine": refinement})


@pytest.mark.parametrize("damage, message", [  # at: where the step's varint ends, the tables begin
    (lambda r, at: b"\x00" + r[at:], "step"),
    (lambda r, at: r[:at] + bytes([refine.SCALES]) + r[at + 1 :], "table"),
    (lambda r, at: r[: at + 3 * refine.BANDS], "truncated"),
    (lambda r, at: r[:-6], "rANS stream"),
    (lambda r, at: r + b"\x00\x00", "rANS stream"),
])
def test_damaged_refinement_is_a_decode_error(tiny_model, damage, message):
    data = _refined_file(tiny_model)
    _, streams = aec_format.unpack(data)
    reader = aec_format.ByteReader(streams["refine"], "test")
    reader.varint()
    with pytest.raises(DecodeError, match=message):
        aecodec.decode(_with_refine(data, damage(streams["refine"], reader.pos)), weights=tiny_model)


def test_quality_must_match_the_coding(tiny_model):
    data = _refined_file(tiny_model)
    header, streams = aec_format.unpack(data)
    for quality, kept in ((LEARNED_MAX, streams), (12.0, {k: v for k, v in streams.items() if k != "refine"})):
        header.quality = quality
        with pytest.raises(DecodeError, match="does not match the file's coding"):
            aecodec.decode(aec_format.pack(header, kept), weights=tiny_model)
