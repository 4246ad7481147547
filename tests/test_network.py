"""The plain-torch inference network against the training model (compressai's), and what decode returns."""

import contextlib
import dataclasses
import io
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import aecodec
from aecodec import network
from aecodec.errors import OptionError
from aecodec.model import AECModel
from aecodec.network import PRECISION_ENV, Network, synthesis_dtype
from conftest import natural_like


@pytest.fixture(scope="module")
def shipped():
    return aecodec.load_model()


@pytest.fixture(scope="module")
def reference(shipped):
    """The training model with compressai's own GDN layers (not TrainingGDN, which runs network.gdn):
    what the coding Network must reproduce."""
    from compressai.layers import GDN

    model = AECModel.from_weights(shipped).eval()
    for transform in (model.g_a, model.g_s):
        for i, layer in enumerate(transform):
            if isinstance(layer, GDN):
                transform[i] = GDN(layer.beta.numel(), inverse=layer.inverse)
                transform[i].load_state_dict(layer.state_dict())
    assert not any(type(layer).__name__ == "TrainingGDN" for layer in [*model.g_a, *model.g_s])
    return model


def test_shipped_weights_load_into_both_networks_under_the_same_keys(shipped, reference):
    net = shipped.net
    assert isinstance(net, Network)
    ours, theirs = net.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    assert not any(t.is_meta for t in ours.values())
    torch.testing.assert_close(net.z_medians(), reference.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1))


def test_transforms_match_compressai(shipped, reference):
    net, quality = shipped.net, torch.tensor([6.3])
    x = torch.rand(1, 3, 128, 192, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        features = net.analysis_features(x)
        # g_a and h_a run the very same operations: bit-identical, so files are too.
        assert torch.equal(features, reference.analysis_features(x))
        assert all(map(torch.equal, net.latents_at(features, quality), reference.latents_at(features, quality)))
        y_hat = torch.round(net.latents_at(features, quality)[0])
        x_hat = net.synthesis(y_hat, quality, torch.float32)
        # g_s runs channels-last: the same values up to float rounding.
        torch.testing.assert_close(x_hat, reference.synthesis(y_hat, quality), rtol=0, atol=1e-5)
        scales, means = net.h_s(net.z_medians().expand(1, -1, 2, 3)).chunk(2, 1)
        ref_scales, ref_means = reference.hyper_synthesis(reference.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1).expand(1, -1, 2, 3))
        torch.testing.assert_close(scales, ref_scales)
        torch.testing.assert_close(means, ref_means)


def test_output_deconv_computes_the_transposed_convolution():
    """Values and gradients (input, weight, bias) of the transposed 5x5 stride-2 convolution it stands for,
    on odd sides and channels-last input too."""
    generator = torch.Generator().manual_seed(1)
    ours = network.OutputDeconv(6, 3)
    theirs = torch.nn.ConvTranspose2d(6, 3, 5, 2, padding=2, output_padding=1)
    with torch.no_grad():
        for param in theirs.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    ours.load_state_dict(theirs.state_dict())
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 6, 5, 7, generator=generator).contiguous(memory_format=layout).requires_grad_(True)
        outputs = [module(x) for module in (ours, theirs)]
        torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-5)
        assert outputs[0].is_contiguous(memory_format=layout)  # the image module wants (H, W, 3) from g_s
        probe = torch.randn(outputs[0].shape, generator=generator)
        grads = [torch.autograd.grad(out, [x, module.weight, module.bias], probe)
                 for out, module in zip(outputs, (ours, theirs))]
        for got, expected in zip(*grads):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_gradients_are_autograds(inverse):
    """GDN's own backward gives autograd's gradients of the same formula, to the input and to the raw
    beta and gamma, in both layouts and under bf16 autocast; with frozen weights only the input's."""
    generator = torch.Generator().manual_seed(2)
    gdn = network.GDN(5, inverse=inverse)
    gdn.beta_reparam.pedestal = torch.tensor([2.0**-36])
    gdn.beta_reparam.lower_bound.bound = torch.tensor([1e-3])
    gdn.gamma_reparam.pedestal = torch.tensor([2.0**-36])
    gdn.gamma_reparam.lower_bound.bound = torch.tensor([2.0**-18])
    with torch.no_grad():
        gdn.beta.copy_(torch.rand(5, generator=generator) + 0.5)
        gdn.gamma.copy_(torch.rand(5, 5, generator=generator) * 0.3)

    def plain(x):
        norm = F.conv2d(x**2, gdn.gamma_reparam(gdn.gamma).reshape(5, 5, 1, 1), gdn.beta_reparam(gdn.beta))
        return x * (torch.sqrt(norm) if inverse else torch.rsqrt(norm))

    wrt = lambda x: [x, gdn.beta, gdn.gamma]  # noqa: E731
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 5, 6, 7, generator=generator).contiguous(memory_format=layout).requires_grad_(True)
        probe = torch.randn(2, 5, 6, 7, generator=generator)
        ours, theirs = gdn(x), plain(x)
        assert ours.grad_fn.name() == "_GDNBackward"
        torch.testing.assert_close(ours, theirs)
        for got, expected in zip(torch.autograd.grad(ours, wrt(x), probe), torch.autograd.grad(theirs, wrt(x), probe)):
            torch.testing.assert_close(got, expected)
        with torch.no_grad():
            torch.testing.assert_close(gdn(x), theirs)  # the in-place inference path
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = gdn(x.bfloat16())  # as in g_s, where the transposed convolution before it autocasts
    assert ours.dtype == torch.bfloat16
    for got, expected in zip(torch.autograd.grad(ours.float(), wrt(x), probe), torch.autograd.grad(plain(x), wrt(x), probe)):
        assert got.dtype == torch.float32
        # bf16's rounding: autograd's own bf16 gradients were off by up to 1.2 % of the largest
        assert (got - expected).abs().max() <= 0.02 * expected.abs().max()
    gdn.requires_grad_(False)  # effort's case: the gradient to x alone
    ours = gdn(x)
    assert ours.grad_fn.name() == "_GDNBackward"
    torch.testing.assert_close(torch.autograd.grad(ours, x, probe)[0], torch.autograd.grad(plain(x), x, probe)[0])


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_in_bands_is_the_convolution(inverse):
    """At inference a channels-last input goes through GDN in bands of rows (a last, shorter one here),
    giving the 1x1 convolution's values up to float rounding, in g_s's layout; in bf16 too."""
    generator = torch.Generator().manual_seed(4)
    beta = torch.rand(6, generator=generator) + 0.5
    gamma = torch.rand(6, 6, generator=generator) * 0.2
    x = torch.randn(2, 6, 2 * network.GDN_BAND_ROWS + 3, 5, generator=generator)
    for dtype in (torch.float32, torch.bfloat16):
        x = x.to(dtype)
        norm = F.conv2d(x * x, gamma.reshape(6, 6, 1, 1).to(dtype), beta.to(dtype))
        expected = x * (norm.sqrt() if inverse else norm.rsqrt())
        with torch.no_grad():
            ours = network.gdn(x.contiguous(memory_format=torch.channels_last), beta, gamma, inverse)
        assert ours.is_contiguous(memory_format=torch.channels_last) and ours.dtype == dtype
        torch.testing.assert_close(ours, expected)


