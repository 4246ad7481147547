"""Every error aecodec raises on purpose derives from AecError; the CLI turns each into a one-line
message and exit code 1. Anything else escaping aecodec is a bug and keeps its traceback."""


class AecError(Exception):
    """Base class of aecodec's errors."""


class DecodeError(AecError, ValueError):
    """An .aec file is truncated, corrupted, of an unknown version or made by a model we do not have."""


class ImageError(AecError, ValueError):
    """An input image cannot be read or is of a kind aecodec does not code."""


class OptionError(AecError, ValueError):
    """An option is out of range or contradicts another: quality, rate targets, backend names, ..."""


class WeightsError(AecError, RuntimeError):
    """Model weights are missing, fail their sha256 check or are malformed."""
