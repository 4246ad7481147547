"""The decoders of aecodec's superseded models, one gzip-compressed file each (aecodec.weights names them
and checks their sha256): every .aec file an earlier aecodec wrote keeps decoding with every later one.

A companion distribution, so that aecodec's own wheel keeps under PyPI's 100 MB default as releases
accumulate: aecodec ships the models that encode, this package the ones that only decode. It only ever
gains files; each aecodec requires the version that holds all of its superseded models.
"""

__version__ = "4"
