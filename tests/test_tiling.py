"""Big images run the transforms and the integer h_s on tiles; tiles must not change the result."""

import numpy as np
import torch

import aecodec
from aecodec import entropy, network
from tests.conftest import natural_like


def test_tiled_transforms_match_untiled(tiny_model, monkeypatch):
    picture = natural_like(320, 448, seed=3)
    whole = aecodec.encode(picture, 5.0, weights=tiny_model)
    whole_image = np.asarray(aecodec.decode(whole, weights=tiny_model), dtype=np.int16)
    # 128 px tiles: a 5 x 7 grid, so interior tiles see context on all four sides.
    monkeypatch.setattr(network, "TILE", 128)
    monkeypatch.setattr(entropy, "HYPER_TILE", 2)
    tiled = aecodec.encode(picture, 5.0, weights=tiny_model)
    tiled_image = np.asarray(aecodec.decode(tiled, weights=tiny_model), dtype=np.int16)
    # g_a tiled equals untiled up to float rounding (identical bytes here; a rounding flip of a latent
    # at exactly .5 would be legal), g_s likewise: no seams.
    assert abs(len(tiled) - len(whole)) <= 0.01 * len(whole)
    assert np.abs(tiled_image - whole_image).mean() < 0.01 and np.abs(tiled_image - whole_image).max() <= 2


def test_tiled_integer_hyper_synthesis_is_exact(tiny_model, monkeypatch):
    torch.manual_seed(0)
    z = torch.round(torch.randn(1, tiny_model.net.N, 13, 11) * 8)
    indexes, means = tiny_model.latents.hyper(z)
    monkeypatch.setattr(entropy, "HYPER_TILE", 2)
    tiled_indexes, tiled_means = tiny_model.latents.hyper(z)
    assert torch.equal(indexes, tiled_indexes) and torch.equal(means, tiled_means)


def test_too_small_margin_would_show(tiny_model, monkeypatch):
    """The exactness test above can fail: with no context at tile edges the tables change."""
    torch.manual_seed(0)
    z = torch.round(torch.randn(1, tiny_model.net.N, 13, 11) * 8)
    _, means = tiny_model.latents.hyper(z)
    monkeypatch.setattr(entropy, "HYPER_TILE", 2)
    monkeypatch.setattr(entropy, "HYPER_TILE_MARGIN", 0)
    _, tiled_means = tiny_model.latents.hyper(z)
    assert not torch.equal(means, tiled_means)
