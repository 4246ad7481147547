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
    repo = git_repo(tmp_path / "repo", {"code.py": b"x", "old.pt": b"o" * 1000})  # never the real checkout's index
    monkeypatch.setattr(device_train, "unused_weights", lambda repo, init: [repo / "old.pt"])
    device_train.main(["pack", "--data", str(tmp_path / "data"), "--init", str(start), "--out", str(pack_dir), "--no-wheels",
                       "--repo", str(repo)])
    assert status(repo) == "D  old.pt\n" and device_train.left_behind(repo) == ["old.pt"]
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
    assert status(repo) == "" and device_train.left_behind(repo) == []
    img = natural_like(64, 64)
    assert aecodec.decode(aecodec.encode(img, 3, weights=weights), weights=weights).size == (64, 64)
    with pytest.raises(SystemExit, match="exists; not overwritten"):
        device_train.main(["unpack", str(results), "--out", str(weights), "--repo", str(repo)])
    (results / report["parts"][0]).write_bytes(b"x" + (results / report["parts"][0]).read_bytes()[1:])
    with pytest.raises(SystemExit, match="sha256 differs"):
        device_train.main(["unpack", str(results), "--out", str(tmp_path / "other.pt"), "--repo", str(repo)])


def status(repo: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True).stdout


def commit(repo: Path, message: str = "files") -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message], cwd=repo, check=True)


def git_repo(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    for command in (["init", "-q"], ["add", "."]):
        subprocess.run(["git", *command], cwd=folder, check=True)
    commit(folder)
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
    assert status(repo) == ""
    assert exclude.read_text() == "*.log\n"


def test_leave_behind_skips_work_in_progress_and_restore_refuses_what_it_cannot_undo(tmp_path):
    repo = git_repo(tmp_path / "repo", {"a.pt": b"a", "b.pt": b"b", "sub/code.py": b"print()"})
    (repo / "b.pt").write_bytes(b"staged change")
    (repo / "new.pt").write_bytes(b"a release not yet committed")
    subprocess.run(["git", "add", "b.pt", "new.pt"], cwd=repo, check=True)
    assert device_train.toplevel(repo / "sub") == repo.resolve()  # from a subfolder: the checkout's root
    assert device_train.leave_behind(repo, [repo / "a.pt", repo / "b.pt", repo / "new.pt"]) == ["a.pt"]
    assert status(repo) == "D  a.pt\nM  b.pt\nA  new.pt\n"
    device_train.restore(repo)
    assert status(repo) == "M  b.pt\nA  new.pt\n"  # the staged work as it was

    subprocess.run(["git", "reset", "-q"], cwd=repo, check=True)
    device_train.leave_behind(repo, [repo / "a.pt"])
    commit(repo, "other work, committed by mistake with the deletion")
    with pytest.raises(SystemExit, match="HEAD no longer has a.pt"):
        device_train.restore(repo)
    assert device_train.left_behind(repo) == ["a.pt"]  # kept, to restore once the file is back
    subprocess.run(["git", "checkout", "-q", "HEAD^", "--", "a.pt"], cwd=repo, check=True)
    assert device_train.restore(repo) == ["a.pt"] and device_train.left_behind(repo) == []

    commit(repo, "a.pt back")
    exclude = repo / ".git" / "info" / "exclude"
    assert device_train.leave_behind(repo, [repo / "a.pt"]) == ["a.pt"]
    exclude.write_text(exclude.read_text().replace("/a.pt", "*.py"))
    with pytest.raises(SystemExit, match="was edited"):
        device_train.restore(repo)
    assert (repo / "sub" / "code.py").read_bytes() == b"print()"


def test_a_failed_pack_tracks_the_weights_again(tmp_path, monkeypatch):
    repo = git_repo(tmp_path / "repo", {"old.pt": b"o" * 1000})
    monkeypatch.setattr(device_train, "unused_weights", lambda repo, init: [repo / "old.pt"])
    monkeypatch.setattr(device_train, "TRAVEL_LIMIT", device_train.TRAVEL_MARGIN + 10)  # no room for any photo
    make_data(tmp_path)
    with pytest.raises(SystemExit, match="no photo fits"):
        device_train.main(["pack", "--data", str(tmp_path / "data"), "--init", "aec-hp64", "--out", str(tmp_path / "pack"),
                           "--no-wheels", "--repo", str(repo)])
    assert status(repo) == "" and device_train.left_behind(repo) == []


def test_the_real_tree_leaves_room_for_photos():
    from aecodec.weights import DEFAULT_MODEL, RELEASES

    repo = Path(__file__).resolve().parents[1]
    unused = device_train.unused_weights(repo, DEFAULT_MODEL)
    assert {path.resolve() for path in unused} == {r.path.resolve() for r in RELEASES.values() if r.name != DEFAULT_MODEL}
    assert RELEASES["aec-hp64"].path.resolve() not in {path.resolve() for path in device_train.unused_weights(repo, "aec-hp64")}
    tracked = set(subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, text=True, check=True).stdout.split("\0"))
    sent = device_train.travelling_bytes(repo) - sum(path.stat().st_size for path in unused
                                                      if path.relative_to(repo).as_posix() in tracked)
    assert sent + device_train.TRAVEL_MARGIN + 32 * 2**20 <= device_train.TRAVEL_LIMIT  # at least 32 MiB of photos


def test_pack_refuses_a_folder_it_did_not_write(tmp_path):
    make_data(tmp_path)
    (tmp_path / "mine").mkdir()
    with pytest.raises(SystemExit, match="is not a pack"):
        device_train.main(["pack", "--data", str(tmp_path / "data"), "--init", "aec-hp64", "--out", str(tmp_path / "mine"),
                           "--no-wheels"])


def test_pack_refuses_a_decoder_only_start_before_the_device_is_spent(tmp_path):
    from aecodec.weights import RELEASES

    make_data(tmp_path)
    superseded = next(name for name, release in RELEASES.items() if not release.encodes)
    with pytest.raises(SystemExit, match="ships decoder-only"):
        device_train.main(["pack", "--data", str(tmp_path / "data"), "--init", superseded, "--out", str(tmp_path / "pack"),
                           "--no-wheels"])
    assert not (tmp_path / "pack").exists()  # nothing a later pack would refuse as "not a pack"


def test_device_check_cross_decodes_every_file_on_every_device():
    import torch

    from bench.device_check import cross_check

    report = cross_check(64, 48, 6.0, repeats=1)
    assert report["devices"] == ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    assert set(report["decode_s"]) == set(report["encode_s"]) == set(report["devices"])
    assert report["max_pixel_difference_between_decoders"] <= 1 and min(report["bytes"].values()) > 0
