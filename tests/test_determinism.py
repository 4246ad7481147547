"""Decode anywhere: the decoder-side entropy parameters are exact by design (integer hyper-synthesis)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import aecodec
from aecodec import entropy
from aecodec.model import AECModel
from conftest import natural_like


def integer_reference(hyper: entropy.IntegerHyperSynthesis, z_hat: torch.Tensor):
    """The same integer network in int64 NumPy with explicit loops over taps: an independent implementation."""
    act = np.clip(np.round(z_hat.double().numpy() * 256), -2**20, 2**20).astype(np.int64)[0]
    acc = act
    prev_shift = None
    for layer in hyper.layers:
        if layer[0] == "leaky":
            slope = layer[1]
            acc = np.where(acc >= 0, acc, (acc * slope) >> entropy.LEAKY_FRACTION)
            continue
        _, module, w_int, bias, shift = layer
        if prev_shift is not None:
            act = np.clip((acc + (1 << (prev_shift - 1))) >> prev_shift, -2**20, 2**20)
        w = w_int.numpy().astype(np.int64)
        b = bias.numpy().astype(np.int64)
        c_in, h, wd = act.shape
        if isinstance(module, torch.nn.ConvTranspose2d):
            k, s, p, op = module.kernel_size[0], module.stride[0], module.padding[0], module.output_padding[0]
            out_h, out_w = (h - 1) * s - 2 * p + k + op, (wd - 1) * s - 2 * p + k + op
            full = np.zeros((w.shape[1], (h - 1) * s + k + op, (wd - 1) * s + k + op), dtype=np.int64)
            for i in range(k):
                for j in range(k):
                    contrib = np.einsum("chw,co->ohw", act, w[:, :, i, j])
                    full[:, i : i + (h - 1) * s + 1 : s, j : j + (wd - 1) * s + 1 : s] += contrib
            acc = full[:, p : p + out_h, p : p + out_w] + b[:, None, None]
        else:
            k, p = module.kernel_size[0], module.padding[0]
            padded = np.pad(act, ((0, 0), (p, p), (p, p)))
            acc = np.zeros((w.shape[0], h, wd), dtype=np.int64) + b[:, None, None]
            for i in range(k):
                for j in range(k):
                    acc += np.einsum("chw,oc->ohw", padded[:, i : i + h, j : j + wd], w[:, :, i, j])
        prev_shift = shift
    scales, means = np.split(acc, 2, axis=0)
    thresholds = hyper.thresholds.numpy().astype(np.int64)
    indexes = np.searchsorted(thresholds, scales, side="left")
    return indexes, means >> hyper.final_shift


@pytest.fixture(scope="module")
def shipped():
    return aecodec.load_model()


def random_z_hat(model, seed=0, size=(3, 5)):
    torch.manual_seed(seed)
    medians = model.latents.z_medians
    q = torch.round(torch.randn(1, medians.shape[1], *size) * 4)
    return q + medians


def test_integer_network_matches_an_independent_int64_implementation(shipped):
    z_hat = random_z_hat(shipped)
    indexes, means = shipped.latents.hyper(z_hat)
    ref_indexes, ref_means = integer_reference(shipped.latents.hyper, z_hat)
    np.testing.assert_array_equal(indexes[0].numpy(), ref_indexes)
    np.testing.assert_array_equal(means[0].numpy(), ref_means)


def test_summation_order_does_not_matter(shipped, monkeypatch):
    """A 'device' whose convolutions sum in another order (channel halves, reversed) gets identical tables."""
    z_hat = random_z_hat(shipped, seed=1)
    expected = shipped.latents.hyper(z_hat)
    conv2d, conv_t = F.conv2d, F.conv_transpose2d

    def split_conv2d(x, w, b, *args):
        half = x.shape[1] // 2
        return conv2d(x[:, half:], w[:, half:], None, *args) + conv2d(x[:, :half], w[:, :half], b, *args)

    def split_conv_t(x, w, b, *args):
        half = x.shape[1] // 2
        return conv_t(x[:, half:], w[half:], None, *args) + conv_t(x[:, :half], w[:half], b, *args)

    monkeypatch.setattr(entropy.F, "conv2d", split_conv2d)
    monkeypatch.setattr(entropy.F, "conv_transpose2d", split_conv_t)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        got = shipped.latents.hyper(z_hat)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_ulp_noise_on_the_hyper_decoder_changes_nothing(shipped, monkeypatch):
    """Perturb every float output of the hyper-decoder's convolutions by a few ulps (what another device,
    library or thread count might do): the integer path derives the same indexes and means. The float
    path (compressai's build_indexes on h_s outputs) flips indexes under the same kind of noise."""
    z_hat = random_z_hat(shipped, seed=2, size=(8, 12))
    expected = shipped.latents.hyper(z_hat)
    gc = AECModel.from_weights(shipped).gaussian_conditional  # compressai's, for its float path
    with torch.no_grad():
        scales = shipped.net.h_s(z_hat).chunk(2, 1)[0]
    # Scales that land exactly on table entries (as a few of 300k do by chance) flip under 1 ulp:
    boundary = gc.scale_table[gc.build_indexes(scales).long().clamp(max=len(gc.scale_table) - 2)]
    assert not torch.equal(gc.build_indexes(boundary), gc.build_indexes(torch.nextafter(boundary, boundary + 1)))

    conv2d, conv_t = F.conv2d, F.conv_transpose2d
    gen = torch.Generator().manual_seed(0)

    def noisy(fn):
        def run(*args):
            out = fn(*args)
            ulps = torch.randint(-4, 5, out.shape, generator=gen).double()
            return out + ulps * torch.finfo(torch.float64).eps * out.abs()
        return run

    monkeypatch.setattr(entropy.F, "conv2d", noisy(conv2d))
    monkeypatch.setattr(entropy.F, "conv_transpose2d", noisy(conv_t))
    got = shipped.latents.hyper(z_hat)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])



