"""The rate knob: the quality range, the lambda each anchor quality trains with, and the default.

Plain constants, no torch: the CLI's help and argument checks use them without loading the model.
"""

from __future__ import annotations

import math

from .errors import OptionError

# Quality q is a float in [QUALITY_MIN, QUALITY_MAX]; integer q in 3..9 trains with CompressAI's MSE
# lambda for its quality q - 2. Qualities 1 and 2 extend the range down to ~0.1 bpp and quality 10
# (0.23, CompressAI's top is 0.18) up to ~1.5 bpp, which CompressAI's end lambdas do not reach with
# a model trained on our compute.
LAMBDAS = (0.0003, 0.0008, 0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.23)
QUALITY_MIN = 1.0
LEARNED_MAX = float(len(LAMBDAS))  # the top of the model's own range
# Above REFINED_FROM, up to QUALITY_MAX, the image is coded at REFINED_FROM plus a refinement layer
# (refine.py): on photos that takes fewer bits than the model's own top qualities (README, Models).
REFINED_FROM = 7.0
QUALITY_MAX = 12.0
DEFAULT_QUALITY = 6.0


def check_quality(quality: float) -> float:
    try:
        quality = float(quality)
    except (TypeError, ValueError):
        raise OptionError(f"quality must be a number, got {quality!r}") from None
    if not (QUALITY_MIN <= quality <= QUALITY_MAX) or math.isnan(quality):
        raise OptionError(f"quality must be a number in [{QUALITY_MIN:g}, {QUALITY_MAX:g}], got {quality}")
    return quality
