"""Device tools: bench.device_train packs within what the device tool sends, trains, and joins the weights; bench.device_check."""

import json
from pathlib import Path

import pytest

import aecodec
from bench import device_train
from conftest import natural_like
from test_train import args_for, make_data


def test_pack_run_unpack(tmp_path, monkeypatch):
    from aecodec.train import train

    make_data(tmp_path)
    start = tmp_path / "start.pt"
    train(args_for(tmp_path, start, 2))
    pack_dir = tmp_path / "pack"
    # room for this test's photos whatever the released weights leave of the real 64 MiB
    monkeypatch.setattr(device_train, "TRAVEL_LIMIT", device_train.travelling_bytes(Path(__file__).resolve().parents[1]) + device_train.TRAVEL_MARGIN + 16 * 2**20)
    device_train.main(["pack", "--data", str(tmp_path / "data"), "--init", str(start), "--out", str(pack_dir), "--no-wheels"])
    manifest = json.loads((pack_dir / "manifest.json").read_text())
    assert manifest == {"init": "init.pt", "N": 8, "M": 8, "images": 3, "of": 3, "seed": 0}
    assert len(list((pack_dir / "images").glob("*.jpg"))) == 3 and (pack_dir / "init.pt").read_bytes() == start.read_bytes()

    monkeypatch.setattr(device_train, "PART_BYTES", 20_000)  # several parts, as the 17.5 MB weights need
    results = tmp_path / "results"
    device_train.main(["run", "--dir", str(pack_dir), "--minutes", "0", "--batch", "2", "--crop", "64",
                       "--results", str(results)])
    report = json.loads((results / "result.json").read_text())
    assert report["steps"] == 1  # out of time after the first step: state and weights written there
    assert len(report["parts"]) > 1 and all((results / p).stat().st_size <= 20_000 for p in report["parts"])

    weights = tmp_path / "runs" / "gpu.pt"
    device_train.main(["unpack", str(results), "--out", str(weights)])
    img = natural_like(64, 64)
    assert aecodec.decode(aecodec.encode(img, 3, weights=weights), weights=weights).size == (64, 64)
    with pytest.raises(SystemExit, match="exists; not overwritten"):
        device_train.main(["unpack", str(results), "--out", str(weights)])
    (results / report["parts"][0]).write_bytes(b"x" + (results / report["parts"][0]).read_bytes()[1:])
    with pytest.raises(SystemExit, match="sha256 differs"):
        device_train.main(["unpack", str(results), "--out", str(tmp_path / "other.pt")])


def test_pack_refuses_a_folder_it_did_not_write(tmp_path):
    make_data(tmp_path)
    (tmp_path / "mine").mkdir()
    with pytest.raises(SystemExit, match="is not a pack"):
        device_train.main(["pack", "--data", str(tmp_path / "data"), "--init", "aec-hp64", "--out", str(tmp_path / "mine"),
                           "--no-wheels"])


def test_device_check_cross_decodes_every_file_on_every_device():
    import torch

    from bench.device_check import cross_check

    report = cross_check(64, 48, 6.0, repeats=1)
    assert report["devices"] == ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    assert set(report["decode_s"]) == set(report["encode_s"]) == set(report["devices"])
    assert report["max_pixel_difference_between_decoders"] <= 1 and min(report["bytes"].values()) > 0
