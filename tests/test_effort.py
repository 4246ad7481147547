"""Encoder effort: latent optimization changes the encoder only; every decoder reads its files."""

import numpy as np
import pytest
import torch

import aecodec
from aecodec import api, effort
from aecodec.coder import BACKENDS
from aecodec.network import lambda_for, run_in

from conftest import natural_like


def fast_schedules(monkeypatch):
    """Few steps at every level: these tests check behaviour, not how much effort gains."""
    monkeypatch.setattr(effort, "SCHEDULES", {1: (effort.Schedule(3, 2e-2),), 2: (effort.Schedule(4, 2e-2),),
                                              3: (effort.Schedule(3, 2e-2, draws=True), effort.Schedule(2, 1e-2))})
    monkeypatch.setattr(effort, "ROUNDING", {1: effort.Rounding(0), 2: effort.Rounding(2), 3: effort.Rounding(3, spacing=2)})


def mse_and_bpp(data: bytes, original: np.ndarray, model) -> tuple[float, float]:
    """A real file's MSE (pixels in [0, 1]) and bits per pixel."""
    decoded = np.asarray(aecodec.decode(data, weights=model)).astype(np.float64) / 255
    return float(np.mean((decoded - original / 255) ** 2)), 8 * len(data) / (original.shape[0] * original.shape[1])


