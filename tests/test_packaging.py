"""Packaging: the sdist builds the extension and carries the weights, spec and test vectors."""

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import aecodec
from aecodec.weights import RELEASES

ROOT = Path(__file__).resolve().parent.parent


def test_sdist_carries_what_a_build_needs(tmp_path):
    """A wheel built from the sdist needs csrc's headers and sources; users need the weights and the spec."""
    done = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "AECODEC_NO_EXT": "1"})
    assert done.returncode == 0, done.stderr
    (archive,) = tmp_path.glob("aecodec-*.tar.gz")
    assert archive.name == f"aecodec-{aecodec.__version__}.tar.gz"  # the version comes from aecodec.__version__
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    expected = {"csrc/rans.h", "csrc/ops.h", "csrc/cpu.cpp", "csrc/cuda.cu", "csrc/bindings.cpp", "setup.py",
                "docs/FORMAT.md", *(f"aecodec/weights/{r.path.name}" for r in RELEASES.values() if r.encodes),
                *(f"tests/data/conformance/{name}/manifest.json" for name in RELEASES)}
    assert expected <= names
    assert not any(name.endswith(".decoder.pt.gz") for name in names)  # those are aecodec-archive's


@pytest.mark.skipif(not (ROOT / "archive").is_dir(), reason="the archive's source is not in aecodec's sdist")
def test_the_archive_wheel_carries_every_superseded_decoder_and_aecodec_requires_its_version(tmp_path):
    """Superseded models decode from aecodec-archive's files: its wheel must hold every one this aecodec
    names, its version be the one that added the newest of them, and aecodec require that version."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and up
    source = shutil.copytree(ROOT / "archive", tmp_path / "archive", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path / "wheel"), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "wheel").glob("aecodec_archive-*.whl")
    decoders = [r for r in RELEASES.values() if not r.encodes]
    newest = max(r.archive_version for r in decoders)
    assert min(r.archive_version for r in decoders) >= 1 and wheel.name.startswith(f"aecodec_archive-{newest}-")
    with zipfile.ZipFile(wheel) as archive:
        names = {name for name in archive.namelist() if name.endswith(".gz")}
    assert names == {f"aecodec_archive/{r.decoder_name}" for r in decoders}
    assert wheel.stat().st_size + max(r.size_bytes for r in decoders) < 100e6  # room for the next one
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [d for d in dependencies if re.match(r"aecodec-archive\b", d)] == [f"aecodec-archive>={newest}"]


def test_the_default_ships_as_it_is_and_the_others_compressed_or_decoder_only():
    """The default model is read at every start (no inflating); the others only for their own files, and
    compressed, or decoder-only in aecodec-archive, they keep both wheels under PyPI's 100 MB default and
    the device tool's 64 MiB from filling with each release."""
    from aecodec.weights import DEFAULT_MODEL, ENCODER_PARTS, WEIGHTS_DIR, installed_archive, load

    expected = {name: r.filename if name == DEFAULT_MODEL else
                r.filename.removesuffix(".pt") + ".decoder.pt.gz" if r.decoder_sha256 else r.filename + ".gz"
                for name, r in RELEASES.items()}
    assert {name: r.path.name for name, r in RELEASES.items()} == expected
    assert all(r.path.is_file() for r in RELEASES.values())
    assert RELEASES[DEFAULT_MODEL].encodes and RELEASES["aec-hp64"].encodes
    for release in RELEASES.values():
        if not release.encodes:
            state = load(release.name).net.state_dict()
            assert not any(key.startswith(ENCODER_PARTS) for key in state) and "g_s.0.weight" in state
    assert {r.path.parent for r in RELEASES.values() if r.encodes} == {WEIGHTS_DIR}
    assert {r.path.parent for r in RELEASES.values() if not r.encodes} == {installed_archive()[0]}
    # Room for one more release: a new default as big as this one (this one's decoder then goes to the
    # archive, whose room the test above checks).
    assert sum(r.size_bytes for r in RELEASES.values() if r.encodes) + RELEASES[DEFAULT_MODEL].size_bytes < 100e6
