"""Device tools: bench.device_train packs within what the device tool sends, trains, and joins the weights; bench.device_check."""

import json
import subprocess
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
    repo = git_repo(tmp_path / "repo", {"code.py": b"x"})  # the checkout: packing never touches the real one's index
    device_train.main(["pack", "--data", str(tmp_path / "data"), "--init", str(start), "--out", str(pack_dir), "--no-wheels",
                       "--repo", str(repo)])
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
    device_train.main(["unpack", str(results), "--out", str(weights), "--repo", str(repo)])
    img = natural_like(64, 64)
    assert aecodec.decode(aecodec.encode(img, 3, weights=weights), weights=weights).size == (64, 64)
    with pytest.raises(SystemExit, match="exists; not overwritten"):
        device_train.main(["unpack", str(results), "--out", str(weights), "--repo", str(repo)])
    (results / report["parts"][0]).write_bytes(b"x" + (results / report["parts"][0]).read_bytes()[1:])
    with pytest.raises(SystemExit, match="sha256 differs"):
        device_train.main(["unpack", str(results), "--out", str(tmp_path / "other.pt"), "--repo", str(repo)])


def git_repo(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    for command in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "files"]):
        subprocess.run(["git", *command], cwd=folder, check=True)
    return folder


def test_leave_behind_untracks_weights_until_restored(tmp_path):
    repo = git_repo(tmp_path / "repo", {"a.pt": b"a" * 5000, "b.pt": b"b" * 7000, "code.py": b"print()"})
    exclude = repo / ".git" / "info" / "exclude"
    exclude.write_text("*.log")  # the user's own lines, without a final newline
    before = device_train.travelling_bytes(repo)
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(b"o")

    assert device_train.leave_behind(repo, [repo / "a.pt", repo / "b.pt", repo / "missing.pt", outside]) == ["a.pt", "b.pt"]
    assert device_train.leave_behind(repo, [repo / "a.pt", repo / "b.pt"]) == ["a.pt", "b.pt"]  # again: same state
    assert device_train.travelling_bytes(repo) == before - 12000
    assert (repo / "a.pt").read_bytes() == b"a" * 5000 and device_train.left_behind(repo) == ["a.pt", "b.pt"]

    assert device_train.restore(repo) == ["a.pt", "b.pt"] and device_train.restore(repo) == []
    assert device_train.travelling_bytes(repo) == before
    assert subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout == ""
    assert exclude.read_text() == "*.log\n"


def test_the_real_tree_leaves_room_for_photos():
    from aecodec.weights import DEFAULT_MODEL, RELEASES

    unused = device_train.unused_weights(DEFAULT_MODEL)
    assert set(unused) == {r.path for r in RELEASES.values() if r.name != DEFAULT_MODEL}
    assert RELEASES["aec-hp64"].path not in device_train.unused_weights("aec-hp64")
    repo = Path(__file__).resolve().parents[1]
    sent = device_train.travelling_bytes(repo) - sum(path.stat().st_size for path in unused)
    assert sent + device_train.TRAVEL_MARGIN + 32 * 2**20 <= device_train.TRAVEL_LIMIT  # at least 32 MiB of photos


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
