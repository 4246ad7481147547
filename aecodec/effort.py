"""Encoder effort: optimize one image's latents for its real rate-distortion cost; the decoder is untouched.

g_a only predicts good latents (the "amortization gap"). At effort > 0, y and z start from g_a's guess and
Adam minimizes lambda * 255^2 * MSE + bpp for this image, lambda the slope of this image's own curve (below),
with an annealed soft rounding in place of rounding: SGA's relaxation (stochastic Gumbel annealing, Yang, Bamler
and Mandt, NeurIPS 2020), the softmax-weighted mix of floor and ceil whose temperature falls towards hard
rounding. Effort 1 and 2 run it without its Gumbel noise (tau divides the logits once, down to only 0.25):
on the few steps they afford, the noise-free form lowered the real loss more than SGA's draws (32 steps
on a training crop: -6.2 % against -4.8 %), but it stops gaining after ~20 steps. Effort 3 runs SGA's
draws themselves (seeded, so an encode on a CPU is reproducible), which keep gaining over hundreds of steps.
Straight-through rounding in the synthesis did worse than either. The latents with the lowest exact loss
(hard rounding, bits from the likelihoods) at that lambda among g_a's and a few checkpoints (at efforts 1
and 2 the runs' last latents, measured by the refinement below) are kept, so effort never raises the
model's estimate of that loss. They then take the ordinary encoder path (z rounded,
integer hyper-synthesis, y rounded around its means), so the file is an ordinary .aec.

At every level the kept latents' rounding is then refined (rate-distortion optimized quantization, as
classic encoders do with their coefficients): each iteration moves the y values whose move by one level
up or down lowers the loss the most, predicted from the exact change in bits (the Gaussian's tables
are fixed by z) and a second-order estimate of the change in distortion (the gradient through g_s and a
per-channel curvature), and keeps the moves only if the exact loss falls (else it tries half as many).
At most one value moves per position, and at efforts 2 and 3 only positions on a grid two apart, its
offset cycling: moves that overlap in g_s's output interact in ways the per-channel curvature does not
see, so before this most sets of moves were rejected and halved, down to as few as 7 values. It works
on the hard-rounded latents themselves, so unlike the soft rounding it stays within the small gap
between the model's loss and the file's (float means and likelihoods against the integer
hyper-synthesis and tabulated CDFs).

The lambda is this image's own: the slope of effort 0's rate-distortion curve at the quality, measured
on the image (the chord to SLOPE_STEP below, above at the bottom of the range, from the point where
g_a's exact loss is measured). With the quality's training lambda the optimization slid the low
qualities' points along the curve (fewer bits for much less PSNR), which saves little at equal PSNR; at
the curve's own slope it moves the point below the curve. On training crops the measured slope was
0.9-3.2x the training lambda, mostly 1.2-1.9x.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import numbers
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .errors import OptionError
from .network import TILE, TILE_MARGIN, Y_STRIDE, lambda_for, run_in, synthesis_dtype, tiled
from .quality import LEARNED_MAX, QUALITY_MIN

EFFORT_MAX = 3
# The rate search assumes effort saves less than this fraction of effort 0's bytes at a quality
# (Kodak crops: 0-20 %; at the top qualities effort may spend a little more, on fidelity).
EFFORT_MAX_SAVING = 0.3


@dataclass(frozen=True)
class Schedule:
    steps: int
    lr: float
    hold: float = 0.35  # fraction of the steps at the start temperature before it decays
    tau_start: float = 0.5
    tau_end: float = 0.25
    # Exact evaluations (hard rounding) spread over the run; the best latents seen are kept. 0: none; the
    # run's last latents are measured once after it, by the rounding refinement's first iteration where
    # one follows (a synthesis less than a check at the last step).
    checks: int = 4
    draws: bool = False  # SGA's Gumbel draws (seeded) instead of the noise-free mix: worse short, better long

    def temperature(self, step: int) -> float:
        start = self.hold * self.steps
        if step < start:
            return self.tau_start
        progress = (step - start) / max(1.0, self.steps - 1 - start)
        return self.tau_start * (self.tau_end / self.tau_start) ** progress

    def learning_rate(self, step: int) -> float:
        """Cosine decay towards a tenth: as the temperature falls the gradients grow faster than Adam's
        second moment follows."""
        return self.lr * (0.55 + 0.45 * math.cos(math.pi * step / self.steps))

    def is_check(self, step: int) -> bool:
        """Whether the latents after `step` get an exact evaluation: evenly spaced, the last step always
        (unless the run has no checks)."""
        return (step + 1) * self.checks // self.steps != step * self.checks // self.steps


# The slope of effort 0's curve is measured on the chord to the quality this far below (above at the bottom).
SLOPE_STEP = 0.5

# Effort level -> its runs, each from g_a's latents (the best exact loss of all is kept), chosen on 256x256
# crops of training photos (README "Encoder effort"). Noise-free runs: the exact loss falls for ~20
# steps, then rises again (the soft loss parts from the exact one, at a fixed temperature too), and a
# few steps followed by the rounding refinement saved more than 0.11.0's 12 steps and 20 iterations:
# effort 1 runs 1 (below), effort 2 runs 2. Their runs have no checks: the refinement measures the
# last latents' exact loss.
# SGA's draws lose to the noise-free mix on short runs (32 steps: -4.8 % against -6.2 %) but keep
# gaining on long ones, so effort 3 is one long run with draws at lr 2e-2, the best of the rates
# measured at 300 and 600 steps; 1200 steps saved more than 600 (bench/results/effort-choice/README.md).
SCHEDULES = {
    1: (Schedule(steps=1, lr=5e-2, checks=0),),
    2: (Schedule(steps=2, lr=5e-2, checks=0),),
    3: (Schedule(steps=1200, lr=2e-2, tau_end=0.1, checks=24, draws=True),),
}


@dataclass(frozen=True)
class Rounding:
    """The rounding refinement after a level's runs."""

    iterations: int  # at most (each costs about one step of a run; it stops earlier when no move pays)
    # Moves only at positions on a grid this far apart, its offset cycling with the iteration: moves at
    # neighbouring positions overlap in g_s's output, which the per-channel curvature does not see.
    spacing: int = 1
    # The curvature probe on a few windows of y (_probe_windows) instead of the whole plane: a quarter of
    # a 256 crop's synthesis, for a slightly coarser curvature (for a level whose time is its bound).
    probe_windows: bool = False

    def __post_init__(self):
        if self.iterations < 0 or self.spacing < 1:
            raise ValueError(f"a refinement needs iterations >= 0 and spacing >= 1, got {self}")


