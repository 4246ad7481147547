"""The error contract: every error aecodec raises on purpose is an AecError of a class that names its
cause; the CLI turns those (and OS errors) into one line and exit 1 (a reader that left early: a quiet
141), while a bug keeps its traceback."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import aecodec
from aecodec import AecError, DecodeError, ImageError, OptionError, WeightsError
from aecodec.cli import main
from aecodec.coder import BACKENDS, CdfTables, decode_stream, encode_stream
from conftest import natural_like


@pytest.mark.parametrize("cls", [DecodeError, ImageError, OptionError, WeightsError])
def test_every_class_is_an_aec_error(cls):
    assert issubclass(cls, AecError)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"quality": 12.5}, "quality must be"),
        ({"quality": "high"}, "quality must be a number"),
        ({"quality": 3, "target_bpp": 1.0}, "one of"),
        ({"target_bytes": -5}, "positive"),
        ({"target_bytes": 10}, "cannot fit"),
        ({"quality": 3, "backend": "fortran"}, "unknown backend"),
    ],
)
def test_bad_options_are_option_errors(tiny_model, photo, kwargs, message):
    with pytest.raises(OptionError, match=message):
        aecodec.encode(photo, weights=tiny_model, **kwargs)


def test_bad_images_are_image_errors(tiny_model, tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not a png")
    for image in (tmp_path / "missing.png", tmp_path / "junk.png", np.zeros((4, 4, 7), np.uint8), object()):
        with pytest.raises(ImageError):
            aecodec.encode(image, weights=tiny_model)


def test_damaged_and_foreign_files_are_decode_errors(tiny_model, photo):
    data = aecodec.encode(photo, 3, weights=tiny_model)
    for bad in (b"", b"GIF89a", data[:-3], data[:20] + bytes([data[20] ^ 1]) + data[21:]):
        with pytest.raises(DecodeError):
            aecodec.decode(bad, weights=tiny_model)


def test_weights_problems_are_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="no weights file"):
        aecodec.load_model(tmp_path / "missing.pt")
    (tmp_path / "other.pt").write_bytes(b"\0" * 100)
    with pytest.raises(WeightsError, match="cannot load"):
        aecodec.load_model(tmp_path / "other.pt")
    torch.save({"format": "something else"}, tmp_path / "foreign.pt")
    with pytest.raises(WeightsError, match="not an aecodec weights file"):
        aecodec.load_model(tmp_path / "foreign.pt")


@pytest.mark.skipif("native" not in BACKENDS, reason="extension not built")
def test_native_corrupt_stream_is_a_registered_decode_error_and_bugs_stay_bugs():
    from aecodec import _native

    tables = CdfTables([[0, 30000, 65535, 65536]], [4], [0])
    rng = np.random.default_rng(0)
    symbols = rng.integers(0, 2, 5000).astype(np.int32)
    stream = bytearray(encode_stream(symbols, np.zeros_like(symbols), tables, lanes=1))
    stream[-1] ^= 0xFF  # the final state no longer returns to its start
    with pytest.raises(_native._C.CorruptStreamError) as caught:
        decode_stream(bytes(stream), np.zeros_like(symbols), tables, backend="native")
    assert isinstance(caught.value, DecodeError)
    # A caller's bug (a tensor of the wrong type) is a plain ValueError, not a DecodeError.
    with pytest.raises(ValueError) as caught:
        _native._C.rans_decode(torch.zeros(8, dtype=torch.float32), torch.zeros(1, dtype=torch.int64),
                               torch.zeros(1, dtype=torch.int32), torch.zeros(1, 4, dtype=torch.int32),
                               torch.zeros(1, dtype=torch.int32), torch.zeros(1, 4096, dtype=torch.int16), 1)
    assert not isinstance(caught.value, DecodeError)


def test_cli_os_errors_are_one_line_exit_1(tmp_path, png_path, capsys):
    assert main(["compress", str(png_path), "/proc/aecodec-cannot-write-here.aec", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aecodec: error:") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("buffered", [True, False])
def test_cli_a_reader_leaving_early_is_a_quiet_exit_141(buffered):
    """`aecodec models | head -1`: the pipe breaks inside the command (unbuffered) or at its final flush."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader has left
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    try:
        done = subprocess.run([sys.executable, "-m", "aecodec.cli", "models"], stdout=write, stderr=subprocess.PIPE,
                              text=True, env=env)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


def test_cli_lets_a_bug_show_its_traceback(monkeypatch, tmp_path, png_path):
    import aecodec.api

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(aecodec.api, "encode", broken)
    with pytest.raises(ZeroDivisionError):
        main(["compress", str(png_path), str(tmp_path / "o.aec")])
    assert not (tmp_path / "o.aec").exists()


@pytest.fixture
def png_path(tmp_path, photo):
    from PIL import Image

    path = tmp_path / "in.png"
    Image.fromarray(photo).save(path)
    return path



