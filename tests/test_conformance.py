"""Conformance files (docs/FORMAT.md): every released model's committed .aec files decode, with every
backend, to the pixels the release that wrote them decoded (within 1 level: the synthesis is float)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aecodec
from aecodec.coder import BACKENDS
from aecodec.format import unpack
from aecodec.weights import RELEASES

ROOT = Path(__file__).parent / "data" / "conformance"
CASES = [(model, entry) for model in sorted(RELEASES) if (ROOT / model / "manifest.json").exists()
         for entry in json.loads((ROOT / model / "manifest.json").read_text())["files"]]


def test_every_released_model_has_conformance_files():
    assert {model for model, _ in CASES} == set(RELEASES)


@pytest.mark.parametrize("model, entry", CASES, ids=[f"{m}/{e['file']}" for m, e in CASES])
def test_conformance_file_decodes_to_its_pixels(model, entry):
    data = (ROOT / model / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], "a conformance file changed: they are never rewritten"
    header, _ = unpack(data)
    assert header.model_id == RELEASES[model].model_id
    assert header.model_id.hex() == entry["model_id"]
    assert (header.mode, header.width, header.height, header.quality) == (
        entry["mode"], entry["width"], entry["height"], entry["quality"])
    assert header.symbols_crc == entry["symbols_crc"]  # decode() checks its symbols against it

    with Image.open(ROOT / model / entry["expected"]) as expected_image:
        expected = np.asarray(expected_image, dtype=np.int16)
    decoded = {}
    for backend in BACKENDS:
        image = aecodec.decode(data, backend=backend, precision="float32")  # the reference precision
        assert (image.mode, image.size) == (entry["mode"], (entry["width"], entry["height"]))
        decoded[backend] = np.asarray(image, dtype=np.int16)
        assert np.abs(decoded[backend] - expected).max() <= 1
    first = next(iter(decoded.values()))
    assert all(np.array_equal(first, other) for other in decoded.values())  # the backends agree exactly
