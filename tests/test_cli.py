"""The aecodec command, run as users run it: in a subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import natural_like

from aecodec.cli import main


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "aecodec.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(natural_like(40, 60)).save(path)
    return path


def test_compress_decompress_info(tmp_path, png, tiny_weights):
    aec, out = tmp_path / "x.aec", tmp_path / "y.png"
    done = run("compress", png, aec, "--quality", "3.5", "--weights", tiny_weights)
    assert done.returncode == 0, done.stderr
    assert "bpp" in done.stdout
    done = run("decompress", aec, out, "--weights", tiny_weights)
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (60, 40)
    done = run("info", aec)
    assert done.returncode == 0, done.stderr
    bpp = 8 * aec.stat().st_size / (60 * 40)
    assert f"{bpp:.4f} bpp" in done.stdout and "quality 3.5" in done.stdout and "60x40 RGB" in done.stdout


def test_target_size(tmp_path, png, tiny_weights):
    aec = tmp_path / "x.aec"
    smallest = run("compress", png, aec, "--quality", "1", "--weights", tiny_weights)
    assert smallest.returncode == 0, smallest.stderr
    budget = aec.stat().st_size + 40
    done = run("compress", png, aec, "--target-size", budget, "--force", "--weights", tiny_weights)
    assert done.returncode == 0, done.stderr
    assert aec.stat().st_size <= budget and "quality 1 " not in done.stdout + " "
    too_small = tmp_path / "never.aec"
    done = run("compress", png, too_small, "--target-size", 10, "--weights", tiny_weights)
    assert done.returncode == 1 and "cannot fit" in done.stderr and not too_small.exists()
    done = run("compress", png, too_small, "--quality", "3", "--target-bpp", "1", "--weights", tiny_weights)
    assert done.returncode == 2 and "not allowed with" in done.stderr


def test_never_overwrites_without_force(tmp_path, png, tiny_weights):
    aec = tmp_path / "x.aec"
    aec.write_bytes(b"precious")
    done = run("compress", png, aec, "--weights", tiny_weights)
    assert done.returncode == 1 and "--force" in done.stderr
    assert aec.read_bytes() == b"precious"
    assert run("compress", png, aec, "--weights", tiny_weights, "--force").returncode == 0
    assert aec.read_bytes() != b"precious"


def test_failures_leave_nothing_behind(tmp_path, png, tiny_weights):
    aec = tmp_path / "x.aec"
    assert run("compress", png, aec, "--weights", tiny_weights).returncode == 0
    damaged = tmp_path / "bad.aec"
    data = bytearray(aec.read_bytes())
    data[len(data) // 2] ^= 0x10
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    done = run("decompress", damaged, out, "--force", "--weights", tiny_weights)
    assert done.returncode == 1 and "corrupt" in done.stderr and "Traceback" not in done.stderr
    assert out.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.aec", "in.png", "out.png", "x.aec"]


@pytest.mark.parametrize(
    "args,message",
    [
        (("compress", "missing.png", "o.aec"), "no such file"),
        (("compress", "junk.png", "o.aec"), "cannot read image"),
        (("compress", "in.png", "o.aec", "--quality", "0"), "quality"),
        (("decompress", "missing.aec", "o.png"), "cannot read"),
        (("decompress", "junk.png", "o.png"), "wrong magic"),
        (("decompress", "x.aec", "o.unknownext"), "format"),
        (("info", "junk.png"), "wrong magic"),
        (("compress", "in.png", "o.aec", "--weights", "nope.pt"), "no weights file"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, png, tiny_weights, args, message, monkeypatch, capsys):
    """In-process (a subprocess per case costs seconds of imports): same main() as the command."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.png").write_bytes(b"\0" * 50)
    assert main(["compress", str(png), "x.aec", "--weights", str(tiny_weights), "-q"]) == 0
    extra = ["--weights", str(tiny_weights)] if args[0] == "decompress" else []
    assert main([*args, *extra]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.aec").exists() and not (tmp_path / "o.png").exists()


def test_models_lists_every_release_and_what_it_does(capsys):
    from aecodec.weights import DEFAULT_MODEL, RELEASES

    main(["models", "--json"])
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(RELEASES) and [n for n, row in rows.items() if row["default"]] == [DEFAULT_MODEL]
    assert {n for n, row in rows.items() if row["encodes"]} == {n for n, r in RELEASES.items() if not r.decoder_sha256}
    main(["models"])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert lines[DEFAULT_MODEL].endswith("encode (the default), decode")
    assert all(lines[n].endswith("  decode") for n, row in rows.items() if not row["encodes"])


def test_backend_report():
    done = run("info", "--backend")
    assert done.returncode == 0
    assert '"backend"' in done.stdout


def test_info_and_help_start_without_torch(tmp_path, png, tiny_weights):
    """`import aecodec`, `aecodec --help` and `aecodec info` do not wait for torch."""
    aec = tmp_path / "x.aec"
    assert main(["compress", str(png), str(aec), "--weights", str(tiny_weights), "-q"]) == 0
    probe = f"""
import contextlib, io, sys
from aecodec.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["info", {str(aec)!r}])
    with contextlib.suppress(SystemExit):
        main(["--help"])
print(code, "torch" in sys.modules, "60x40 RGB" in out.getvalue(), "decompress" in out.getvalue())
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.split() == ["0", "False", "True", "True"], done.stdout + done.stderr


def test_train_options_pass_through(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0 and "--lr-drop" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse's usage error, from the training module's parser
        main(["train", "--steps", "3"])  # --out is required
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["info", "--steps"])  # train's options are not everyone's
    assert "unrecognized arguments: --steps" in capsys.readouterr().err


def test_batch_compress_with_jobs(tmp_path, tiny_weights, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(3):
        Image.fromarray(natural_like(30 + seed, 40, seed=seed)).save(folder / f"p{seed}.png")
    (folder / "broken.png").write_bytes(b"no")
    out = tmp_path / "out"
    code = main(["compress", str(folder), "-o", str(out), "--jobs", "2", "--weights", str(tiny_weights), "-q"])
    assert code == 1  # one input failed ...
    assert "broken.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["p0.aec", "p1.aec", "p2.aec"]  # ... the others are done
    (folder / "broken.png").unlink()
    assert main(["compress", str(folder), "-o", str(out), "--weights", str(tiny_weights), "-q"]) == 1  # exists
    assert main(["compress", str(folder), "-o", str(out), "--weights", str(tiny_weights), "-q", "--force"]) == 0


def test_pillow_plugin(tmp_path, tiny_weights):
    import aecodec  # noqa: F401  (registers the plugin)

    path = tmp_path / "x.aec"
    Image.fromarray(natural_like(30, 50)).save(path, quality=3, weights=str(tiny_weights))
    img = Image.open(path)
    assert img.format == "AEC" and img.size == (50, 30) and img.mode == "RGB" and img.info["quality"] == 3
    # Pixels decode with any model loaded in this process (the save above loaded the tiny one).
    np.testing.assert_array_equal(np.asarray(img), np.asarray(aecodec.decode(path.read_bytes(), weights=str(tiny_weights))))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(aecodec.DecodeError):
        Image.open(path)


def test_decompress_writes_the_format_its_extension_names(tmp_path, png, tiny_weights):
    aec = tmp_path / "x.aec"
    weights = ["--weights", str(tiny_weights), "-q"]
    assert main(["compress", str(png), str(aec), *weights]) == 0
    outputs = {}
    for name, extra in (("fast.png", []), ("small.png", ["--png-level", "9"]), ("x.ppm", []), ("x.bmp", []), ("x.tif", [])):
        assert main(["decompress", str(aec), str(tmp_path / name), "--precision", "float32", *extra, *weights]) == 0
        with Image.open(tmp_path / name) as img:
            outputs[name] = (img.format, np.asarray(img))
    assert [fmt for fmt, _ in outputs.values()] == ["PNG", "PNG", "PPM", "BMP", "TIFF"]
    assert all(np.array_equal(pixels, outputs["fast.png"][1]) for _, pixels in outputs.values())
    assert (tmp_path / "small.png").stat().st_size < (tmp_path / "fast.png").stat().st_size
    assert main(["decompress", str(aec), str(tmp_path / "y.bmp"), "--png-level", "3", *weights]) == 1
    assert not (tmp_path / "y.bmp").exists()
