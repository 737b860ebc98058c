"""Datasets by name (fedunet/data.py): synthetic, CIFAR and Fashion-MNIST readers, subsets, errors."""

import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from fedunet import data
from fedunet.data import DatasetUnavailable, ImageDataset, load_dataset, make_synthetic, read_idx


def test_synthetic_is_deterministic_and_class_dependent():
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.train_labels, b.train_labels)
    assert not torch.equal(make_synthetic(seed=4).train_images, a.train_images)
    assert a.train_images.dtype == torch.uint8 and a.train_images.shape == (2000, 3, 32, 32)
    means = torch.stack([a.train_images[a.train_labels == k].float().mean(0) for k in range(10)])
    assert (means[0] - means[1]).abs().mean() > 5  # classes differ by far more than noise averages out


def test_synthetic_shapes_follow_options():
    ds = make_synthetic(num_classes=4, channels=1, size=12, train_size=40, test_size=8)
    assert ds.train_images.shape == (40, 1, 12, 12) and ds.test_images.shape == (8, 1, 12, 12)
    assert ds.num_classes == 4 and set(ds.train_labels.tolist()) == {0, 1, 2, 3}


def test_subsets_are_fixed_by_the_dataset():
    a = load_dataset("synthetic", max_train=50, max_test=7)
    b = load_dataset("synthetic", max_train=50, max_test=7)
    assert len(a.train_labels) == 50 and len(a.test_labels) == 7
    assert torch.equal(a.train_images, b.train_images)


# ------------------------------------------------------------ files in the real formats


def _idx_bytes(array: np.ndarray) -> bytes:
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(s.to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(directory, n_train=30, n_test=10, gz=True):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 255, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 255, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for stem, arr in arrays.items():
        raw = _idx_bytes(arr)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)
    return arrays


def test_read_idx_reads_and_checks_length(tmp_path):
    arr = np.arange(24).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(arr))
    assert torch.equal(read_idx(tmp_path / "a"), torch.from_numpy(arr.astype(np.uint8)))
    (tmp_path / "b").write_bytes(_idx_bytes(arr)[:-1])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "b")


@pytest.mark.parametrize("layout", ["fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_from_the_data_root(tmp_path, layout, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    arrays = write_fashion_mnist(tmp_path / layout, gz=layout == "fashion-mnist")
    ds = load_dataset("fashion-mnist", tmp_path, download=False)
    assert ds.train_images.shape == (30, 1, 28, 28) and ds.test_images.shape == (10, 1, 28, 28)
    assert torch.equal(ds.train_images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.uint8)))
    assert ds.train_labels.dtype == torch.int64


def test_fashion_mnist_falls_back_to_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    write_fashion_mnist(tmp_path / "debian")
    assert len(load_dataset("fashion-mnist", tmp_path / "empty", download=False).train_labels) == 30


def test_missing_fashion_mnist_names_the_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    with pytest.raises(DatasetUnavailable, match=r"train-images-idx3-ubyte.*fashion-mnist.*debian.*download disabled"):
        load_dataset("fashion-mnist", tmp_path, download=False)


def make_cifar_archive(root, hundred=False, per_batch=20):
    """A tiny CIFAR archive in torchvision's format: python-2 style pickles of numpy arrays."""
    rng = np.random.default_rng(0)
    folder = "cifar-100-python" if hundred else "cifar-10-batches-py"
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    key = "fine_labels" if hundred else "labels"
    archive = root / ("cifar-100-python.tar.gz" if hundred else "cifar-10-python.tar.gz")
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name in names:
            batch = {
                "data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8),
                key: (np.arange(per_batch) % (100 if hundred else 10)).tolist(),
            }
            blob = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return archive


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_loads_from_an_archive_in_torchvision_format(tmp_path, hundred):
    make_cifar_archive(tmp_path, hundred)
    ds = load_dataset("cifar100" if hundred else "cifar10", tmp_path, download=False)
    n_train = 20 if hundred else 100
    assert ds.train_images.shape == (n_train, 3, 32, 32) and ds.test_images.shape == (20, 3, 32, 32)
    assert ds.num_classes == (100 if hundred else 10)
    # a second load reads the extracted files
    assert torch.equal(
        load_dataset("cifar10" if not hundred else "cifar100", tmp_path, download=False).train_images, ds.train_images
    )


def test_missing_cifar_without_network_names_directory_and_files(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(tvu, "download_url", offline)
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("cifar10", tmp_path, download=True)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "data_batch_1" in msg and "test_batch" in msg
    assert "Network is unreachable" in msg


def test_dataset_pickles_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_dataset("cifar10", tmp_path, download=False)
    assert not (tmp_path / "pwned").exists()


def test_unknown_dataset_lists_allowed():
    with pytest.raises(ValueError, match="allowed: cifar10, cifar100, fashion-mnist, synthetic"):
        load_dataset("mnist")


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.exists(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package(tmp_path):
    ds = load_dataset("fashion-mnist", tmp_path, download=False)
    assert ds.train_images.shape == (60000, 1, 28, 28) and ds.test_images.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(ds.test_labels), torch.full((10,), 1000))


def test_a_dataset_moves_its_four_tensors_and_keeps_the_rest():
    ds = make_synthetic(num_classes=3, channels=1, size=6, train_size=9, test_size=3)
    moved = ds.to("meta")
    assert all(getattr(moved, n).device.type == "meta" for n in ImageDataset.TENSORS)
    assert (moved.name, moved.num_classes, moved.in_channels, moved.input_size) == ("synthetic", 3, 1, 6)
    assert ds.train_images.device.type == "cpu"  # a copy: the original stays
