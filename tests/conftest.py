import numpy as np
import pytest

from aecodec.weights import load
from bench.fuzz import save_tiny_model


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A tiny random model (fast), its gains raised so latents span many symbols, escapes included."""
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_tiny_model(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_weights):
    return load(tiny_weights)


def natural_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic photo stand-in: gradients, soft blobs, a little texture; (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for c in range(3):
        img[..., c] = 0.3 + 0.3 * xx / max(width, 1) + 0.2 * yy / max(height, 1) * (c - 1)
        for _ in range(6):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            r = rng.uniform(0.1, 0.3) * max(height, width)
            img[..., c] += rng.uniform(-0.25, 0.25) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img += rng.normal(0, 0.01, img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


@pytest.fixture
def photo():
    return natural_like(96, 128)
