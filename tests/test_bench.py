"""The RD benchmark end to end on two tiny images, and its cache; the speed benchmark's process timer."""

import json
import sys
import time

import numpy as np
import pytest
from PIL import Image

from bench import rd
from bench.speed import ROOT, timed_process
from conftest import natural_like


def test_rd_on_two_tiny_images(tmp_path, monkeypatch):
    images = tmp_path / "imgs"
    images.mkdir()
    for seed in range(2):
        Image.fromarray(natural_like(48, 64, seed=seed)).save(images / f"im{seed}.png")
    out = tmp_path / "out"
    summary = rd.main(["--images", str(images), "--out", str(out), "--codecs", "aecodec,jpeg420,webp"])
    for name in ("results.json", "summary.csv", "bd.md", "rd.png"):
        assert (out / name).stat().st_size > 0
    assert set(summary) == {"aecodec", "jpeg420", "webp"}
    jpeg = summary["jpeg420"]
    assert jpeg["bpp"] == sorted(jpeg["bpp"])  # rate grows with JPEG quality
    results = json.loads((out / "results.json").read_text())
    assert set(results["codecs"]["aecodec"]["images"]) == {"im0.png", "im1.png"}
    assert "BD-rate" in (out / "bd.md").read_text()

    calls = []
    monkeypatch.setattr(rd, "measure", lambda *a: calls.append(a) or {})
    rd.main(["--images", str(images), "--out", str(out), "--codecs", "aecodec,jpeg420,webp"])
    assert calls == []  # everything came from the cache


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    assert rd.psnr(a, b) == 10 * np.log10(48)


def test_overhead_splits_the_file(tmp_path, tiny_weights):
    import aecodec
    from bench import overhead

    for seed in range(2):
        Image.fromarray(natural_like(48, 64, seed=seed)).save(tmp_path / f"im{seed}.png")
    total = overhead.main(["--images", str(tmp_path), "--qualities", "3", "--weights", str(tiny_weights)])[3.0]
    assert total["file"] == sum(len(aecodec.encode(tmp_path / f"im{s}.png", 3, weights=tiny_weights)) for s in range(2))
    assert total["coded"] + total["lanes"] + total["header"] == total["file"]
    assert total["lanes"] >= 2 * 2 * (1 + 1 + 4)  # per image and stream: lane count, one word count, one state
    assert 0 < total["model"] < float("inf")  # every likelihood is bounded away from 0 (float32 bound)


def test_train_speed_runs_both_precisions(tmp_path, capsys):
    from bench import train_speed

    (tmp_path / "data").mkdir()
    for seed in range(2):
        Image.fromarray(natural_like(64, 64, seed=seed)).save(tmp_path / "data" / f"{seed}.png")
    train_speed.main(["--data", str(tmp_path / "data"), "--N", "8", "--M", "8", "--batch", "1", "--crop", "64",
                      "--steps", "1", "--rounds", "1", "--rd-steps", "1"])
    out = capsys.readouterr().out
    assert "fp32:" in out and "bf16:" in out and "speed-up" in out and "bf16 / fp32 loss" in out


def test_synthetic_table(tmp_path, monkeypatch):
    from bench import synthetic

    monkeypatch.setattr(synthetic, "SYNTHETIC", {"lineart": lambda: synthetic.line_art(96, 64)})
    Image.fromarray(natural_like(64, 96)).save(tmp_path / "photo.png")
    rows = rd.main(["--synthetic", "--images", str(tmp_path), "--out", str(tmp_path / "out")])
    art, photo = rows
    assert art["coding"] == "lossless (webp)" and art["psnr"] == float("inf") and art["meets"]
    assert photo["coding"] == "learned" and photo["learned_identical"] and photo["meets"] is None
    assert art["png"] > 100  # a real PNG's size, not a stream position
    assert art["webp_same_size_psnr"] is None and photo["webp_same_size_psnr"] > 20
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| lineart |" in table and "exact" in table and "= learned" in table


def test_webp_within_finds_the_largest_webp_that_fits():
    rgb = natural_like(64, 96)
    size_at = lambda quality: rd._sizes_and_psnr(rgb, "WEBP", quality=quality)  # noqa: E731
    budget, _ = size_at(50)
    size, quality = rd._webp_within(rgb, budget)
    assert size_at(50)[0] <= size <= budget and quality >= size_at(50)[1]
    assert rd._webp_within(rgb, size_at(0)[0] - 1) is None


def test_synthetic_drawings_written_as_png(tmp_path, monkeypatch):
    from bench import synthetic

    monkeypatch.setattr(synthetic, "SYNTHETIC", {"chart": lambda: synthetic.pillow_chart(48, 32)})
    synthetic.main([str(tmp_path / "drawings")])
    with Image.open(tmp_path / "drawings" / "chart.png") as img:
        assert np.array_equal(np.asarray(img), synthetic.pillow_chart(48, 32))