def test_training_gdn_is_compressais():
    """AECModel's GDN layers give compressai's GDN's values and gradients (compressai's reparametrisation
    included), both directions."""
    from compressai.layers import GDN

    from aecodec.model import AECModel, TrainingGDN

    model = AECModel(8, 12)
    assert sum(isinstance(layer, TrainingGDN) for layer in [*model.g_a, *model.g_s]) == 6
    generator = torch.Generator().manual_seed(3)
    for inverse in (False, True):
        ours, theirs = TrainingGDN(4, inverse=inverse), GDN(4, inverse=inverse)
        with torch.no_grad():
            theirs.gamma.add_(torch.rand(4, 4, generator=generator) * 0.2)
            theirs.beta.add_(torch.rand(4, generator=generator))
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(3, 4, 5, 6, generator=generator).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        probe = torch.randn(3, 4, 5, 6, generator=generator)
        outputs = [module(x) for module in (ours, theirs)]
        torch.testing.assert_close(outputs[0], outputs[1])
        grads = [torch.autograd.grad(out, [x, module.beta, module.gamma], probe) for out, module in zip(outputs, (ours, theirs))]
        for got, expected in zip(*grads):
            torch.testing.assert_close(got, expected)


def test_files_are_byte_identical_to_the_training_models(shipped, reference):
    picture = natural_like(96, 160, seed=5)
    as_trained = dataclasses.replace(shipped, net=reference)  # compressai's transforms, the same coder
    for quality in (1.0, 5.5, 10.0):
        data = aecodec.encode(picture, quality, weights=shipped)
        assert data == aecodec.encode(picture, quality, weights=as_trained)
        ours = aecodec.decode(data, weights=shipped, precision="float32", output="numpy").astype(int)
        theirs = aecodec.decode(data, weights=as_trained, precision="float32", output="numpy").astype(int)
        assert np.abs(ours - theirs).max() <= 1


def test_bf16_synthesis_changes_pixels_only_slightly(shipped, monkeypatch):
    picture = natural_like(128, 192, seed=6)
    data = aecodec.encode(picture, 8.0, weights=shipped)
    exact = aecodec.decode(data, weights=shipped, precision="float32", output="numpy").astype(float)
    fast = aecodec.decode(data, weights=shipped, precision="bf16", output="numpy").astype(float)
    mse = lambda a: ((a - picture) ** 2).mean()  # noqa: E731
    assert not np.array_equal(exact, fast)  # bf16 really ran
    assert np.abs(exact - fast).max() <= 4 and 10 * np.log10(mse(fast) / mse(exact)) < 0.05
    monkeypatch.setenv(PRECISION_ENV, "float32")
    assert np.array_equal(aecodec.decode(data, weights=shipped, output="numpy"), exact)
    with pytest.raises(OptionError, match="precision"):
        aecodec.decode(data, weights=shipped, precision="float16")


