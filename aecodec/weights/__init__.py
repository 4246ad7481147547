"""Released models: the registry, saving weights (with frozen CDF tables) and sha256-checked loading.

A model id is the first 8 bytes of the sha256 of its weights file; .aec headers record it, so a file
always names the exact weights that decode it. A released model is never removed or changed: every
later aecodec decodes its files, from its weights file or, once superseded, from that file's decoder
half, which is the same tensors less the analysis transforms (docs/FORMAT.md, "Weights files"). The
decoder halves ship in the companion package aecodec-archive (a dependency; archive/ in the source tree).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError

WEIGHTS_DIR = Path(__file__).resolve().parent
FORMAT_TAG = "aecodec-weights/1"
HALF_PRECISION_PARTS = ("g_a.", "g_s.", "h_a.", "h_s.")  # the analysis and synthesis transforms
ENCODER_PARTS = ("g_a.", "h_a.")  # what only encoding reads: a decoder-only file leaves them out
SCALE_LEVELS = 256  # scales in the Gaussian conditional's table (compressai's default: 64)
ARCHIVE = "aecodec-archive"  # the distribution that holds superseded models' decoders (below)
SOURCE_ROOT = WEIGHTS_DIR.parents[1]  # the source tree, in a development install
# The source tree's copy of that package: where a release writes a superseded model's decoder.
SOURCE_ARCHIVE_DIR = SOURCE_ROOT / "archive" / "aecodec_archive"


@functools.cache
def installed_archive() -> tuple[Path, int] | None:
    """(folder, version) of the installed aecodec_archive package, None when it is not installed."""
    try:
        import aecodec_archive
    except ImportError:
        return None
    return Path(aecodec_archive.__file__).resolve().parent, int(aecodec_archive.__version__)


@dataclass(frozen=True)
class Release:
    """A released model: its weights file (in this folder, or its decoder half in aecodec-archive), that
    file's sha256, and what it codes."""

    name: str
    filename: str
    sha256: str
    N: int
    M: int
    qualities: tuple[float, float]
    release: str  # the aecodec version that first shipped it
    # Set once the model ships decoder-only (decoder_only() of its weights file): that file's sha256, and
    # the aecodec-archive version that first holds it.
    decoder_sha256: str = ""
    archive_version: int = 0

    @property
    def model_id(self) -> bytes:
        return bytes.fromhex(self.sha256)[:8]

    @property
    def encodes(self) -> bool:
        return not self.decoder_sha256

    @property
    def path(self) -> Path:
        """Where its weights ship: the file as it is (the default model, read at every start); once
        another model is the default, gzip-compressed as FILENAME.gz (`gzip -9n`: 24 % smaller, its CDF
        tables shrink ~50x; ~0.1 s to inflate); or, decoder-only, as STEM.decoder.pt.gz in aecodec-archive
        (another 35 % smaller). The checked sha256 is the uncompressed file's."""
        if self.decoder_sha256:
            return self.decoder_path
        raw = WEIGHTS_DIR / self.filename
        return raw if raw.is_file() else raw.with_name(raw.name + ".gz")

    @property
    def decoder_name(self) -> str:
        return Path(self.filename).stem + ".decoder.pt.gz"

    def source_path(self, root: Path) -> Path:
        """Where its weights lie in the source tree `root`, installed or not (release and device tools)."""
        if self.decoder_sha256:
            return root / SOURCE_ARCHIVE_DIR.relative_to(SOURCE_ROOT) / self.decoder_name
        return root / WEIGHTS_DIR.relative_to(SOURCE_ROOT) / self.path.name

    @property
    def decoder_path(self) -> Path:
        installed = installed_archive()
        if installed is None:
            raise WeightsError(f"{self.name}'s files decode with its decoder from the {ARCHIVE} package, which is not "
                               f"installed: pip install '{ARCHIVE}>={self.archive_version}' (in a source tree: pip install ./archive)")
        folder, version = installed
        if version < self.archive_version:
            raise WeightsError(f"{self.name}'s decoder ships in {ARCHIVE} {self.archive_version} and later, {version} is "
                               f"installed: pip install -U '{ARCHIVE}>={self.archive_version}'")
        return folder / self.decoder_name

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