# Effort level -> its rounding refinement. Chosen on six training photos by BD-rate against effort 0
# (bench/results/effort-choice/README.md): 2 steps then 2 iterations saved -7.8 % where 4 steps alone
# saved -5.2 %, in ~1.2x their time. Effort 1 runs 1 step then 2 iterations: -7.1 % against 2 and 2's
# -7.9 %, in ~0.9x the time (one run each, train-effort1-chord-slope), the cheapest form measured that
# keeps a margin over its -4 % (the refinement alone, 2 or 3 iterations, -5.5 / -6.2 % here, saved under
# 4 % on the Kodak crops; encode times: README "Encoder effort"). In one later run 4 steps then 22 iterations
# (spacing 2) saved -11.8 %, 2 steps then 14 -10.4 % in 0.68x the time, then in another 12 -10.2 % in
# 0.89x the time of 14 (train-cheaper-levels-no-last-check, train-effort2-iterations): effort 2 runs 2
# and 12, which keeps within its time bound (30x effort 0's encode) with a margin on an Intel Xeon too.
# Effort 3 keeps its 30 iterations, on effort 2's grid (not measured apart from the whole level).
# Effort 1 probes the curvature on windows, for ~0.5x effort 0's encode time less: -5.56 against -5.59 %
# on the Kodak crops, -7.00 against -7.15 % on the training photos. At effort 2 the windows cost more
# (-8.56 against -9.05 %, -9.55 against -10.26 %) for little time (an A/B probe script, NEWS).
ROUNDING = {1: Rounding(2, probe_windows=True), 2: Rounding(12, spacing=2), 3: Rounding(30, spacing=2)}


