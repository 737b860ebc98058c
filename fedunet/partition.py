"""Split a training set over clients: Dirichlet label skew or IID, then train/held-out per client.

Sampling uses NumPy's legacy ``RandomState``, whose stream NumPy keeps stable across
versions and platforms, so the same inputs give the same partition on every machine
(the tests pin a content hash).  The Dirichlet scheme is the one of NIID-Bench (Li et
al., 2022): per class, proportions ~ Dir(alpha), clients already holding their fair
share get no more, and the draw is repeated until every client has ``min_samples``.

The ``htfl`` scheme is the partition of HtFLlib/PFLlib (``separate_data`` + ``split_data``
of PFLlib's ``dataset_utils``), meant for the official train and test splits pooled into
one array (:func:`pooled`): the same Dirichlet draw with the fair-share cap N/clients,
repeated until every client holds at least ``least_samples(...)`` = int(min(batch /
test_fraction, N / clients / 2)) samples (one test batch each), then per client a random
test share of ceil(test_fraction * n) samples.  It draws from one RandomState in PFLlib's
order (Dirichlet draws, then one permutation per client), so seed 1 on the pooled labels
in the official order gives PFLlib's own split (its generators seed NumPy with 1), and
its indices keep PFLlib's sample order (not sorted), which an unshuffled loader
(``training.shuffle: false``) then visits as HtFLlib's ``DataLoader(shuffle=False)`` does.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fedunet import serialization

SCHEMES = ("dirichlet", "iid", "htfl")
POOLED_SCHEMES = ("htfl",)  # schemes that partition the train and test splits pooled together


class PartitionError(ValueError):
    pass


@dataclass
class Partition:
    """Per-client train and held-out test indices into the dataset's training split."""

    train: list[Tensor]
    test: list[Tensor]
    num_classes: int
    settings: dict

    @property
    def num_clients(self) -> int:
        return len(self.train)

    def class_counts(self, labels: Tensor) -> np.ndarray:
        """(clients x classes) matrix of training plus held-out samples per class."""
        counts = np.zeros((self.num_clients, self.num_classes), dtype=np.int64)
        labels = labels.cpu()
        for i, (tr, te) in enumerate(zip(self.train, self.test)):
            counts[i] = np.bincount(labels[torch.cat([tr, te])].numpy(), minlength=self.num_classes)
        return counts

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for name, t in self._named_tensors().items():
            h.update(name.encode())
            h.update(t.numpy().astype("<i8").tobytes())
        return h.hexdigest()

    def _named_tensors(self) -> dict[str, Tensor]:
        out = {}
        for i, (tr, te) in enumerate(zip(self.train, self.test)):
            out[f"client{i:03d}.train"] = tr.cpu().long()
            out[f"client{i:03d}.test"] = te.cpu().long()
        return out

    def save(self, path: str | Path, labels: Tensor, counts: np.ndarray | None = None) -> None:
        """Write the indices with their hash and class-count matrix in the header (atomically);
        ``counts`` replaces the per-sample class counts (segmentation: pixels per class)."""
        from fedunet.io import atomic_write_bytes

        counts = self.class_counts(labels) if counts is None else counts
        metadata = {
            "settings": json.dumps(self.settings, sort_keys=True),
            "sha256": self.content_hash(),
            "class_counts": json.dumps(counts.tolist()),
            "num_classes": str(self.num_classes),
        }
        atomic_write_bytes(path, serialization.encode(self._named_tensors(), metadata=metadata))

    @classmethod
    def load(cls, path: str | Path) -> Partition:
        blob = Path(path).read_bytes()
        tensors, metadata = serialization.decode(blob)
        n = len(tensors) // 2
        part = cls(
            train=[tensors[f"client{i:03d}.train"] for i in range(n)],
            test=[tensors[f"client{i:03d}.test"] for i in range(n)],
            num_classes=int(metadata["num_classes"]),
            settings=json.loads(metadata["settings"]),
        )
        if part.content_hash() != metadata.get("sha256"):
            raise PartitionError(f"{path}: content hash mismatch, the file is corrupted")
        return part