# Append only: an entry, once released, stays forever with the same sha256 (its id); a superseded N=128
# model gains decoder_sha256 when it starts shipping decoder-only (0.9.0), and with it the version of
# aecodec-archive that adds its decoder (that version is then the archive's, and aecodec requires it).
# aec-hp64 ships whole: the small model encodes ~4x faster.
RELEASES = {
    release.name: release
    for release in (
        Release("aec-hp64", "aec-hp64.pt", "a264051d3bd2c7f9222d2445a73b0dc1f1dc5d01b3b619e3d75b27fc6c407eed",
                64, 128, (1.0, 10.0), "0.1.0"),
        Release("aec-hp128", "aec-hp128.pt", "473c29fcdfeb0c209d5ea334680d7e565666f53c5ec5e0bc90d8a867cdb5c149",
                128, 192, (1.0, 10.0), "0.3.0",
                decoder_sha256="de6dd0d727548af29e16a2c9e2e516df80e52b80cb001a3a4d3d18db28495d95", archive_version=1),
        Release("aec-hp128b", "aec-hp128b.pt", "245eb8bfeca41e10fd1447868b2b75933ccc7263643000713ddbe83237c03897",
                128, 192, (1.0, 10.0), "0.4.0",
                decoder_sha256="13ddcf79d93949a2677f020519c763341b4a600d08e7c25865c1c47ea45f5e0b", archive_version=1),
        Release("aec-hp128c", "aec-hp128c.pt", "ad295d92fc73a6215ba18c8fc1ead7e494eb632bb5aa3df5eeeb2a3ffb9e2ca7",
                128, 192, (1.0, 10.0), "0.5.0",
                decoder_sha256="8130fd2631ee6d1f840118c2814e564779ec4ca82f6282503990c3994575d25d", archive_version=1),
        Release("aec-hp128d", "aec-hp128d.pt", "4fe9c01e413cc5816a0240ebb0187be6bf1b100e80720330bc33dee98c64e3f3",
                128, 192, (1.0, 10.0), "0.6.0",
                decoder_sha256="b9d273b9c24d4f57610fb3f21438740bbe06d9c8871e380e853159c5f85589fa", archive_version=1),
        Release("aec-hp128e", "aec-hp128e.pt", "c45c9855720e72b7ca5fb06fdd478de675ab886f737cc4166090563b433f2966",
                128, 192, (1.0, 10.0), "0.7.0",
                decoder_sha256="44b9bf0cf41b01f3f95f3b88312f1d4178c421671c6b71c408db455460e38b0a", archive_version=1),
        Release("aec-hp128f", "aec-hp128f.pt", "ef4b316021ed5b6a28daf84570dd2e1797f5f283a253516a1476d4a57a0adced",
                128, 192, (1.0, 10.0), "0.8.0",
                decoder_sha256="6b35665ac9bd86331b7ec74c943853bd652d6cd2041d58076862a2f0dd15a6e5", archive_version=1),
        Release("aec-hp128g", "aec-hp128g.pt", "5f2247f032bbfa01fc6f9192ff92ee66cafa006b9f9ff5b8aea90ec420b8cb3d",
                128, 192, (1.0, 10.0), "0.9.0",
                decoder_sha256="430bb9efc9acf1be57c564bfd00f00191e25174f84f4b7af7d98630e41c7ad94", archive_version=1),
        Release("aec-hp128h", "aec-hp128h.pt", "41e09122d95f7e5142de3ec169f95322130ff9ad188b307af0549bcf48147a5d",
                128, 192, (1.0, 10.0), "0.10.0",
                decoder_sha256="d3da0a6291dc2a577ef4bb197091f9c1628f4d4f7ba14c9f741f52140df8c119", archive_version=2),
        Release("aec-hp128i", "aec-hp128i.pt", "66b9f6f360e264cf56a24df317473eb36f48fe68066bffa5681a776f0fe74a07",
                128, 192, (1.0, 10.0), "0.11.0",
                decoder_sha256="4d1b2000cf452b7079ead58a0c79e095e72bb03eee150abb7350e8b549e89b09", archive_version=3),
        Release("aec-hp128j", "aec-hp128j.pt", "7f2e0bb61824c806854371fb8a924e5213b3523a5f43db1035cc3f6df097c982",
                128, 192, (1.0, 10.0), "0.12.0",
                decoder_sha256="16819a551b27a79d1641fce397950726c89825fed74b9e78403d09c79ddd9244", archive_version=4),
        Release("aec-hp128k", "aec-hp128k.pt", "eba6bca0ddba623f313787aae48db6fa04deb3ea0ce4a91a4096d7f52f770645",
                128, 192, (1.0, 10.0), "0.13.0"),
    )
}
DEFAULT_MODEL = "aec-hp128k"  # what encode uses; decode picks the model a file names


def release_for(model_id: bytes) -> Release | None:
    """The released model with this id, without loading anything."""
    return next((r for r in RELEASES.values() if r.model_id == model_id), None)


@dataclass
class Model:
    """Loaded weights ready to code: the network, its latent coder and the id files record."""

    name: str
    model_id: bytes
    net: torch.nn.Module
    latents: object  # aecodec.entropy.LatentCoder

    @property
    def id_hex(self) -> str:
        return self.model_id.hex()

    @property
    def encodes(self) -> bool:
        """False for decoder-only weights (decoder_only()): they decode files but cannot make them."""
        return self.net.g_a is not None