def check_effort(effort) -> int:
    if isinstance(effort, bool) or not isinstance(effort, numbers.Integral) or not 0 <= effort <= EFFORT_MAX:
        raise OptionError(f"effort must be an integer in [0, {EFFORT_MAX}], got {effort!r}")
    return int(effort)


def soft_round(values: Tensor, tau: float | None, generator: torch.Generator | None = None) -> Tensor:
    """floor + the weight of ceil in a softmax between floor and ceil at temperature tau; None: round.

    The nearer a value is to one of them, the more weight it gets (logits -atanh(distance) / tau, as in
    SGA); as tau falls the mix becomes hard rounding, yet the gradient still reaches the value. With a
    generator, SGA's own draw instead: Gumbel noise on those logits and a second division by tau (its
    RelaxedOneHotCategorical), whose expected loss stays closer to hard rounding's over long runs."""
    if tau is None:
        return values.round()
    low = values.detach().floor()
    frac = (values - low).clamp(1e-5, 1 - 1e-5)
    logits = torch.stack([-torch.atanh(frac), -torch.atanh(1 - frac)], dim=-1) / tau
    if generator is not None:
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-10, 1 - 1e-7)
        logits = (logits - torch.log(-torch.log(uniform))) / tau
    return low + torch.softmax(logits, dim=-1)[..., 1]


_TRAINING_MODELS = weakref.WeakKeyDictionary()  # coding Network -> its AECModel, made once per network


def training_model(net, device: torch.device):
    """compressai's AECModel holding `net`'s weights, frozen: the coding Network keeps the density models
    that give the rate its gradient only as buffers. Its g_s is a copy of the Network's (the decoder's
    layers: OutputDeconv, and GDN's gradient in fewer passes); its other transforms compute what the
    Network's do."""
    model = _TRAINING_MODELS.get(net)
    if model is None:
        try:
            from .model import AECModel
        except ImportError as exc:  # compressai comes with the train extra; coding at effort 0 needs none
            raise OptionError(f"effort > 0 needs compressai (pip install 'aecodec[train]'): {exc}") from exc
        model = AECModel(**net.config)
        model.load_state_dict({key: value.cpu() for key, value in net.state_dict().items()})
        # g_s runs channels-last (_synthesis); its weights in that layout too spare oneDNN a reorder of
        # each transposed convolution's weights in every pass, forward and backward (the same values).
        model.g_s = copy.deepcopy(net.g_s).cpu().to(memory_format=torch.channels_last)
        model = _TRAINING_MODELS[net] = model.eval().requires_grad_(False)
    return model.to(device)


def _z_likelihood(entropy_bottleneck, z: Tensor) -> Tensor:
    """The entropy bottleneck's likelihood of z as it is (compressai's forward would round or add noise)."""
    values = z.transpose(0, 1).reshape(z.shape[1], 1, -1)
    likelihood, _, _ = entropy_bottleneck._likelihood(values)
    return entropy_bottleneck.likelihood_lower_bound(likelihood)