@pytest.mark.parametrize("amx, avx512_bf16, vendor, expected", [
    (True, True, "GenuineIntel", torch.bfloat16),  # AMX (Sapphire Rapids and later)
    (False, True, "AuthenticAMD", torch.bfloat16),  # Zen 4 and later
    (False, True, "GenuineIntel", torch.float32),  # AVX512-BF16 without AMX: bf16 measured slower
    (False, False, "AuthenticAMD", torch.float32),
    (False, True, "", torch.float32),  # vendor unknown
])
def test_default_cpu_precision_is_bf16_only_where_it_is_faster(monkeypatch, amx, avx512_bf16, vendor, expected):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(network, "_cpu_vendor", lambda: vendor)
    assert synthesis_dtype(None, torch.device("cpu")) is expected


def test_default_gpu_precision_needs_native_bf16(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        # Emulated bf16 (GPUs before Ampere) counts as supported unless emulation is excluded.
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
        assert synthesis_dtype(None, torch.device("cuda")) is expected
    assert synthesis_dtype(None, torch.device("meta")) is torch.float32


def test_precision_option_and_environment_override_the_default(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert synthesis_dtype(None, torch.device("cpu")) is torch.bfloat16
    assert synthesis_dtype("float32", torch.device("cpu")) is torch.float32


@pytest.fixture
def uncached_vendor():
    network._cpu_vendor.cache_clear()
    yield network._cpu_vendor
    network._cpu_vendor.cache_clear()


def test_cpu_vendor_is_proc_cpuinfos_vendor_id(monkeypatch, uncached_vendor):
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n"
    monkeypatch.setattr("builtins.open", lambda *args, **kwargs: io.StringIO(cpuinfo))
    monkeypatch.setattr(platform, "processor", lambda: "GenuineIntel")  # must not be consulted
    assert uncached_vendor() == "AuthenticAMD"


@pytest.mark.parametrize("processor, expected", [
    ("AMD64 Family 25 Model 97 Stepping 2, AuthenticAMD", "AuthenticAMD"),  # Windows
    ("Intel64 Family 6 Model 143 Stepping 8, GenuineIntel", "GenuineIntel"),
    ("arm", ""),  # macOS on Apple silicon
])
def test_cpu_vendor_without_proc_cpuinfo_reads_the_processor_string(monkeypatch, uncached_vendor, processor, expected):
    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/cpuinfo")

    monkeypatch.setattr("builtins.open", no_proc)
    monkeypatch.setattr(platform, "processor", lambda: processor)
    assert uncached_vendor() == expected


@pytest.mark.parametrize("coding", ["learned", "lossless"])
@pytest.mark.parametrize("channels, mode", [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_array_outputs_equal_the_pil_image(tiny_model, channels, mode, coding):
    rgba = np.dstack([natural_like(40, 56, seed=2), natural_like(40, 56, seed=3)[:, :, :1]])
    pixels = rgba[:, :, :channels] if channels > 1 else rgba[:, :, 0]
    quality = 6.0 if coding == "learned" else None
    data = aecodec.encode(pixels, quality, mode=coding, weights=tiny_model)
    image = aecodec.decode(data, weights=tiny_model)
    array = aecodec.decode(data, weights=tiny_model, output="numpy")
    tensor = aecodec.decode(data, weights=tiny_model, output="torch")
    assert image.mode == mode and array.dtype == np.uint8 and array.flags.c_contiguous
    assert np.array_equal(array, np.asarray(image))
    assert tensor.dtype == torch.uint8 and tensor.shape == (channels, 40, 56)
    assert np.array_equal(tensor.permute(1, 2, 0).numpy().reshape(array.shape), array)
    with pytest.raises(OptionError, match="output"):
        aecodec.decode(data, weights=tiny_model, output="PIL.Image")


def test_coding_imports_neither_compressai_nor_torchvision():
    probe = """
import sys
import numpy as np
import aecodec
data = aecodec.encode(np.full((64, 64, 3), 128, np.uint8), 5.0)
assert aecodec.decode(data).size == (64, 64)
print(sorted({name.split(".")[0] for name in sys.modules} & {"compressai", "torchvision"}))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_weights_without_frozen_tables_are_refused(shipped):
    state = {k: v for k, v in shipped.net.state_dict().items() if k != "gaussian_conditional.scale_table"}
    with pytest.raises(KeyError, match="scale_table"):
        Network.from_state_dict(state, **shipped.net.config)
    del state["g_s.0.weight"]
    with pytest.raises(RuntimeError, match="g_s.0.weight"):
        Network.from_state_dict(state, **shipped.net.config)
