"""Lossless coding and the auto choice: exact round trips in every mode, the version-2 container, the
rule that picks lossless for synthetic images and never for photos, rate control, CLI, conformance."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aecodec
from aecodec import api
from aecodec import format as aec
from aecodec.cli import main
from bench import synthetic

from conftest import natural_like

CONFORMANCE = Path(__file__).parent / "data" / "conformance" / "lossless"


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_every_mode_round_trips_exactly(channels):
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 256, (37, 53, channels), dtype=np.uint8)
    if channels in (2, 4):
        pixels[:10, :, -1] = 0  # WebP would drop the colour under alpha 0 without exact=True
    pixels = pixels[:, :, 0] if channels == 1 else pixels
    data = aecodec.encode(pixels, lossless=True)
    assert data[4] == aec.LOSSLESS_VERSION and aecodec.info(data)["coding"] == "lossless (webp)"
    out = aecodec.decode(data)
    assert out.mode == ("L", "LA", "RGB", "RGBA")[channels - 1]
    np.testing.assert_array_equal(_pixels(out), pixels)


def test_sixteen_bit_grey_keeps_sixteen_bits(tiny_model):
    grey16 = np.random.default_rng(0).integers(0, 65536, (20, 30)).astype(np.uint16)
    for source in (grey16, Image.fromarray(grey16)):
        out = aecodec.decode(aecodec.encode(source, mode="lossless"))
        assert out.mode == "I;16"
        np.testing.assert_array_equal(_pixels(out), grey16)


def test_what_lossless_cannot_keep_is_refused(tiny_model):
    colour16 = np.random.default_rng(0).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    with pytest.raises(aecodec.ImageError, match="16-bit colour"):
        aecodec.encode(colour16, lossless=True)
    # auto has no exact file to offer: it codes the top 8 bits with the model, as before
    assert aecodec.encode(colour16, 4, weights=tiny_model) == aecodec.encode(colour16, 4, mode="learned", weights=tiny_model)
    wide = np.array(Image.new("I", (4, 3), 70000))
    with pytest.raises(aecodec.ImageError, match="outside 0..65535"):
        aecodec.encode(Image.fromarray(wide.astype(np.int32)), lossless=True)


def test_beyond_webp_size_limit_uses_png():
    pixels = np.random.default_rng(1).integers(0, 256, (2, 16400, 4), dtype=np.uint8)
    data = aecodec.encode(pixels, lossless=True)
    assert aecodec.info(data)["coding"] == "lossless (png)"
    np.testing.assert_array_equal(_pixels(aecodec.decode(data)), pixels)
    grey = pixels[:, :, 0]
    np.testing.assert_array_equal(_pixels(aecodec.decode(aecodec.encode(grey, lossless=True))), grey)


@pytest.mark.parametrize("options,message", [
    ({"mode": "jpeg"}, "mode must be one of"),
    ({"mode": "learned", "lossless": True}, "contradicts"),
    ({"lossless": True, "quality": 5}, "no quality"),
    ({"mode": "lossless", "target_bpp": 1.0}, "no quality"),
])
def test_bad_options(options, message):
    with pytest.raises(aecodec.OptionError, match=message):
        aecodec.encode(natural_like(8, 8), **options)


def test_damaged_lossless_files_fail():
    data = aecodec.encode(natural_like(16, 16), lossless=True)
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x10
        with pytest.raises(aecodec.DecodeError):
            aecodec.decode(bytes(damaged))
    # a well-formed container around a payload that disagrees with its header
    header = aec.Header("RGB", None, None, 17, 16, coding="webp")
    other = aec.pack_lossless(header, aec.unpack(data)[1]["image"])
    with pytest.raises(aecodec.DecodeError, match="header says 17x16"):
        aecodec.decode(other)
    grey_header = aec.Header("L", None, None, 16, 16, coding="webp")
    with pytest.raises(aecodec.DecodeError, match="grey image holds colour"):
        aecodec.decode(aec.pack_lossless(grey_header, aec.unpack(data)[1]["image"]))
    with pytest.raises(aecodec.DecodeError, match="unknown lossless coding"):
        aec.unpack(data[:6] + bytes([9]) + data[7:])


def test_version_one_reader_refuses_lossless_files(monkeypatch):
    """aecodec 0.1.0 reads version 1 only: its check, replayed here, refuses a lossless file by its version."""
    data = aecodec.encode(natural_like(16, 16), lossless=True)
    monkeypatch.setattr(aec, "VERSIONS", (aec.VERSION,))
    with pytest.raises(aecodec.DecodeError, match="unsupported .aec format version 2"):
        aecodec.decode(data)


def test_auto_keeps_photos_learned():
    model = aecodec.load_model()
    for seed in range(2):
        photo = natural_like(128, 192, seed=seed)
        for quality in (1, 6, 10):
            learned = aecodec.encode(photo, quality, mode="learned", weights=model)
            assert learned[4] == (aec.REFINED_VERSION if quality > 7 else aec.VERSION)
            assert aecodec.encode(photo, quality, weights=model) == learned


@pytest.mark.parametrize("name", ["ui", "chart", "lineart"])
def test_auto_stores_synthetic_images_exactly(name):
    pixels = synthetic.SYNTHETIC[name](256, 192, seed=1)
    data = aecodec.encode(pixels)
    assert aecodec.info(data)["coding"] == "lossless (webp)"
    np.testing.assert_array_equal(_pixels(aecodec.decode(data)), pixels)
    webp = io.BytesIO()
    Image.fromarray(pixels).save(webp, format="WEBP", lossless=True)
    assert len(data) <= 1.1 * webp.tell()


def test_prefer_lossless_weighs_bits_against_distortion():
    picture = api.images.load(np.zeros((10, 20, 3), np.uint8))
    decoded = Image.fromarray(np.full((10, 20, 3), 10, np.uint8))  # MSE 100
    bits_per_byte = 8 / 200
    lam = 0.0130  # quality 6's lambda: 100 * lambda = 1.3 bpp of distortion
    assert api._prefer_lossless(picture, 6.0, decoded, 100, 100 + int(1.2 / bits_per_byte))
    assert not api._prefer_lossless(picture, 6.0, decoded, 100, 100 + int(1.4 / bits_per_byte))
    assert abs(float(api.lambda_for(api.torch.tensor([6.0]))) - lam) < 1e-6


def test_rate_control_takes_the_exact_file_when_it_fits(tiny_model):
    pixels = synthetic.line_art(128, 96)
    exact = aecodec.encode(pixels, lossless=True)
    assert aecodec.encode(pixels, target_bytes=len(exact), weights=tiny_model) == exact
    smaller = aecodec.encode(pixels, target_bytes=len(exact) - 1, weights=tiny_model)
    assert aecodec.info(smaller)["coding"] == "learned" and len(smaller) < len(exact)


def test_cli_modes(tmp_path, tiny_weights, capsys):
    src = tmp_path / "in.png"
    Image.fromarray(synthetic.pillow_chart(96, 64)).save(src)
    assert main(["compress", str(src), str(tmp_path / "a.aec"), "--lossless", "-q"]) == 0
    assert main(["info", str(tmp_path / "a.aec")]) == 0
    assert "lossless (webp)" in capsys.readouterr().out
    assert main(["compress", str(src), str(tmp_path / "b.aec"), "--mode", "learned", "--weights", str(tiny_weights)]) == 0
    assert "learned, quality 6" in capsys.readouterr().out
    assert main(["compress", str(src), str(tmp_path / "c.aec"), "--mode", "fast"]) == 1
    assert "mode must be one of" in capsys.readouterr().err
    assert main(["compress", str(src), str(tmp_path / "c.aec"), "--lossless", "--mode", "learned"]) == 1
    assert "contradicts" in capsys.readouterr().err
    assert not (tmp_path / "c.aec").exists()
    assert main(["decompress", str(tmp_path / "a.aec"), str(tmp_path / "a.png")]) == 0
    np.testing.assert_array_equal(_pixels(Image.open(tmp_path / "a.png")), _pixels(Image.open(src)))


def test_pillow_plugin_lossless(tmp_path):
    pixels = synthetic.line_art(64, 48)
    Image.fromarray(pixels).save(tmp_path / "x.aec", lossless=True)
    with Image.open(tmp_path / "x.aec") as img:
        assert img.info["coding"] == "webp" and img.mode == "RGB"
        np.testing.assert_array_equal(_pixels(img), pixels)


@pytest.mark.parametrize("name", ["L", "LA", "RGB", "RGBA", "I16"])
def test_conformance(name):
    data = (CONFORMANCE / f"{name}.aec").read_bytes()
    expected = np.load(CONFORMANCE / f"{name}.npy")
    out = aecodec.decode(data)
    assert out.mode == {"I16": "I;16"}.get(name, name)
    np.testing.assert_array_equal(_pixels(out), expected)


def test_conformance_generator_is_the_one_that_wrote_them(tmp_path):
    """bench.conformance --lossless draws the shipped pixels, its files decode to them, and it never
    overwrites the shipped folder."""
    from bench import conformance

    conformance.write_lossless(tmp_path)
    for name in ("L", "LA", "RGB", "RGBA", "I16"):
        expected = np.load(CONFORMANCE / f"{name}.npy")
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), expected)
        np.testing.assert_array_equal(_pixels(aecodec.decode((tmp_path / f"{name}.aec").read_bytes())), expected)
    with pytest.raises(SystemExit, match="never regenerated"):
        conformance.main(["--lossless"])