def _synthesis(net, y_tilde: Tensor, inv_gain: Tensor, dtype: torch.dtype | None) -> Tensor:
    """g_s (channels-last, computed in `dtype` but for its output layer, as the decoder runs it) on tiles
    for big images, each checkpointed, so the backward pass holds one tile's activations."""
    y = (y_tilde * inv_gain).contiguous(memory_format=torch.channels_last)
    small = max(y.shape[-2:]) * Y_STRIDE <= TILE
    transform = lambda t: run_in(net.g_s, t, dtype)  # noqa: E731
    if not small:
        transform = functools.partial(checkpoint, transform, use_reentrant=False)
    return tiled(transform, y, TILE // Y_STRIDE, TILE_MARGIN // Y_STRIDE, up=Y_STRIDE)


@dataclass
class _Problem:
    """One image's RD loss as a function of its latents: lambda * 255^2 * MSE + bits per pixel."""

    net: torch.nn.Module
    target: Tensor  # the image, unpadded
    inv_gain: Tensor
    lam: float
    medians: Tensor
    dtype: torch.dtype | None

    def terms(self, y: Tensor, z: Tensor, tau: float | None,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(MSE, bits per pixel) with latents soft-rounded at temperature tau (drawn with a generator), or
        rounded as the encoder does (None)."""
        net, gc = self.net, self.net.gaussian_conditional
        z_tilde = self.medians + soft_round(z - self.medians, tau, generator)
        scales, means = net.hyper_synthesis(z_tilde)
        y_tilde = means + soft_round(y - means, tau, generator)
        y_likelihood = gc.likelihood_lower_bound(gc._likelihood(y_tilde, scales, means))
        bits = -(y_likelihood.log2().sum() + _z_likelihood(net.entropy_bottleneck, z_tilde).log2().sum())
        height, width = self.target.shape[-2:]
        x_hat = _synthesis(net, y_tilde, self.inv_gain, self.dtype)[..., :height, :width]
        return torch.mean((x_hat - self.target) ** 2), bits / (height * width)

    def loss(self, y: Tensor, z: Tensor, tau: float | None, generator: torch.Generator | None = None) -> Tensor:
        mse, bpp = self.terms(y, z, tau, generator)
        return self.lam * mse + bpp

    @torch.no_grad()
    def exact_terms(self, y: Tensor, z: Tensor) -> tuple[float, float]:
        """(MSE, bits per pixel) with hard rounding, as the encoder rounds, in Python floats."""
        mse, bpp = self.terms(y, z, None)
        return mse.item(), bpp.item()

    def exact_loss(self, y: Tensor, z: Tensor) -> float:
        """The loss with hard rounding, in Python floats: g_a's latents and every check compare alike."""
        mse, bpp = self.exact_terms(y, z)
        return self.lam * mse + bpp


@torch.no_grad()
def local_lambda(problem: _Problem, y: Tensor, quality: Tensor, point: tuple[float, float]) -> float | None:
    """The lambda of effort 0's curve for this image at `quality`, -d(bpp) / d(255^2 MSE) as in lambda_for:
    the chord from `point`, g_a's (MSE, bpp) at the quality, to the curve's point SLOPE_STEP below (above
    where that leaves the quality range), kept within the training lambdas one quality either side so
    effort stays near the quality asked for (from quality 9 up, the top bound is quality 10's lambda);
    None where the curve does not descend there. The chord below saved as much as the central one
    (bench/results/effort-choice, train-slope-one-sided) and shares its point with g_a's exact loss."""
    net = problem.net
    at = float(quality[0])
    other = at - SLOPE_STEP if at - SLOPE_STEP >= QUALITY_MIN else at + SLOPE_STEP
    q = torch.full_like(quality, other)
    y_q = y / net.gains(quality)[0] * net.gains(q)[0]
    measured = dataclasses.replace(problem, inv_gain=net.gains(q)[1]).exact_terms(y_q, net.h_a(y_q))
    (mse_low, bpp_low), (mse_high, bpp_high) = (measured, point) if other < at else (point, measured)
    if not (mse_low > mse_high and bpp_high > bpp_low):
        return None
    slope = (bpp_high - bpp_low) / ((mse_low - mse_high) * 255**2)
    low, high = (float(lambda_for((quality.cpu() + step).clamp(QUALITY_MIN, LEARNED_MAX))[0]) for step in (-1, 1))
    return min(max(slope, low), high)


def image_problem(net, target: Tensor, y: Tensor, z: Tensor, quality: Tensor,
                  dtype: torch.dtype | None) -> tuple[_Problem, float]:
    """(problem, g_a's exact loss): the RD loss of `target` (net: a training_model) at the local slope of
    its curve from g_a's (y, z), or at the quality's training lambda where none is measured; g_s computed
    in `dtype`."""
    problem = _Problem(net, target, net.gains(quality)[1], float(lambda_for(quality.cpu())[0]) * 255**2,
                       net.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1), dtype)
    mse, bpp = problem.exact_terms(y, z)
    slope = local_lambda(problem, y, quality, (mse, bpp))
    if slope is not None:
        problem.lam = slope * 255**2
    return problem, problem.lam * mse + bpp  # exact_loss's sum


def optimize_latents(net, x: Tensor, y: Tensor, z: Tensor, quality: Tensor, effort: int, height: int, width: int,
                     progress: bool = False) -> tuple[Tensor, Tensor]:
    """(y, z) from g_a for the padded image x -> latents with a lower RD loss on x[..., :height, :width],
    at the local slope of this image's curve (the quality's training lambda where none is measured).

    Only the latents get gradients (the model's weights do not require any); runs on x's device. Returns
    the latents with the lowest exact loss among g_a's and those at the checks of the level's runs (each
    from g_a's latents), their rounding then refined (refine_rounding only accepts moves
    that lower the exact loss), so effort never makes that loss worse than effort 0's. The last latents of a
    run without checks are measured once: by the refinement, which then starts from them rather than from
    the best so far (a run's end is nearly always better than g_a's latents), or else on their own."""
    net = training_model(net, x.device)
    problem, loss = image_problem(net, x[..., :height, :width], y, z, quality, synthesis_dtype(None, x.device))
    best = (loss, y, z)
    unchecked = None  # the last latents of a run without checks, not yet measured
    runs = SCHEDULES[effort]
    rounding = ROUNDING[effort]
    for run, schedule in enumerate(runs):
        if unchecked is not None:
            best = _keep_better(problem, best, unchecked)
        steps = range(schedule.steps)
        if progress:
            from tqdm import tqdm

            label = f"effort {effort}, quality {float(quality[0]):g}" + (f", run {run + 1}/{len(runs)}" if len(runs) > 1 else "")
            steps = tqdm(steps, desc=label, unit="step", leave=False)
        best, last = _descend(problem, schedule, steps, y, z, best)
        unchecked = None if schedule.checks else last
    refined = False  # refined latents' y is already its means plus whole levels
    if rounding.iterations:
        label = f"effort {effort}, quality {float(quality[0]):g}, rounding" if progress else None
        start, best = best, refine_rounding(problem, best, rounding.iterations, rounding.spacing, label, unchecked,
                                            probe_windows=rounding.probe_windows)
        refined = best is not start
    elif unchecked is not None:
        best = _keep_better(problem, best, unchecked)
    if best[1] is y:  # g_a's latents: effort 0's file, byte for byte
        return y, z
    y, z = best[1], best[2]
    if not refined:
        with torch.no_grad():
            _, _, means = _hyper(problem, z)
            # y as its means plus the levels the exact loss counted: the encoder rounds around its
            # integer means, within a tenth of a level of these, so it codes exactly those levels.
            y = means + (y - means).round()
    return y.detach(), z.detach()


def _keep_better(problem: _Problem, best: tuple, latents: tuple[Tensor, Tensor]) -> tuple:
    """best, or (exact loss, y, z) of `latents` where that is lower."""
    loss = problem.exact_loss(*latents)
    return (loss, *latents) if loss < best[0] else best


def _hyper(problem: _Problem, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(z_hat, scales, means): z rounded around its medians, and y's Gaussian from it (float h_s)."""
    z_hat = problem.medians + (z - problem.medians).round()
    scales, means = problem.net.hyper_synthesis(z_hat)
    return z_hat, scales, means


def refine_rounding(problem: _Problem, best: tuple, iterations: int, spacing: int = 1,
                    progress: str | None = None, unchecked: tuple[Tensor, Tensor] | None = None,
                    probe_windows: bool = False) -> tuple:
    """(exact loss, y, z) -> the same with y's rounding refined (z kept): where a move was kept, y becomes
    means + the chosen levels, which the encoder's rounding around its integer means reproduces (they are
    within a tenth of a level of these). Each iteration moves at most one value per position, at one
    offset of a grid `spacing` apart (the next offset with a move that pays); after a rejected set of
    moves, half as many. Deterministic on a CPU (a fixed probe). progress: a bar's label. unchecked: other
    latents (y, z) to refine instead of best's (their z kept), not yet evaluated; best comes back unless
    the refined ones have a lower exact loss. probe_windows: the curvature probe on windows of y
    (_probe_windows) rather than the whole plane."""
    net, gc = problem.net, problem.net.gaussian_conditional
    y, z = best[1:] if unchecked is None else unchecked
    height, width = problem.target.shape[-2:]
    pixels = height * width
    with torch.no_grad():
        z_hat, scales, means = _hyper(problem, z)
        z_bits = -_z_likelihood(net.entropy_bottleneck, z_hat).log2().sum().item()
        levels_in = (y - means).round()

    def bits(levels: Tensor) -> Tensor:
        return -gc.likelihood_lower_bound(gc._likelihood(means + levels, scales, means)).log2()

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=iterations, desc=progress, unit="iteration", leave=False)
    generator = torch.Generator(problem.target.device).manual_seed(0)
    windows = _probe_windows(*levels_in.shape[-2:]) if probe_windows else []
    count = levels_in[:, 0].numel()  # values to move next: at first one per position
    offset = 0  # the grid's next offset, row-major
    curvature, kept, candidate = None, None, levels_in  # kept: (loss, levels, gradient, bits)
    for iteration in range(iterations + 1):
        with torch.enable_grad():
            y_hat = (means + candidate).requires_grad_(True)
            x_hat = _synthesis(net, y_hat, problem.inv_gain, problem.dtype)[..., :height, :width]
            distortion = problem.lam * torch.mean((x_hat - problem.target) ** 2)
            candidate_bits = bits(candidate).detach()
            loss = distortion.item() + (candidate_bits.sum().item() + z_bits) / pixels
            if kept is not None and not loss < kept[0]:
                count = moved // 2  # rejected: half as many moves next
            elif iteration == iterations:
                kept = (loss, candidate, None, None)
            else:
                gradient, = torch.autograd.grad(distortion, y_hat, retain_graph=curvature is None and not windows)
                if curvature is None:
                    curvature = (_windowed_curvature(problem, y_hat.detach(), generator, windows) if windows
                                 else _channel_curvature(problem, x_hat, y_hat, generator))
                kept = (loss, candidate, gradient, candidate_bits)
        if bar is not None and iteration:
            bar.update()
        if iteration == iterations or count == 0:
            break
        _, levels, gradient, level_bits = kept
        with torch.no_grad():
            # Predicted change of the loss for a move by -1 and by +1 of each value; the `count` most
            # negative are moved.
            change = torch.stack([(bits(levels + step) - level_bits) / pixels + gradient * step + curvature / 2
                                  for step in (-1.0, 1.0)])
            best_change, direction = change.min(0)
            # At most one move per position (its channel with the best change), at the positions of the
            # next grid offset with a move that pays.
            best_channel = torch.zeros_like(best_change, dtype=torch.bool)
            best_channel.scatter_(1, best_change.argmin(1, keepdim=True), True)
            best_change = best_change.where(best_channel, 0)
            for _ in range(spacing**2):
                row, column = divmod(offset, spacing)
                offset = (offset + 1) % spacing**2
                on_grid = torch.zeros_like(best_change)
                on_grid[..., row::spacing, column::spacing] = best_change[..., row::spacing, column::spacing]
                most = torch.topk(on_grid.flatten(), count, largest=False)
                chosen = most.indices[most.values < 0]
                if chosen.numel():
                    break
            moved = chosen.numel()
            if not moved:
                break
            steps = torch.zeros_like(levels)
            steps.view(-1)[chosen] = direction.flatten()[chosen].to(steps.dtype) * 2 - 1
            candidate = levels + steps
    if bar is not None:
        bar.close()
    # kept's loss is the exact loss of its latents (exact_loss's terms, on the same rounding, summed in
    # another order): compared with best's, effort never returns a higher loss than its input's.
    if (kept[1] is levels_in and unchecked is None) or not kept[0] < best[0]:
        return best
    return kept[0], means + kept[1], z


def _channel_curvature(problem: _Problem, x_hat: Tensor, y_hat: Tensor, generator: torch.Generator) -> Tensor:
    """Per channel of y, the mean second derivative of the distortion term for a move of one value,
    Gauss-Newton: 2 * lam * |column of g_s's Jacobian|^2 / the image's elements, the squared norm
    estimated from one random-sign probe (Hutchinson) through x_hat's graph (a second probe gained
    nothing), averaged over y_hat's positions (and batch: _windowed_curvature's windows)."""
    signs = torch.randint(0, 2, x_hat.shape, generator=generator, device=x_hat.device).to(x_hat.dtype) * 2 - 1
    column, = torch.autograd.grad(x_hat, y_hat, signs)
    return column.square().mean(dim=(0, 2, 3), keepdim=True) * 2 * problem.lam / problem.target.numel()


def _windowed_curvature(problem: _Problem, y_hat: Tensor, generator: torch.Generator,
                        windows: list[tuple[int, int, int, int]]) -> Tensor:
    """_channel_curvature from a synthesis of these windows of y_hat alone (a batch of them)."""
    batch = torch.cat([y_hat[..., top : top + rows, left : left + columns] for top, left, rows, columns in windows])
    with torch.enable_grad():
        batch.requires_grad_(True)
        return _channel_curvature(problem, _synthesis(problem.net, batch, problem.inv_gain, problem.dtype), batch, generator)


# The curvature probe's windows: PROBE_WINDOW latent positions a side, one per PROBE_CELL positions a
# side of y (at most 2x2, spread over it). The curvature is a property of the model more than of the
# image (it depends on the image through g_s's inverse GDN): on 256x256 crops, one central 8x8 window's
# estimate was within the whole plane's own probe noise of it (per channel, median ratio 0.96-1.19, the
# same with two positions of context around it), for a quarter of the synthesis; from 512 pixels a
# side, four windows cost what a 256 crop's whole plane does.
PROBE_WINDOW = 8
PROBE_CELL = 16


def _probe_windows(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(top, left, rows, columns) of each window of a height x width latent plane; none where they would
    cover half the plane or more (the whole plane's probe, through the gradient's graph, costs less)."""
    rows, columns = min(height, PROBE_WINDOW), min(width, PROBE_WINDOW)

    def starts(length: int, side: int) -> list[int]:
        count = min(2, max(1, length // PROBE_CELL))
        return [min(length - side, max(0, round((index + 0.5) * length / count - side / 2))) for index in range(count)]

    windows = [(top, left, rows, columns) for top in starts(height, rows) for left in starts(width, columns)]
    return windows if 2 * len(windows) * rows * columns < height * width else []


def _descend(problem: _Problem, schedule: Schedule, steps, y: Tensor, z: Tensor, best: tuple) -> tuple:
    """One run of `schedule` from (y, z). Returns (best, last): best the lowest (exact loss, y, z) of
    `best` and the run's checks; last the (y, z) after its final step."""
    with torch.enable_grad():
        y = y.detach().clone().requires_grad_(True)
        z = z.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([y, z], lr=schedule.lr)
        # Seeded: on a CPU an encode is reproducible, the same file for the same image and settings.
        generator = torch.Generator(y.device).manual_seed(0) if schedule.draws else None
        for step in steps:
            optimizer.param_groups[0]["lr"] = schedule.learning_rate(step)
            loss = problem.loss(y, z, schedule.temperature(step), generator)
            if not math.isfinite(loss.item()):
                raise FloatingPointError("latent optimization diverged")  # a bug, never a silently bad file
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule.is_check(step):
                best = _keep_better(problem, best, (y.detach().clone(), z.detach().clone()))
    return best, (y.detach(), z.detach())