def test_shipped_weights_inflate_from_gzip_checked_and_damage_is_a_weights_error(tmp_path, monkeypatch, tiny_weights):
    import gzip
    import hashlib

    from aecodec import weights as registry

    blob = Path(tiny_weights).read_bytes()
    release = registry.Release("tiny-gz", "tiny.pt", hashlib.sha256(blob).hexdigest(), 8, 8, (1.0, 10.0), "0.0.0")
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setitem(registry.RELEASES, release.name, release)
    monkeypatch.setattr(registry, "_cache", {})
    with pytest.raises(WeightsError, match="missing: reinstall"):
        registry.load("tiny-gz")
    (tmp_path / "tiny.pt.gz").write_bytes(gzip.compress(blob, mtime=0))
    assert release.path == tmp_path / "tiny.pt.gz" and release.size_bytes < len(blob)
    model = registry.load("tiny-gz")
    assert model.model_id == release.model_id
    data = aecodec.encode(natural_like(32, 32), 3, weights=model)
    registry._cache.clear()
    assert aecodec.decode(data).size == (32, 32)  # the release found by the file's id, inflated again

    registry._cache.clear()
    (tmp_path / "tiny.pt.gz").write_bytes(gzip.compress(blob + b"x", mtime=0))  # inflates, to other bytes
    with pytest.raises(WeightsError, match="sha256 check"):
        registry.load("tiny-gz")
    (tmp_path / "tiny.pt.gz").write_bytes(gzip.compress(blob, mtime=0)[:-20])  # cut short
    with pytest.raises(WeightsError, match="damaged"):
        registry.load("tiny-gz")


def test_a_decoder_only_release_decodes_its_files_exactly_and_refuses_to_encode(tmp_path, monkeypatch, tiny_weights):
    import dataclasses
    import gzip
    import hashlib

    from aecodec import weights as registry
    from aecodec.model import AECModel

    blob = Path(tiny_weights).read_bytes()
    decoder = registry.decoder_only(blob)
    assert len(decoder) < len(blob) and registry.decoder_only(decoder) == decoder  # nothing left to strip
    whole = registry.Release("tiny-dec", "tiny.pt", hashlib.sha256(blob).hexdigest(), 8, 8, (1.0, 10.0), "0.0.0")
    archive = tmp_path / "archive"
    archive.mkdir()
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(registry, "installed_archive", lambda: (archive, 1))  # the installed archive, version 1
    monkeypatch.setitem(registry.RELEASES, whole.name, whole)
    monkeypatch.setattr(registry, "_cache", {})
    (tmp_path / "tiny.pt").write_bytes(blob)
    assert registry.write_decoder_only("tiny-dec", archive) == hashlib.sha256(decoder).hexdigest()
    release = dataclasses.replace(whole, decoder_sha256=hashlib.sha256(decoder).hexdigest(), archive_version=1)
    registry.RELEASES[release.name] = release
    (tmp_path / "tiny.pt").unlink()  # what a release leaves: the decoder half only, in the archive
    assert release.path == archive / "tiny.decoder.pt.gz" and not release.encodes
    assert gzip.decompress(release.path.read_bytes()) == decoder
    with pytest.raises(WeightsError, match="not tiny-dec's whole weights file"):
        registry.write_decoder_only("tiny-dec", archive)  # a decoder-only file has no decoder half to take

    image = natural_like(48, 40)
    files = [aecodec.encode(image, q, weights=str(tiny_weights)) for q in (2, 9)]
    decoded = [np.array(aecodec.decode(data, weights=str(tiny_weights))) for data in files]
    registry._cache.clear()
    model = registry.load("tiny-dec")
    assert model.model_id == release.model_id and not model.encodes and model.net.g_a is None
    for data, expected in zip(files, decoded):
        assert np.array_equal(np.array(aecodec.decode(data)), expected)  # found by the file's id, as before
    with pytest.raises(OptionError, match="tiny-dec ships decoder-only"):
        aecodec.encode(image, 2, weights="tiny-dec")
    with pytest.raises(WeightsError, match="decoder-only"):
        AECModel.from_weights("tiny-dec")
    registry._cache.clear()
    monkeypatch.setattr(registry, "installed_archive", lambda: None)  # installed without its dependency
    with pytest.raises(WeightsError, match=r"from the aecodec-archive package, which is not installed: pip install 'aecodec-archive>=1'"):
        aecodec.decode(files[0])
    monkeypatch.setattr(registry, "installed_archive", lambda: (archive, 0))  # an archive from before this model's
    with pytest.raises(WeightsError, match=r"ships in aecodec-archive 1 and later, 0 is installed"):
        aecodec.decode(files[0])
    monkeypatch.setattr(registry, "installed_archive", lambda: (archive, 1))
    (archive / "tiny.decoder.pt.gz").write_bytes(gzip.compress(blob, mtime=0))  # the whole file: not the one listed
    with pytest.raises(WeightsError, match="sha256 check.*reinstall aecodec-archive"):
        registry.load("tiny-dec")


def test_without_the_archive_old_files_are_a_weights_error_and_models_still_lists(tmp_path):
    """aecodec installed without aecodec-archive (a real lookup, in a subprocess): a superseded model's
    file is a clear error naming the package, the default model still codes, `aecodec models` still lists."""
    conformance = Path(__file__).parent / "data" / "conformance" / "aec-hp128"
    old_file = sorted(conformance.glob("*.aec"))[0]
    probe = f"""
import sys
sys.modules["aecodec_archive"] = None  # as if not installed: its import fails
import aecodec
from aecodec.cli import main
try:
    aecodec.decode(open({str(old_file)!r}, "rb").read())
except aecodec.WeightsError as exc:
    print("error:", exc)
from PIL import Image
print("default decodes:", aecodec.decode(aecodec.encode(Image.new("RGB", (16, 16)), 1)).size)
main(["models"])
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "error: aec-hp128's files decode with its decoder from the aecodec-archive package, which is not installed" in done.stdout
    assert "default decodes: (16, 16)" in done.stdout
    listed = [line for line in done.stdout.splitlines() if line.startswith("aec-hp128 ")]
    assert len(listed) == 1 and listed[0].endswith("decode (needs aecodec-archive: not installed or too old)")
