"""encode/decode end to end: inputs, modes, sizes, backends, bad data."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

import aecodec
from aecodec import format as aec
from aecodec.coder import BACKENDS

from conftest import natural_like


@pytest.mark.parametrize("height,width", [(1, 1), (17, 33), (300, 513), (64, 64), (65, 1)])
def test_any_size_round_trips(tiny_model, height, width):
    img = natural_like(height, width)
    data = aecodec.encode(img, 4, weights=tiny_model)
    out = aecodec.decode(data, weights=tiny_model)
    assert out.size == (width, height) and out.mode == "RGB"
    meta = aecodec.info(data)
    assert (meta["width"], meta["height"]) == (width, height)


@pytest.mark.parametrize("channels,mode", [(None, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_modes(tiny_model, channels, mode):
    rng = np.random.default_rng(0)
    base = natural_like(40, 50)
    img = base[:, :, 0] if channels is None else np.dstack([base, rng.integers(0, 256, (40, 50), dtype=np.uint8)])[:, :, :channels]
    if channels == 2:
        img = np.dstack([base[:, :, 0], rng.integers(0, 256, (40, 50), dtype=np.uint8)])
    out = aecodec.decode(aecodec.encode(img, 4, weights=tiny_model), weights=tiny_model)
    assert out.mode == mode
    if mode in ("LA", "RGBA"):
        np.testing.assert_array_equal(np.asarray(out)[:, :, -1], img[:, :, -1])  # alpha is lossless


def test_input_kinds_agree(tiny_model, tmp_path):
    img = natural_like(33, 47)
    path = tmp_path / "in.png"
    Image.fromarray(img).save(path)
    expected = aecodec.encode(img, 5, weights=tiny_model)
    tensor = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    for source in (path, str(path), Image.fromarray(img), tensor, tensor[None], torch.from_numpy(img).permute(2, 0, 1)):
        assert aecodec.encode(source, 5, weights=tiny_model) == expected


def test_sixteen_bit_and_palette_inputs(tiny_model):
    grey16 = (natural_like(20, 30)[:, :, 0].astype(np.uint16) * 257)
    out = aecodec.decode(aecodec.encode(Image.fromarray(grey16), 4, weights=tiny_model), weights=tiny_model)
    assert out.mode == "L"
    learned = {"mode": "learned", "weights": tiny_model}  # the learned path codes 16-bit grey's top 8 bits
    assert aecodec.encode(grey16, 4, **learned) == aecodec.encode((grey16 >> 8).astype(np.uint8), 4, **learned)
    palette = Image.fromarray(natural_like(20, 30)).convert("P")
    assert aecodec.decode(aecodec.encode(palette, 4, weights=tiny_model), weights=tiny_model).mode == "RGB"
    cmyk = Image.fromarray(natural_like(20, 30)).convert("CMYK")
    assert aecodec.decode(aecodec.encode(cmyk, 4, weights=tiny_model), weights=tiny_model).mode == "RGB"


def test_exif_orientation_is_applied(tiny_model):
    img = Image.fromarray(natural_like(20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    out = aecodec.decode(aecodec.encode(Image.open(buf), 4, weights=tiny_model), weights=tiny_model)
    assert out.size == (20, 30)


def test_refuses_bad_images(tiny_model, tmp_path):
    frames = [Image.fromarray(natural_like(8, 8, seed=s)) for s in range(2)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    with pytest.raises(aecodec.ImageError, match="multi-frame"):
        aecodec.encode(gif, weights=tiny_model)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(aecodec.ImageError, match="cannot read"):
        aecodec.encode(tmp_path / "junk.png", weights=tiny_model)
    with pytest.raises(aecodec.ImageError):
        aecodec.encode(np.zeros((4, 4, 5), np.uint8), weights=tiny_model)
    with pytest.raises(aecodec.ImageError):
        aecodec.encode(np.full((4, 4), np.nan), weights=tiny_model)
    with pytest.raises(aecodec.ImageError):
        aecodec.encode(object(), weights=tiny_model)
    with pytest.raises(ValueError, match="quality"):
        aecodec.encode(natural_like(8, 8), aecodec.QUALITY_MAX + 1, weights=tiny_model)


def test_lazy_exports():
    """The package's exports load on first use; a typo is an AttributeError, not an import of everything."""
    assert set(aecodec.__all__) <= set(dir(aecodec))
    assert all(getattr(aecodec, name) is not None for name in aecodec.__all__)
    with pytest.raises(AttributeError, match="no_such_name"):
        aecodec.no_such_name


