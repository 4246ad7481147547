"""BD-rate against cases with a known answer."""

import math

import numpy as np
import pytest

from bench.bd import bd_rate

RATES = np.array([0.25, 0.5, 0.75, 1.0, 1.5])
PSNR = np.array([28.0, 31.0, 33.0, 34.5, 36.5])


@pytest.mark.parametrize("method", ["cubic", "pchip"])
def test_known_cases(method):
    assert bd_rate(RATES, PSNR, RATES, PSNR, method) == pytest.approx(0, abs=1e-9)
    # The same curve at 80 % of the rate everywhere is exactly -20 %, and its reverse +25 %.
    assert bd_rate(RATES, PSNR, RATES * 0.8, PSNR, method) == pytest.approx(-20, abs=1e-6)
    assert bd_rate(RATES * 0.8, PSNR, RATES, PSNR, method) == pytest.approx(25, abs=1e-6)


def test_published_hyperprior_vs_jpeg():
    """CompressAI's hyperprior vs JPEG on Kodak: -55.2 % (cubic) / -54.9 % (PCHIP) per rd-anchors."""
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).parents[1] / "bench" / "data" / "published_kodak.json").read_text())
    jpeg, hp = data["JPEG"], data["bmshj2018-hyperprior"]
    assert bd_rate(jpeg["bpp"], jpeg["psnr"], hp["bpp"], hp["psnr"], "cubic") == pytest.approx(-55.2, abs=0.1)
    assert bd_rate(jpeg["bpp"], jpeg["psnr"], hp["bpp"], hp["psnr"], "pchip") == pytest.approx(-54.9, abs=0.1)


def test_disjoint_curves_are_nan():
    assert math.isnan(bd_rate(RATES, PSNR, RATES, PSNR + 20))