def make_partition(
    labels: Tensor,
    num_clients: int,
    scheme: str = "dirichlet",
    alpha: float = 0.5,
    min_samples: int = 10,
    test_fraction: float = 0.25,
    seed: int = 0,
    max_attempts: int = 1000,
    least_samples_batch: int = 10,
) -> Partition:
    """Partition sample indices ``0..len(labels)-1`` over ``num_clients`` clients.

    ``least_samples_batch`` is used by the ``htfl`` scheme only (see :func:`least_samples`);
    ``min_samples`` by the others.
    """
    y = labels.cpu().numpy().astype(np.int64)
    num_classes = int(y.max()) + 1
    if num_clients < 1:
        raise PartitionError(f"partition.num_clients must be >= 1, got {num_clients}")
    if num_clients * max(min_samples, 2) > len(y):
        raise PartitionError(
            f"partition.num_clients={num_clients} x partition.min_samples={min_samples} exceeds the {len(y)} training samples"
        )
    if not 0.0 <= test_fraction < 1.0:
        raise PartitionError(f"partition.test_fraction must be in [0, 1), got {test_fraction}")
    rs = np.random.RandomState(seed)
    if scheme == "iid":
        shards = np.array_split(rs.permutation(len(y)), num_clients)
    elif scheme == "dirichlet":
        if alpha <= 0:
            raise PartitionError(f"partition.alpha must be > 0, got {alpha}")
        shards = _dirichlet(y, num_classes, num_clients, alpha, min_samples, rs, max_attempts)
    elif scheme == "htfl":
        if alpha <= 0:
            raise PartitionError(f"partition.alpha must be > 0, got {alpha}")
        least = least_samples(len(y), num_clients, least_samples_batch, test_fraction)
        shards = _dirichlet(y, num_classes, num_clients, alpha, least, rs, max_attempts)
        settings = dict(
            num_clients=num_clients,
            scheme=scheme,
            alpha=alpha,
            least_samples_batch=least_samples_batch,
            least_samples=least,
            test_fraction=test_fraction,
            seed=seed,
            num_samples=len(y),
        )
        return _htfl_split(shards, num_classes, test_fraction, rs, settings)
    else:
        raise PartitionError(f"unknown partition.scheme {scheme!r}; allowed: {', '.join(SCHEMES)}")

    train, test = [], []
    for shard in shards:
        shard = rs.permutation(np.asarray(shard, dtype=np.int64))
        n_test = int(round(len(shard) * test_fraction))
        test.append(torch.from_numpy(np.sort(shard[:n_test])))
        train.append(torch.from_numpy(np.sort(shard[n_test:])))
    settings = dict(
        num_clients=num_clients,
        scheme=scheme,
        alpha=alpha if scheme == "dirichlet" else None,
        min_samples=min_samples,
        test_fraction=test_fraction,
        seed=seed,
        num_samples=len(y),
    )
    return Partition(train, test, num_classes, settings)


def _dirichlet(y, num_classes, num_clients, alpha, min_samples, rs, max_attempts) -> list[np.ndarray]:
    fair_share = len(y) / num_clients
    for _ in range(max_attempts):
        shards: list[list[int]] = [[] for _ in range(num_clients)]
        for k in range(num_classes):
            idx_k = np.flatnonzero(y == k)
            rs.shuffle(idx_k)
            p = rs.dirichlet(np.repeat(alpha, num_clients))
            p = p * np.array([len(s) < fair_share for s in shards])
            p = p / p.sum()
            cuts = (np.cumsum(p) * len(idx_k)).astype(int)[:-1]
            for shard, part in zip(shards, np.split(idx_k, cuts)):
                shard.extend(part.tolist())
        if min(len(s) for s in shards) >= min_samples:
            return [np.array(s, dtype=np.int64) for s in shards]
    raise PartitionError(
        f"no Dirichlet(alpha={alpha}) draw gave every one of {num_clients} clients >= {min_samples} samples "
        f"in {max_attempts} attempts; lower partition.min_samples or raise partition.alpha"
    )


def least_samples(num_samples: int, num_clients: int, batch_size: int, test_fraction: float) -> int:
    """PFLlib's floor on each client's sample count: one test batch, at most half a fair share,
    int(min(batch_size / (1 - train_ratio), N / clients / 2))."""
    one_test_batch = batch_size / test_fraction if test_fraction > 0 else math.inf
    return int(min(one_test_batch, num_samples / num_clients / 2))


def _htfl_split(shards, num_classes: int, test_fraction: float, rs, settings: dict) -> Partition:
    """Per client, what ``sklearn.model_selection.train_test_split(train_size=1 - test_fraction,
    shuffle=True)`` does with NumPy's global generator: one permutation of the client's samples
    (in the order the Dirichlet draw gave them), the first ceil(test share * n) for testing and
    the next floor(train share * n) for training, both kept in that order."""
    train_size = 1.0 - test_fraction
    test_size = 1.0 - train_size
    train, test = [], []
    for shard in shards:
        n = len(shard)
        order = rs.permutation(n)
        n_test, n_train = math.ceil(test_size * n), math.floor(train_size * n)
        test.append(torch.from_numpy(np.asarray(shard, dtype=np.int64)[order[:n_test]]))
        train.append(torch.from_numpy(np.asarray(shard, dtype=np.int64)[order[n_test : n_test + n_train]]))
    return Partition(train, test, num_classes, settings)


def pooled(dataset):
    """The dataset with its test split appended to its training split (what the ``htfl`` scheme
    partitions: PFLlib merges the official splits before partitioning).  The test split is kept
    as it is, so the global protocol still runs, but on samples the clients also hold."""
    return replace(
        dataset,
        train_images=torch.cat([dataset.train_images, dataset.test_images]),
        train_labels=torch.cat([dataset.train_labels, dataset.test_labels]),
    )
