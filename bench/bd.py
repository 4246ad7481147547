"""Bjontegaard delta rate (VCEG-M33): the average bitrate difference between two RD curves at equal quality.

ln(rate) is fitted as a function of quality (PSNR or MS-SSIM) and integrated over the overlapping
quality interval; the result is in percent (negative: the test codec needs fewer bits). Two fits:
the classic cubic polynomial, and piecewise-cubic Hermite (PCHIP) interpolation.
"""

from __future__ import annotations

import numpy as np


def _prepare(rate, quality):
    rate, quality = np.asarray(rate, dtype=np.float64), np.asarray(quality, dtype=np.float64)
    order = np.argsort(quality)
    return np.log(rate[order]), quality[order]


def bd_rate(rate_ref, quality_ref, rate_test, quality_test, method: str = "cubic") -> float:
    """Percent bitrate change of test vs reference at equal quality; NaN if the curves do not overlap."""
    log_ref, q_ref = _prepare(rate_ref, quality_ref)
    log_test, q_test = _prepare(rate_test, quality_test)
    low, high = max(q_ref.min(), q_test.min()), min(q_ref.max(), q_test.max())
    if not high > low:
        return float("nan")
    if method == "cubic":
        integrals = []
        for log_rate, q in ((log_ref, q_ref), (log_test, q_test)):
            poly = np.polyint(np.polyfit(q, log_rate, 3))
            integrals.append(np.polyval(poly, high) - np.polyval(poly, low))
    elif method == "pchip":
        from scipy.interpolate import PchipInterpolator

        integrals = []
        for log_rate, q in ((log_ref, q_ref), (log_test, q_test)):
            q, unique = np.unique(q, return_index=True)
            integrals.append(PchipInterpolator(q, log_rate[unique]).integrate(low, high))
    else:
        raise ValueError(f"unknown method {method!r}")
    return float((np.exp((integrals[1] - integrals[0]) / (high - low)) - 1) * 100)
