"""Training: a few steps on tiny images run, checkpoint, resume exactly, and export usable weights."""

import subprocess
import sys

import pytest
import torch
from PIL import Image

import aecodec
from aecodec.model import AECModel
from aecodec.network import lambda_for
from aecodec.quality import LAMBDAS, LEARNED_MAX, QUALITY_MIN
from aecodec.train import add_arguments, train, transform_dtype
from aecodec.weights import SCALE_LEVELS
from conftest import natural_like


def tiny_run(tmp_path, out, steps, resume=False) -> list[str]:
    """`aecodec train` options for a few steps of a tiny model on make_data's images."""
    argv = ["--data", str(tmp_path / "data"), "--out", str(out), "--steps", str(steps), "--batch", "2", "--crop", "64",
            "--N", "8", "--M", "8", "--checkpoint-every", "2"]
    return argv + (["--resume"] if resume else [])


def args_for(tmp_path, out, steps, resume=False):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(tiny_run(tmp_path, out, steps, resume))


def make_data(tmp_path):
    (tmp_path / "data").mkdir()
    for seed in range(3):
        Image.fromarray(natural_like(80, 96, seed=seed)).save(tmp_path / "data" / f"{seed}.png")
    (tmp_path / "data" / "notes.txt").write_text("not an image")


def test_train_resume_is_exact_and_exports(tmp_path):
    make_data(tmp_path)

    straight = tmp_path / "straight.pt"
    train(args_for(tmp_path, straight, 4))
    resumed = tmp_path / "resumed.pt"
    train(args_for(tmp_path, resumed, 2))
    train(args_for(tmp_path, resumed, 4, resume=True))

    a = torch.load(straight.with_name("straight.pt.train.pt"), weights_only=False)["model"]
    b = torch.load(resumed.with_name("resumed.pt.train.pt"), weights_only=False)["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)

    img = natural_like(64, 64)
    out = aecodec.decode(aecodec.encode(img, 3, weights=straight), weights=straight)
    assert out.size == (64, 64)
    shipped = torch.load(straight, weights_only=True)["state_dict"]
    assert shipped["gaussian_conditional.scale_table"].numel() == SCALE_LEVELS  # the finer table, not compressai's 64
    # training runs its weights channels-last; the file holds the default layout, and so does the coding network
    trained = torch.load(straight.with_name("straight.pt.train.pt"), weights_only=False)["model"]
    assert not trained["g_a.0.weight"].is_contiguous()
    assert all(v.is_contiguous() for v in shipped.values())
    assert all(p.is_contiguous() for p in aecodec.load_model(straight).net.parameters())

    # a state whose gain table has another number of qualities is refused with a message, not a traceback
    state_path = resumed.with_name("resumed.pt.train.pt")
    state = torch.load(state_path, weights_only=False)
    state["model"]["log_gain"] = state["model"]["log_gain"][1:]
    torch.save(state, state_path)
    with pytest.raises(SystemExit, match="(?s)does not fit this version's model.*log_gain"):
        train(args_for(tmp_path, resumed, 6, resume=True))


def test_torchrun_two_processes_train_resume_and_export(tmp_path):
    """DDP on CPU (gloo): two ranks train, checkpoint each rank's RNG, resume, and write usable weights."""
    make_data(tmp_path)
    out = tmp_path / "ddp.pt"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "aecodec.train"]
    for steps, resume in ((2, False), (4, True)):
        run = subprocess.run(torchrun + tiny_run(tmp_path, out, steps, resume), capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
    assert "resumed" in run.stdout
    state = torch.load(out.with_name("ddp.pt.train.pt"), weights_only=False)
    assert state["step"] == 4
    assert len(state["rng"]) == 2 and state["rng"][0]["data"].ne(state["rng"][1]["data"]).any()  # one stream per rank
    img = natural_like(64, 64)
    assert aecodec.decode(aecodec.encode(img, 3, weights=out), weights=out).size == (64, 64)


def test_lambda_grows_with_quality():
    q = torch.linspace(QUALITY_MIN, LEARNED_MAX, 50)
    lam = lambda_for(q)
    assert torch.all(lam[1:] > lam[:-1])
    assert torch.isclose(lam[0], torch.tensor(LAMBDAS[0], dtype=lam.dtype))
    # integer qualities 3..9 are CompressAI's lambdas for its qualities 1..7; 10 is above its 8 (0.18)
    compressai = lambda_for(torch.arange(3.0, LEARNED_MAX))
    torch.testing.assert_close(compressai, torch.tensor([0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932], dtype=lam.dtype))
    assert lambda_for(torch.tensor([LEARNED_MAX])).item() > 0.18


def test_gains_interpolate_between_anchors():
    net = AECModel(8, 8)
    gain, inv = net.gains(torch.tensor([2.0, 2.5, 3.0]))
    mid = (gain[0].log() + gain[2].log()) / 2
    torch.testing.assert_close(gain[1].log(), mid)
    assert gain.shape == (3, 8, 1, 1) and inv.shape == (3, 8, 1, 1)
    assert torch.all(gain[1:, 0, 0, 0] > gain[:-1, 0, 0, 0])


def test_widen_keeps_what_the_small_model_computes():
    from aecodec.train import widen

    torch.manual_seed(0)
    small = AECModel(8, 8).eval()
    big = widen(small, 12, 16).eval()
    assert big.config == {"N": 12, "M": 16}
    x = torch.rand(1, 3, 64, 64)
    quality = torch.tensor([4.5])
    with torch.no_grad():
        a, b = small(x, quality), big(x, quality)
    torch.testing.assert_close(b["x_hat"], a["x_hat"], rtol=0, atol=1e-5)
    # The old y channels cost what they did; the new ones start at 0 and cost (almost) nothing.
    torch.testing.assert_close(b["likelihoods"]["y"][:, :8], a["likelihoods"]["y"], rtol=1e-4, atol=0)
    assert b["likelihoods"]["y"][:, 8:].min() > 0.99
    # and training reaches the new channels: every parameter gets a gradient
    big.train()
    out = big(x, quality)
    (out["x_hat"].square().mean() - sum(lik.log().sum() for lik in out["likelihoods"].values())).backward()
    assert big.g_s[0].weight.grad[8:].abs().sum() > 0 and big.g_a[6].weight.grad[8:].abs().sum() > 0


@pytest.mark.parametrize("faster, precision, expected", [
    ("bf16", None, torch.bfloat16), ("float32", None, None),  # the default follows the hardware
    ("float32", "bf16", torch.bfloat16), ("bf16", "fp32", None),  # --precision overrides it
])
def test_training_precision_defaults_to_bf16_only_where_it_is_faster(monkeypatch, faster, precision, expected):
    monkeypatch.setattr("aecodec.train.default_precision", lambda device: faster)
    monkeypatch.setenv("AECODEC_PRECISION", "bf16")  # decoding's setting, not training's
    assert transform_dtype(precision, torch.device("cpu")) is expected


def test_bf16_transforms_keep_entropy_models_in_float32():
    torch.manual_seed(0)
    model = AECModel(8, 8)
    model.transform_dtype = torch.bfloat16
    out = model(torch.rand(2, 3, 64, 64), torch.tensor([2.0, 9.0]))
    assert out["x_hat"].dtype == torch.float32
    assert all(lik.dtype == torch.float32 for lik in out["likelihoods"].values())