def test_timed_process_measures_wall_time_and_peak_memory():
    wall, peak_mb = timed_process([sys.executable, "-c", "block = b'x' * (300 * 2**20)"], ROOT)
    assert wall > 0 and peak_mb > 300
    with pytest.raises(RuntimeError, match="no such luck"):
        timed_process([sys.executable, "-c", "raise SystemExit('no such luck')"], ROOT)


def test_rd_effort_levels(tmp_path, monkeypatch):
    from aecodec import effort

    monkeypatch.setattr(effort, "SCHEDULES", {1: (effort.Schedule(3, 1e-2),)})  # behaviour, not the gain
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(natural_like(48, 64)).save(images / "im0.png")
    averages = rd.main(["--images", str(images), "--out", str(tmp_path / "out"), "--effort", "1",
                        "--qualities", "2,4,6,8", "--crop", "32"])
    assert set(averages) == {0, 1} and set(averages[1]) == {2.0, 4.0, 6.0, 8.0}
    assert all(averages[1][q]["enc_s"] > 0 for q in averages[1])
    table = (tmp_path / "out" / "effort.md").read_text()
    assert "| 0 | +0.0 (+0.0) | 1.0 | 1.00 |" in table and "| 1 |" in table
    saved = json.loads((tmp_path / "out" / "effort.json").read_text())
    assert saved["crop"] == 32 and saved["levels"]["1"]["2.0"]["bpp"] == averages[1][2.0]["bpp"]


def test_measure_takes_the_least_of_its_runs_and_runs_long_encodes_once(monkeypatch):
    rgb = natural_like(48, 64)
    noisy = iter([0.06, 0.0, 0.03])  # extra seconds each encode takes: only the second's time counts
    calls = {"encode": 0, "decode": 0}

    def encode(image, setting):
        calls["encode"] += 1
        time.sleep(next(noisy))
        return image.tobytes()

    def decode(data):
        calls["decode"] += 1
        return np.frombuffer(data, np.uint8).reshape(rgb.shape)

    result = rd.measure(encode, decode, rgb, 5, runs=3)
    assert calls == {"encode": 3, "decode": 3} and result["enc_s"] < 0.03 and result["bpp"] == 24
    monkeypatch.setattr(rd, "REPEAT_BELOW_S", 0.0)  # every encode counts as long: it runs once
    calls.update(encode=0, decode=0)
    noisy = iter([0.0])
    rd.measure(encode, decode, rgb, 5, runs=3)
    assert calls == {"encode": 1, "decode": 3}


def test_checkpoint_scores_a_training_state_against_weights(tmp_path, tiny_weights, capsys):
    """bench.checkpoint reads a training state and a weights file; the same model scores 0 % against itself."""
    import torch

    from bench import checkpoint

    images = tmp_path / "imgs"
    images.mkdir()
    for seed in range(2):
        Image.fromarray(natural_like(64, 80, seed=seed)).save(images / f"im{seed}.png")
    model, _ = checkpoint.load(str(tiny_weights))
    state = tmp_path / "run.pt.train.pt"
    torch.save({"config": model.config, "model": model.state_dict(), "step": 7}, state)
    results = checkpoint.main([str(state), "--images", str(images), "--against", str(tiny_weights),
                               "--limit", "2", "--crop", "64", "--qualities", "2,9"])
    ours, reference = results["run.pt.train.pt step 7"], results["tiny.pt"]
    assert ours.keys() == {2.0, 9.0}
    for q in ours:
        assert ours[q]["loss"] == pytest.approx(reference[q]["loss"])
        assert ours[q]["ceiling"] == pytest.approx(reference[q]["ceiling"])
    assert ours[9.0]["bpp"] > ours[2.0]["bpp"]
    output = capsys.readouterr().out
    assert "+0.0 %" in output and "ceiling" in output


def test_checkpoint_ceiling_leaves_the_latents_unrounded(tiny_weights, monkeypatch):
    """The ceiling is the PSNR of g_s fed g_a's latents as they are (the tiny model's output hardly
    depends on its latents, so what g_s is fed is checked too)."""
    import torch

    from bench import checkpoint

    model, _ = checkpoint.load(str(tiny_weights))
    model.eval()
    x = torch.from_numpy(natural_like(64, 64, seed=3)).permute(2, 0, 1)[None].float() / 255
    quality = torch.tensor([5.0])
    with torch.no_grad():
        latents = model.analysis(x, quality)[0]
        expected = 10 * torch.log10(1 / ((model.synthesis(latents, quality) - x) ** 2).mean())
    fed = []
    synthesis = model.synthesis
    monkeypatch.setattr(model, "synthesis", lambda y, q, *args: fed.append(y) or synthesis(y, q, *args))
    scores = checkpoint.score(model, x, [5.0])[5.0]
    assert scores["ceiling"] == pytest.approx(expected.item(), abs=1e-4)
    assert any(torch.equal(y, latents) for y in fed) and not torch.equal(latents, latents.round())