def save_shipped(model, path: Path) -> None:
    """Freeze the integer CDF tables (compressai's update) and write weights + config atomically."""
    import torch
    from compressai.models.google import get_scale_table

    model.eval()
    # y is coded with the first table scale >= the predicted one: with compressai's 64 scales, 13 % apart,
    # files were 1.0-1.7 % over the model's rate on Kodak; with 256 (3 % apart) 0.3-0.6 %
    # (bench.overhead), for +2.4 MB of tables.
    model.update(scale_table=get_scale_table(levels=SCALE_LEVELS), force=True)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    # The transforms' parameters travel as float16 (half the size; the codec is evaluated on exactly
    # these values). Buffers and the entropy models stay float32: in float16 the likelihood bound 1e-9
    # became 0, GDN's pedestal too, and the scale table drifted from the one the CDFs were built from.
    half = {name for name, _ in model.named_parameters() if name.startswith(HALF_PRECISION_PARTS)}
    # contiguous: training keeps its convolutions' weights channels-last; files hold the default layout.
    state = {k: (v.half() if k in half else v).contiguous() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT_TAG, "config": model.config, "state_dict": state}, tmp)
    os.replace(tmp, path)


def _read(blob: bytes, name: str) -> dict:
    import torch

    try:
        checkpoint = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{name}: cannot load weights: {exc}") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT_TAG:
        raise WeightsError(f"{name}: not an aecodec weights file (run `aecodec train` to make one)")
    return checkpoint


def _build(name: str, blob: bytes, model_id: bytes) -> Model:
    from ..entropy import LatentCoder
    from ..network import Network

    checkpoint = _read(blob, name)
    try:
        net = Network.from_state_dict(checkpoint["state_dict"], **checkpoint["config"])
    except Exception as exc:
        raise WeightsError(f"{name}: cannot load weights: {exc}") from exc
    return Model(name, model_id, net, LatentCoder(net))


def decoder_only(blob: bytes) -> bytes:
    """A weights file's decoder half: the same archive less the analysis transforms' tensors, which only
    encoding reads. Superseded releases ship it: decoding their files is all a later aecodec owes them."""
    import torch

    checkpoint = _read(blob, "weights")
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(ENCODER_PARTS)}
    out = io.BytesIO()
    torch.save({**checkpoint, "state_dict": state}, out)
    return out.getvalue()


def write_decoder_only(name: str, folder: Path) -> str:
    """Writes the released model NAME's decoder half into `folder` (the source tree's aecodec-archive), as
    Release.path will name it once its entry gains decoder_sha256 and the archive's next version; returns
    that sha256. The release step for a superseded default."""
    release = RELEASES[name]
    if not release.encodes:
        raise WeightsError(f"{release.path} is not {name}'s whole weights file")
    if not folder.is_dir():
        raise WeightsError(f"no folder {folder} to write {name}'s decoder into (a release runs in a source tree)")
    decoder = decoder_only(_shipped_bytes(release))
    (folder / release.decoder_name).write_bytes(gzip.compress(decoder, compresslevel=9, mtime=0))
    return hashlib.sha256(decoder).hexdigest()


def _shipped_bytes(release: Release) -> bytes:
    """A released model's shipped weights, inflated and checked against the sha256 of the form it ships in."""
    path = release.path
    package = ARCHIVE if release.decoder_sha256 else "aecodec"
    if not path.is_file():
        raise WeightsError(f"shipped weights {path} are missing: reinstall {package}")
    blob = path.read_bytes()
    if path.suffix == ".gz":
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, ValueError) as exc:  # BadGzipFile is an OSError
            raise WeightsError(f"shipped weights {path} are damaged ({exc}): reinstall {package}") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != (release.decoder_sha256 or release.sha256):
        raise WeightsError(f"shipped weights {path} fail their sha256 check (got {digest[:16]}...): reinstall {package}")
    return blob


_cache: dict[str, Model] = {}


def load(weights: str | os.PathLike | None = None) -> Model:
    """A released model by name (default: DEFAULT_MODEL), or any weights file by path; cached."""
    key = os.fspath(weights) if weights is not None else DEFAULT_MODEL
    if key in _cache:
        return _cache[key]
    if key in RELEASES:
        blob = _shipped_bytes(RELEASES[key])
        model_id = RELEASES[key].model_id
    else:
        path = Path(key)
        if not path.is_file():
            raise WeightsError(f"no weights file {key!r} (released models: {', '.join(RELEASES)})")
        blob = path.read_bytes()
        model_id = hashlib.sha256(blob).digest()[:8]
    model = _build(key, blob, model_id)
    _cache[key] = model
    return model


def find(model_id: bytes, candidates: list[Model]) -> Model | None:
    """The model with this id among the candidates, the models loaded in this process, and the released ones."""
    for model in [*candidates, *_cache.values()]:
        if model.model_id == model_id:
            return model
    release = release_for(model_id)
    return load(release.name) if release else None