def test_files_decode_across_backends_threads_and_processes(tmp_path):
    """Encode in one process with each backend and thread count; decode in another with the other backend:
    the files decode (their latent checksums pass) to identical pixels."""
    img = natural_like(96, 128, seed=3)
    np.save(tmp_path / "img.npy", img)
    script = (
        "import sys, numpy as np, torch, aecodec; torch.set_num_threads(int(sys.argv[2])); "
        "mode = sys.argv[1]; path = sys.argv[3]\n"
        "if mode == 'enc': open(path + '.aec', 'wb').write(aecodec.encode(np.load(path + '.npy'), 5))\n"
        "else: np.save(path + '.out.npy', np.asarray(aecodec.decode(open(path + '.aec', 'rb').read())))"
    )
    backends = ["python"] + (["native"] if aecodec.HAS_EXT else [])
    outputs = []
    # The synthesis transform is float, so the decoder's own thread count may move a pixel by 1: hold it
    # fixed and vary everything that feeds the entropy decoder.
    for enc_backend, enc_threads, dec_backend, dec_threads in [
        (backends[0], 1, backends[-1], 1), (backends[-1], 2, backends[0], 1)
    ]:
        env_enc = {"AECODEC_BACKEND": enc_backend, "AECODEC_THREADS": str(enc_threads)}
        env_dec = {"AECODEC_BACKEND": dec_backend, "AECODEC_THREADS": str(dec_threads)}
        base = str(tmp_path / "img")
        for mode, threads, env in (("enc", enc_threads, env_enc), ("dec", dec_threads, env_dec)):
            import os

            done = subprocess.run([sys.executable, "-c", script, mode, str(threads), base],
                                  env={**os.environ, **env}, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        outputs.append(np.load(base + ".out.npy"))
    np.testing.assert_array_equal(outputs[0], outputs[1])