def test_effort_zero_is_todays_encoder(tiny_model, photo, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("effort 0 must not optimize")

    monkeypatch.setattr(api, "optimize_latents", never)
    assert aecodec.encode(photo, 5, effort=0, weights=tiny_model) == aecodec.encode(photo, 5, weights=tiny_model)


@pytest.mark.parametrize("level", [-1, 4, 1.5, True, "2"])
def test_bad_effort_is_an_option_error(tiny_model, photo, level):
    with pytest.raises(aecodec.OptionError, match="effort"):
        aecodec.encode(photo, 5, effort=level, weights=tiny_model)


def test_training_model_synthesizes_as_the_decoder_does(tiny_model):
    """Effort's differentiable model runs the decoder's g_s layers on the same weights: its pixels are the
    coding network's up to float rounding."""
    net = effort.training_model(tiny_model.net, torch.device("cpu"))
    assert net.g_s is not tiny_model.net.g_s and type(net.g_s[-1]) is type(tiny_model.net.g_s[-1])
    assert not any(p.requires_grad for p in net.g_s.parameters())
    assert net.g_s[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not tiny_model.net.g_s[0].weight.is_contiguous(memory_format=torch.channels_last)  # the decoder's untouched
    y_hat = torch.randn(1, tiny_model.net.M, 4, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(run_in(net.g_s, y_hat, None), tiny_model.net.g_s(y_hat), rtol=0, atol=1e-5)


def test_effort_files_decode_alike_with_every_backend(tiny_model, photo, monkeypatch):
    fast_schedules(monkeypatch)
    level = 3
    data = aecodec.encode(photo, 5, effort=level, weights=tiny_model)
    assert data != aecodec.encode(photo, 5, weights=tiny_model)  # the latents did change
    for encoder in BACKENDS:  # deterministic: the same bytes from every coder, and run after run
        assert aecodec.encode(photo, 5, effort=level, weights=tiny_model, backend=encoder) == data
    images = [np.asarray(aecodec.decode(data, weights=tiny_model, backend=name)) for name in BACKENDS]
    assert all(np.array_equal(image, images[0]) for image in images) and images[0].shape == photo.shape


@pytest.mark.parametrize("quality", [3.0, 7.0])
def test_effort_puts_the_real_file_below_effort_zeros_curve(quality):
    """At the slope of effort 0's curve (real files SLOPE_STEP either side), effort 1's file has the lower
    real loss: it lies below that curve, not just elsewhere on it. The shipped model: only a trained
    model has a gap to close. 128x128: at 64x64 a quality-3 file is ~90 bytes, a byte is ~1 % of its rate,
    and effort 0's curve there can even rise with quality (one seed of four), so its chord is no slope."""
    model = aecodec.load_model()
    img = natural_like(128, 128, seed=3)
    (mse_low, bpp_low), (mse_high, bpp_high) = (mse_and_bpp(aecodec.encode(img, q, weights=model), img, model)
                                                for q in (quality - effort.SLOPE_STEP, quality + effort.SLOPE_STEP))
    lam = (bpp_high - bpp_low) / (mse_low - mse_high)
    assert lam > 0
    base, optimized = (mse_and_bpp(aecodec.encode(img, quality, effort=level, weights=model), img, model) for level in (0, 1))
    assert lam * optimized[0] + optimized[1] < lam * base[0] + base[1]


def test_effort_optimizes_at_the_images_own_slope(tiny_model, photo, monkeypatch):
    """The lambda effort uses is the measured slope where there is one, the quality's training lambda else."""
    fast_schedules(monkeypatch)
    seen = []
    original_loss = effort._Problem.loss
    monkeypatch.setattr(effort._Problem, "loss", lambda self, *args: seen.append(self.lam) or original_loss(self, *args))
    monkeypatch.setattr(effort, "local_lambda", lambda *args: 0.5)
    aecodec.encode(photo, 5, effort=1, weights=tiny_model)
    assert set(seen) == {0.5 * 255**2}
    seen.clear()
    monkeypatch.setattr(effort, "local_lambda", lambda *args: None)
    aecodec.encode(photo, 5, effort=1, weights=tiny_model)
    assert set(seen) == {float(lambda_for(torch.tensor([5.0]))[0]) * 255**2}


def test_rate_search_with_effort_returns_the_best_file_that_fits(tiny_model, photo, monkeypatch):
    fast_schedules(monkeypatch)
    # at the training lambda, where effort's files on this random model are the smaller ones
    monkeypatch.setattr(effort, "local_lambda", lambda *args: None)
    low, high = (len(aecodec.encode(photo, q, effort=1, weights=tiny_model)) for q in (3.0, 6.0))
    budget = (low + high) // 2
    data = aecodec.encode(photo, target_bytes=budget, effort=1, weights=tiny_model)
    quality = aecodec.info(data)["quality"]
    assert len(data) <= budget and 3.0 < quality < 6.0
    assert data == aecodec.encode(photo, quality, effort=1, weights=tiny_model)  # an effort file
    assert len(aecodec.encode(photo, round(quality + 0.01, 3), effort=1, weights=tiny_model)) > budget


def test_rate_search_falls_back_to_effort_zero_when_effort_files_are_bigger(tiny_model, photo, monkeypatch):
    """An effort that spends bytes on fidelity (here: y doubled, many more bits) at effort 0's best fit
    leaves that fit as the answer: it still fits, and no effort file is assumed smaller."""
    def bigger(net, x, y, z, *args, **kwargs):
        return 2 * y, z

    monkeypatch.setattr(api, "optimize_latents", bigger)
    budget = len(aecodec.encode(photo, 5.0, weights=tiny_model))
    assert len(aecodec.encode(photo, 5.0, effort=1, weights=tiny_model)) > budget
    data = aecodec.encode(photo, target_bytes=budget, effort=1, weights=tiny_model)
    assert data == aecodec.encode(photo, target_bytes=budget, weights=tiny_model)


def test_local_lambda_is_the_slope_of_the_images_curve():
    """On the shipped model: the chord of effort 0's (MSE, bpp) from the quality to SLOPE_STEP below (above
    at the bottom of the range), in lambda_for's units, kept within the training lambdas one quality
    either side."""
    net = effort.training_model(aecodec.load_model().net, torch.device("cpu"))
    # 256x256: at 64x64 the bottom qualities' files are so small that the chord need not descend
    x = torch.from_numpy(natural_like(256, 256, seed=3)).permute(2, 0, 1)[None].float() / 255
    medians = net.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)

    def point(q):  # effort 0's (MSE, bpp) at quality q
        at = torch.tensor([q])
        with torch.no_grad():
            y_at, z_at = net.analysis(x, at)
            mse, bpp = effort._Problem(net, x, net.gains(at)[1], 0.0, medians, torch.float32).terms(y_at, z_at, None)
        return mse.item(), bpp.item()

    for q, low_q, high_q in ((1.0, 1.0, 1.5), (1.3, 1.3, 1.8), (4.0, 3.5, 4.0), (10.0, 9.5, 10.0)):
        quality = torch.tensor([q])
        with torch.no_grad():
            y, _ = net.analysis(x, quality)
        problem = effort._Problem(net, x, net.gains(quality)[1], 0.0, medians, torch.float32)
        (mse_low, bpp_low), (mse_high, bpp_high) = point(low_q), point(high_q)
        low, high = (float(lambda_for(torch.tensor([min(10.0, max(1.0, q + step))]))[0]) for step in (-1, 1))
        expected = min(max((bpp_high - bpp_low) / ((mse_low - mse_high) * 255**2), low), high)
        assert effort.local_lambda(problem, y, quality, point(q)) == pytest.approx(expected, rel=1e-3)


def test_local_lambda_is_none_where_the_curve_does_not_descend(tiny_model, monkeypatch):
    """Only points whose MSE falls and whose bits rise with quality give a lambda (then within the
    training lambdas a quality either side); flat or rising curves give None."""
    net = effort.training_model(tiny_model.net, torch.device("cpu"))
    x = torch.rand(1, 3, 64, 64)
    quality = torch.tensor([5.0])
    with torch.no_grad():
        y, _ = net.analysis(x, quality)
    problem = effort._Problem(net, x, net.gains(quality)[1], 0.0, net.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1), None)

    def measured(other, at):  # (MSE, bpp) SLOPE_STEP from the quality (below, but at the bottom), and at it
        monkeypatch.setattr(effort._Problem, "terms", lambda self, *args: tuple(map(torch.tensor, other)))
        return effort.local_lambda(problem, y, quality, at)

    assert measured((0.01, 1.0), (0.01, 1.0)) is None  # flat
    assert measured((0.01, 1.0), (0.02, 2.0)) is None  # MSE rises with quality
    assert measured((0.01, 2.0), (0.02, 1.0)) is None  # both fall: a positive secant, but no descent
    lam_4, lam_6 = (float(lambda_for(torch.tensor([q]))[0]) for q in (4.0, 6.0))
    slope = measured((0.02, 1.0), (0.01, 1.0 + 0.01 * 255**2 * lam_4 * 1.5))  # 1.5x lambda(4): inside
    assert slope == pytest.approx(1.5 * lam_4)
    assert measured((0.02, 1.0), (0.01, 1.0 + 0.01 * 255**2 * lam_6 * 10)) == pytest.approx(lam_6)  # steep: capped
    # Near the bottom of the range the chord goes up: the point measured is then the higher quality's.
    quality = torch.tensor([1.2])
    assert measured((0.02, 1.0), (0.01, 2.0)) is None  # measured above with more MSE and fewer bits
    lam_1 = float(lambda_for(torch.tensor([1.0]))[0])
    assert measured((0.01, 1.0 + 0.01 * 255**2 * lam_1 * 1.5), (0.02, 1.0)) == pytest.approx(1.5 * lam_1)


def test_each_run_starts_from_ga_and_the_best_is_kept(tiny_model, photo, monkeypatch):
    """A level's runs each start from g_a's latents and the best exact loss over all is kept: adding a
    harmful run (a step of a hundred bins) before or after a good one changes nothing."""
    monkeypatch.setattr(effort, "local_lambda", lambda *args: None)
    good, harmful = effort.Schedule(3, 2e-2), effort.Schedule(2, 100.0)
    monkeypatch.setattr(effort, "SCHEDULES", {1: (good,), 2: (good, harmful), 3: (harmful, good)})
    monkeypatch.setattr(effort, "ROUNDING", {1: effort.Rounding(0), 2: effort.Rounding(0), 3: effort.Rounding(0)})  # the runs alone
    files = [aecodec.encode(photo, 5, effort=level, weights=tiny_model) for level in (1, 2, 3)]
    assert files[0] == files[1] == files[2] != aecodec.encode(photo, 5, weights=tiny_model)


def test_tiled_synthesis_gives_the_untiled_gradient(tiny_model, monkeypatch):
    """Big images run g_s on checkpointed tiles: the same values and gradients, bounded memory."""
    net = tiny_model.net
    torch.manual_seed(0)
    y = torch.randn(1, net.M, 12, 9, requires_grad=True)
    inv_gain = torch.ones(1, net.M, 1, 1)
    expected = net.g_s(y)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), y)
    monkeypatch.setattr(effort, "TILE", 64)  # 4x4 latent tiles
    tiled = effort._synthesis(net, y, inv_gain, None)
    (grad,) = torch.autograd.grad(tiled.square().sum(), y)
    torch.testing.assert_close(tiled, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


def test_interrupted_effort_encode_leaves_no_file(tmp_path, tiny_weights, monkeypatch):
    from PIL import Image

    from aecodec.cli import main

    src, out = tmp_path / "in.png", tmp_path / "out.aec"
    Image.fromarray(natural_like(40, 60)).save(src)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "optimize_latents", interrupted)
    assert main(["compress", str(src), str(out), "--effort", "2", "--weights", str(tiny_weights), "-q"]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_cli_effort(tmp_path, tiny_weights, monkeypatch):
    from PIL import Image

    from aecodec.cli import main

    fast_schedules(monkeypatch)
    src = tmp_path / "in.png"
    Image.fromarray(natural_like(40, 60)).save(src)
    for level in (0, 2):
        out = tmp_path / f"e{level}.aec"
        assert main(["compress", str(src), str(out), "--effort", str(level), "--weights", str(tiny_weights), "-q"]) == 0
        assert aecodec.decode(out.read_bytes(), weights=tiny_weights).size == (60, 40)
    assert (tmp_path / "e0.aec").read_bytes() != (tmp_path / "e2.aec").read_bytes()
    # checked by encode(), like the other options' values: an OptionError, exit code 1, no file
    assert main(["compress", str(src), str(tmp_path / "x.aec"), "--effort", "4", "-q"]) == 1
    assert not (tmp_path / "x.aec").exists()


def test_effort_without_compressai_is_a_clear_error(tiny_model, photo, monkeypatch):
    import sys
    import weakref

    monkeypatch.setattr(effort, "_TRAINING_MODELS", weakref.WeakKeyDictionary())
    monkeypatch.setitem(sys.modules, "aecodec.model", None)  # as if the train extra were not installed
    with pytest.raises(aecodec.OptionError, match="compressai"):
        aecodec.encode(photo, 5, effort=1, weights=tiny_model)
    assert aecodec.encode(photo, 5, weights=tiny_model)  # effort 0 needs nothing more


@pytest.mark.parametrize("last_checks, rounding", [(4, 0), (0, 1)])
def test_effort_keeps_ga_latents_when_optimizing_only_hurts(tiny_model, photo, monkeypatch, last_checks, rounding):
    """The exact loss of g_a's latents is the bar: runs whose every check is worse (step sizes of
    a hundred quantization bins) give effort 0's file, byte for byte; so does a last run without checks
    whose latents the refinement cannot bring below the bar."""
    monkeypatch.setattr(effort, "SCHEDULES", {1: (effort.Schedule(4, 100.0, checks=2),
                                                  effort.Schedule(2, 50.0, checks=last_checks))})
    monkeypatch.setattr(effort, "ROUNDING", {1: effort.Rounding(rounding)})
    # at the training lambda: a random model's measured slope can be so flat that emptying y pays
    monkeypatch.setattr(effort, "local_lambda", lambda *args: None)
    assert aecodec.encode(photo, 5, effort=1, weights=tiny_model) == aecodec.encode(photo, 5, weights=tiny_model)


@pytest.mark.parametrize("steps, checks", [(3, 1), (7, 2), (40, 4), (5, 8)])
def test_schedule_checks_are_spread_and_include_the_last_step(steps, checks):
    schedule = effort.Schedule(steps, 1e-2, checks=checks)
    checked = [step for step in range(steps) if schedule.is_check(step)]
    assert len(checked) == min(steps, checks) and checked[-1] == steps - 1


def test_soft_round_tends_to_rounding_and_keeps_a_gradient():
    values = torch.tensor([-1.7, -0.2, 0.3, 0.45, 0.55, 2.9], requires_grad=True)
    assert torch.equal(effort.soft_round(values, None), values.detach().round())
    torch.testing.assert_close(effort.soft_round(values, 0.01), values.detach().round(), atol=1e-4, rtol=0)
    soft = effort.soft_round(values, 0.5)
    assert torch.all((soft - values.detach().floor()).abs() < 1)  # between floor and ceil
    (grad,) = torch.autograd.grad(soft.sum(), values)
    assert torch.all(grad > 0)


def test_soft_round_draws_are_seeded_and_tend_to_floor_or_ceil():
    values = torch.linspace(-2.4, 2.4, 200, requires_grad=True)
    floor = values.detach().floor()
    draw = lambda tau, seed: effort.soft_round(values, tau, torch.Generator().manual_seed(seed))  # noqa: E731
    torch.testing.assert_close(draw(0.5, 3), draw(0.5, 3), rtol=0, atol=0)
    assert not torch.equal(draw(0.5, 3), draw(0.5, 4))  # the draws are random, not the noise-free mix
    assert not torch.allclose(draw(0.5, 3), effort.soft_round(values, 0.5))
    # SGA's distribution: torch's RelaxedOneHotCategorical over the logits already divided by tau, from
    # the same uniform stream (a fresh CPU generator and the global one seeded alike draw the same).
    tau, frac = 0.4, (values.detach() - floor).clamp(1e-5, 1 - 1e-5)
    logits = torch.stack([-torch.atanh(frac), -torch.atanh(1 - frac)], dim=-1) / tau
    torch.manual_seed(11)
    reference = torch.distributions.RelaxedOneHotCategorical(torch.tensor(tau), logits=logits).rsample()[..., 1]
    torch.testing.assert_close(draw(tau, 11).detach(), floor + reference, atol=1e-5, rtol=0)
    cold = draw(0.02, 3)
    assert torch.all(torch.minimum((cold - floor).abs(), (cold - floor - 1).abs()) < 1e-3)
    (grad,) = torch.autograd.grad(draw(0.5, 3).sum(), values)
    assert torch.all(grad >= 0) and grad.sum() > 0


def test_effort_with_draws_is_reproducible(tiny_model, photo, monkeypatch):
    monkeypatch.setattr(effort, "SCHEDULES", {1: (effort.Schedule(4, 2e-2, draws=True),)})
    monkeypatch.setattr(effort, "ROUNDING", {1: effort.Rounding(0)})
    first = aecodec.encode(photo, 5, effort=1, weights=tiny_model)
    assert first == aecodec.encode(photo, 5, effort=1, weights=tiny_model)
    assert first != aecodec.encode(photo, 5, effort=0, weights=tiny_model)
    monkeypatch.setattr(effort, "SCHEDULES", {1: (effort.Schedule(4, 2e-2),)})
    assert first != aecodec.encode(photo, 5, effort=1, weights=tiny_model)  # the draws were used


def shipped_problem(quality: float, side: int = 64, seed: int = 5):
    """The shipped model's loss on a natural-like image (64x64 unless `side` says otherwise) at its measured
    slope (as effort measures it), with g_a's latents."""
    model = aecodec.load_model()
    net = effort.training_model(model.net, torch.device("cpu"))
    x = torch.from_numpy(natural_like(side, side, seed=seed)).permute(2, 0, 1)[None].float() / 255
    q = torch.tensor([quality])
    with torch.no_grad():
        y, z = net.analysis(x, q)
    problem, loss = effort.image_problem(net, x, y, z, q, None)
    return problem, (loss, y, z)


@pytest.mark.parametrize("quality", [1.2, 5.0])  # the chord above, and below
def test_image_problem_returns_ga_s_exact_loss_at_its_lambda(quality):
    """The point at the quality the slope is measured from is g_a's exact loss, shared: the same number
    exact_loss gives at the measured lambda (not the training lambda's). A 256x256 image whose curve
    descends clearly at the bottom: at qualities 1-2 smaller ones (or seed 5's flatter image) code to so
    few bytes that their bits need not rise over half a quality, and then no slope is measured."""
    problem, (loss, y, z) = shipped_problem(quality, side=256, seed=3)
    assert problem.lam != float(lambda_for(torch.tensor([quality]))[0]) * 255**2
    assert loss == problem.exact_loss(y, z)


@pytest.mark.parametrize("quality", [3.0, 7.0])
def test_refined_rounding_lowers_the_exact_loss(quality):
    """On the shipped model the refinement finds moves that pay, the loss it reports is the exact loss of
    the latents it returns, those latents are their means plus whole levels (what the encoder's rounding
    reproduces), and it is deterministic."""
    problem, start = shipped_problem(quality)
    loss, y, z = effort.refine_rounding(problem, start, 6)
    assert loss < start[0] * 0.999
    assert problem.exact_loss(y, z) == pytest.approx(loss, rel=1e-5)
    with torch.no_grad():
        _, _, means = effort._hyper(problem, z)
    levels = y - means
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    again = effort.refine_rounding(problem, start, 6)
    assert again[0] == loss and torch.equal(again[1], y)


@pytest.mark.parametrize("probe_windows", [False, True])
def test_refined_rounding_probes_the_curvature_where_told(monkeypatch, probe_windows):
    """The curvature comes from the whole plane's synthesis or, with probe_windows (effort 1), from its
    windows': either way once, and the refinement lowers the exact loss."""
    problem, start = shipped_problem(5.0, side=256)
    probed = []
    windowed = effort._windowed_curvature
    monkeypatch.setattr(effort, "_windowed_curvature", lambda *args: probed.append("windows") or windowed(*args))
    whole = effort._channel_curvature
    monkeypatch.setattr(effort, "_channel_curvature", lambda *args: probed.append(args[2].shape[-1]) or whole(*args))
    assert effort.refine_rounding(problem, start, 3, probe_windows=probe_windows)[0] < start[0]
    assert probed == (["windows", effort.PROBE_WINDOW] if probe_windows else [start[1].shape[-1]])


def test_effort_1_alone_probes_on_windows(tiny_model, monkeypatch):
    picture = natural_like(256, 256, seed=3)
    probed = []
    windowed = effort._windowed_curvature
    monkeypatch.setattr(effort, "_windowed_curvature", lambda *args: probed.append(1) or windowed(*args))
    aecodec.encode(picture, 5, effort=1, weights=tiny_model)
    assert probed == [1]
    monkeypatch.setattr(effort, "SCHEDULES", {**effort.SCHEDULES, 3: (effort.Schedule(2, 5e-2, checks=1),)})
    for level in (2, 3):
        aecodec.encode(picture, 5, effort=level, weights=tiny_model)
    assert probed == [1]


def test_refined_rounding_keeps_its_input_when_no_move_pays(monkeypatch):
    """Moves predicted to cost (a huge curvature) are never tried: one synthesis (the start's loss and
    gradient), then the input comes back as it is."""
    problem, start = shipped_problem(5.0)
    monkeypatch.setattr(effort, "_channel_curvature", lambda *args: torch.tensor(1e9))
    calls = []
    synthesis = effort._synthesis
    monkeypatch.setattr(effort, "_synthesis", lambda *args: calls.append(1) or synthesis(*args))
    assert effort.refine_rounding(problem, start, 3) is start
    assert len(calls) == 1


def test_refined_rounding_rejects_moves_that_raise_the_exact_loss(monkeypatch):
    """A move is kept only where the exact loss falls: more iterations never end higher, and where the
    moves hurt (a curvature that hides their cost, so every position moves at once) the input comes back."""
    problem, start = shipped_problem(7.0)
    losses = [effort.refine_rounding(problem, start, n)[0] for n in range(1, 8)]
    assert all(later <= earlier for earlier, later in zip(losses, losses[1:])) and losses[-1] < start[0]
    monkeypatch.setattr(effort, "_channel_curvature", lambda *args: torch.tensor(-1e9))
    assert effort.refine_rounding(problem, start, 1) is start


@pytest.mark.parametrize("spacing", [1, 2])
def test_refined_rounding_moves_one_value_per_position_on_the_grid(spacing):
    """One iteration's moves: at most one channel per position, and with a spacing, only at positions of
    one offset of the grid (moves there overlap least in g_s's output)."""
    problem, start = shipped_problem(7.0)
    loss, y, z = effort.refine_rounding(problem, start, 1, spacing)
    per_position = moved_positions(problem, start, y, z)
    assert loss < start[0] and per_position.max() == 1
    rows, columns = torch.nonzero(per_position, as_tuple=True)
    assert len(set((rows % spacing).tolist())) == 1 and len(set((columns % spacing).tolist())) == 1


def test_refined_rounding_cycles_the_grids_offsets():
    """Later iterations move values at the grid's other offsets; a y smaller than the grid (one position,
    so three empty offsets) is refined too."""
    problem, start = shipped_problem(7.0)
    _, y, z = effort.refine_rounding(problem, start, 8, spacing=2)
    rows, columns = torch.nonzero(moved_positions(problem, start, y, z), as_tuple=True)
    assert len(set(zip((rows % 2).tolist(), (columns % 2).tolist()))) > 1
    problem, start = shipped_problem(7.0, side=16)
    assert effort.refine_rounding(problem, start, 4, spacing=2)[0] < start[0]


@pytest.mark.parametrize("fields", [dict(iterations=-1), dict(iterations=2, spacing=0)])
def test_rounding_refuses_what_cannot_run(fields):
    with pytest.raises(ValueError, match="spacing >= 1"):
        effort.Rounding(**fields)


def moved_positions(problem, start, y, z) -> torch.Tensor:
    """How many of y's values at each position differ from the start's levels (z kept, so the same means)."""
    _, _, means = effort._hyper(problem, z)
    return ((y - means).round() != (start[1] - means).round()).sum(1)[0]


def test_refined_levels_are_the_encoders_symbols():
    """Effort's y is its float means plus whole levels; the encoder rounds y around the integer
    hyper-synthesis' means instead, and must find exactly those levels."""
    from aecodec.entropy import ACT_FRACTION

    model = aecodec.load_model()
    problem, start = shipped_problem(7.0)
    _, y, z = effort.refine_rounding(problem, start, 6)
    z_hat, _, means = effort._hyper(problem, z)
    _, integer_means = model.latents.hyper(z_hat)
    levels = (y - means).round()
    assert torch.equal((y.double() - integer_means.double() * 2.0**-ACT_FRACTION).round(), levels.double())


def test_channel_curvature_matches_the_jacobians_columns():
    """The curvature per channel is 2 * lam * |g_s's Jacobian column|^2 / elements, averaged over the
    channel: the probe's estimate against columns by central differences, for every 12th channel (each
    estimate is noisy; their mean ratio is not)."""
    problem, (_, y, z) = shipped_problem(5.0, side=128)
    _, _, means = effort._hyper(problem, z)
    y_hat = (means + (y - means).round()).requires_grad_(True)
    with torch.enable_grad():
        x_hat = effort._synthesis(problem.net, y_hat, problem.inv_gain, None)
        estimate = effort._channel_curvature(problem, x_hat, y_hat, torch.Generator().manual_seed(0))
    y_hat = y_hat.detach()
    positions = y.shape[2] * y.shape[3]
    ratios = []
    for channel in range(0, y.shape[1], 12):
        # One batch item per position of the channel, each moved a little either way.
        tangents = torch.zeros(positions, *y.shape[1:])
        tangents[torch.arange(positions), channel] = torch.eye(positions).reshape(positions, *y.shape[2:])
        with torch.no_grad():
            ahead, behind = (effort._synthesis(problem.net, y_hat + sign * 1e-2 * tangents, problem.inv_gain, None)
                             for sign in (1, -1))
        norms = ((ahead - behind) / 2e-2).square().flatten(1).sum(1)
        ratios.append(float(estimate[0, channel]) / (2 * problem.lam * float(norms.mean()) / problem.target.numel()))
    assert 0.5 < min(ratios) and max(ratios) < 2
    assert 0.8 < np.mean(ratios) < 1.25


def test_curvature_probe_windows_spread_within_the_plane():
    """Windows lie within the plane, apart, at most four; none where they would cover half of it."""
    assert effort._probe_windows(16, 16) == [(4, 4, 8, 8)]
    assert effort._probe_windows(32, 48) == [(4, 8, 8, 8), (4, 32, 8, 8), (20, 8, 8, 8), (20, 32, 8, 8)]
    assert effort._probe_windows(5, 40) == [(0, 6, 5, 8), (0, 26, 5, 8)]
    assert effort._probe_windows(8, 12) == effort._probe_windows(1, 1) == effort._probe_windows(11, 11) == []
    for height, width in [(9, 200), (300, 17), (250, 188), (12, 11)]:
        windows = effort._probe_windows(height, width)
        assert 1 <= len(windows) <= 4
        covered = torch.zeros(height, width, dtype=torch.int)
        for top, left, rows, columns in windows:
            assert 0 <= top and top + rows <= height and 0 <= left and left + columns <= width
            assert rows == min(height, effort.PROBE_WINDOW) and columns == min(width, effort.PROBE_WINDOW)
            covered[top : top + rows, left : left + columns] += 1
        assert covered.max() == 1 and 2 * covered.sum() < height * width


@pytest.mark.parametrize("side, count", [(256, 1), (512, 4)])
def test_curvature_from_windows_agrees_with_the_whole_plane(side, count):
    """The probe on windows a quarter of the plane's positions estimates what the probe on the whole
    plane does: per channel within the probe's own noise, on average within 25 % (here ~10 % above)."""
    problem, (_, y, z) = shipped_problem(5.0, side=side)
    _, _, means = effort._hyper(problem, z)
    y_hat = (means + (y - means).round()).requires_grad_(True)
    windows = effort._probe_windows(*y.shape[-2:])
    assert len(windows) == count
    windowed = effort._windowed_curvature(problem, y_hat.detach(), torch.Generator().manual_seed(0), windows)
    with torch.enable_grad():
        x_hat = effort._synthesis(problem.net, y_hat, problem.inv_gain, None)
        whole = effort._channel_curvature(problem, x_hat, y_hat, torch.Generator().manual_seed(1))
    ratios = (windowed / whole).flatten()
    assert 0.8 < float(ratios.mean()) < 1.25 and 0.8 < float(ratios.median()) < 1.25
    assert float(ratios.quantile(0.1)) > 0.5 and float(ratios.quantile(0.9)) < 2


def test_refined_rounding_on_tiles_matches_untiled(monkeypatch):
    """Big images run g_s on checkpointed tiles: the refinement's gradient and curvature probe go
    through them too, and it reaches the same loss as on the whole image."""
    problem, start = shipped_problem(5.0)
    whole = effort.refine_rounding(problem, start, 4)
    monkeypatch.setattr(effort, "TILE", 32)  # 2x2 latent tiles of the 64x64 image
    tiles = effort.refine_rounding(problem, start, 4)
    assert tiles[0] < start[0]
    assert tiles[0] == pytest.approx(whole[0], rel=1e-3)


@pytest.mark.parametrize("runs", [
    lambda checks: (effort.Schedule(4, 2e-2, checks=checks),),
    lambda checks: (effort.Schedule(4, 2e-2, checks=checks), effort.Schedule(2, 100.0, checks=1)),
], ids=["alone", "another-run-after"])
def test_a_run_without_checks_has_its_last_latents_measured(tiny_model, photo, monkeypatch, runs):
    """Without a refinement to measure them, a run's last latents are measured on their own (also when
    another run follows): the same file as with a check at the last step, and not effort 0's."""
    monkeypatch.setattr(effort, "ROUNDING", {1: effort.Rounding(0)})
    monkeypatch.setattr(effort, "local_lambda", lambda *args: None)
    files = []
    for checks in (1, 0):
        monkeypatch.setattr(effort, "SCHEDULES", {1: runs(checks)})
        files.append(aecodec.encode(photo, 5, effort=1, weights=tiny_model))
    assert files[0] == files[1] != aecodec.encode(photo, 5, weights=tiny_model)


@pytest.mark.parametrize("checks", [0, 1])
def test_the_refinement_starts_from_a_last_run_without_checks(tiny_model, photo, monkeypatch, checks):
    """A last run without checks hands its latents to the refinement unmeasured; with checks, the
    refinement starts from the best latents measured."""
    monkeypatch.setattr(effort, "SCHEDULES", {1: (effort.Schedule(2, 5e-2, checks=checks),)})
    monkeypatch.setattr(effort, "ROUNDING", {1: effort.Rounding(1)})
    handed = []
    refine = effort.refine_rounding
    monkeypatch.setattr(effort, "refine_rounding", lambda *args, **kwargs: handed.append(args[-1]) or refine(*args, **kwargs))
    aecodec.encode(photo, 5, effort=1, weights=tiny_model)
    assert (handed[0] is None) == bool(checks)


def test_refinement_from_unevaluated_latents_competes_with_best():
    """Latents handed over without their loss are refined and come back only if they beat best's: from
    g_a's latents the refinement lowers the loss; from far worse ones, best comes back as it is."""
    problem, best = shipped_problem(7.0)
    refined = effort.refine_rounding(problem, best, 4, unchecked=best[1:])
    assert refined[0] < best[0] and refined[0] == pytest.approx(effort.refine_rounding(problem, best, 4)[0], rel=1e-6)
    worse = (best[1] + 1.0, best[2])
    assert problem.exact_loss(*worse) > best[0] * 1.5
    assert effort.refine_rounding(problem, best, 4, unchecked=worse) is best
    bar = (problem.exact_loss(*worse), *best[1:])  # a bar the refined latents pass
    loss, y, _ = effort.refine_rounding(problem, bar, 4, unchecked=worse)
    assert loss < bar[0] and problem.exact_loss(y, best[2]) == pytest.approx(loss, rel=1e-5)
    assert moved_positions(problem, bar[:1] + worse, y, best[2]).max() <= 4  # refined from worse: a move per iteration
