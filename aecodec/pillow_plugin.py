"""Pillow plugin, registered by `import aecodec`: Image.open("x.aec") and img.save("x.aec", quality=6).

Opening reads and verifies the header only (size and mode are known at once); pixels are decoded on
first access. Saving takes quality= (default aecodec.DEFAULT_QUALITY) and weights= as extra arguments, or
lossless=True.
"""

from __future__ import annotations

from PIL import Image, ImageFile

from . import format as aec_format
from .quality import DEFAULT_QUALITY

FORMAT = "AEC"


def _accept(prefix: bytes) -> bool:
    return prefix[: len(aec_format.MAGIC)] == aec_format.MAGIC


class AecImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "aecodec learned image codec"

    def _open(self) -> None:
        self._data = self.fp.read()
        header, _ = aec_format.unpack(self._data)  # DecodeError (a ValueError) for a damaged file
        self._mode = header.mode
        self._size = (header.width, header.height)
        self.info["coding"] = header.coding
        if not header.lossless:
            self.info["quality"] = header.quality
            self.info["model_id"] = header.model_id.hex()
        self.tile = []

    def load(self):
        if self._im is None:
            from .api import decode

            decoded = decode(self._data)
            self.im = decoded.im
        return Image.Image.load(self)


def _save(im: Image.Image, fp, filename) -> None:
    from .api import encode

    options = im.encoderinfo
    if options.get("lossless"):
        fp.write(encode(im, lossless=True))
    else:
        fp.write(encode(im, options.get("quality", DEFAULT_QUALITY), weights=options.get("weights")))


Image.register_open(FORMAT, AecImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".aec")
Image.register_mime(FORMAT, "image/x-aec")