@pytest.mark.parametrize("encoder", sorted(BACKENDS))
@pytest.mark.parametrize("decoder", sorted(BACKENDS))
def test_backends_are_interchangeable(tiny_model, encoder, decoder):
    img = natural_like(70, 90)
    data = aecodec.encode(img, 6.5, weights=tiny_model, backend=encoder)
    assert data == aecodec.encode(img, 6.5, weights=tiny_model, backend="python")
    out = np.asarray(aecodec.decode(data, weights=tiny_model, backend=decoder))
    reference = np.asarray(aecodec.decode(data, weights=tiny_model, backend="python"))
    np.testing.assert_array_equal(out, reference)


def test_escapes_are_exercised(tiny_model):
    data = aecodec.encode(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8), 8, weights=tiny_model)
    assert aecodec.info(data)["streams"]["escapes"] > 0
    aecodec.decode(data, weights=tiny_model)


def test_unknown_model_and_damage(tiny_model):
    data = aecodec.encode(natural_like(20, 20), 4, weights=tiny_model)
    header, streams = aec.unpack(data)
    header.model_id = b"\x01" * 8
    with pytest.raises(aecodec.DecodeError, match="model 0101"):
        aecodec.decode(aec.pack(header, streams), weights=tiny_model)
    with pytest.raises(aecodec.DecodeError):
        aecodec.decode(data[:-1], weights=tiny_model)


def test_desync_is_detected_not_decoded(tiny_model):
    """A well-formed file whose latents disagree with what the decoder derives raises, never returns an image."""
    data = aecodec.encode(natural_like(64, 64), 4, weights=tiny_model)
    header, streams = aec.unpack(data)
    header.symbols_crc ^= 1
    with pytest.raises(aecodec.DecodeError, match="checksum"):
        aecodec.decode(aec.pack(header, streams), weights=tiny_model)


def test_shipped_model_round_trip():
    """The shipped weights decode a photo-like image to a recognisable copy, and bpp grows with quality."""
    img = natural_like(128, 192, seed=5)
    sizes, psnrs = [], []
    for quality in (1, 3, 6, 8, 10):
        data = aecodec.encode(img, quality)
        out = np.asarray(aecodec.decode(data)).astype(np.float64)
        sizes.append(len(data))
        psnrs.append(10 * np.log10(255**2 / np.mean((out - img) ** 2)))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert psnrs[-1] > psnrs[0]
    assert psnrs[2] > 30, psnrs


def test_rate_control_finds_the_best_quality_that_fits(tiny_model, photo):
    low, high = (len(aecodec.encode(photo, q, weights=tiny_model)) for q in (2.0, 6.0))
    budget = (low + high) // 2
    data = aecodec.encode(photo, target_bytes=budget, weights=tiny_model)
    quality = aecodec.info(data)["quality"]
    assert len(data) <= budget and 2.0 < quality < 6.0
    # the next quality step would not fit: the search stopped at the boundary, not just anywhere below it
    assert len(aecodec.encode(photo, round(quality + 0.01, 3), weights=tiny_model)) > budget
    assert np.asarray(aecodec.decode(data, weights=tiny_model)).shape == photo.shape
    pixels = photo.shape[0] * photo.shape[1]
    assert aecodec.encode(photo, target_bpp=8 * budget / pixels, weights=tiny_model) == data


def test_rate_control_refuses_what_it_cannot_meet(tiny_model, photo):
    smallest = len(aecodec.encode(photo, 1.0, weights=tiny_model))
    with pytest.raises(ValueError, match=f"smallest file.*{smallest} bytes"):
        aecodec.encode(photo, target_bytes=smallest - 1, weights=tiny_model)
    with pytest.raises(ValueError, match="one of"):
        aecodec.encode(photo, 3.0, target_bpp=0.5, weights=tiny_model)
    with pytest.raises(ValueError, match="positive"):
        aecodec.encode(photo, target_bpp=float("nan"), weights=tiny_model)
    largest = aecodec.encode(photo, aecodec.QUALITY_MAX, mode="learned", weights=tiny_model)
    assert aecodec.encode(photo, target_bytes=10**9, mode="learned", weights=tiny_model) == largest
    assert aecodec.info(aecodec.encode(photo, target_bytes=10**9, weights=tiny_model))["coding"] == "lossless (webp)"
