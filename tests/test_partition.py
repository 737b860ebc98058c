import numpy as np
import pytest
import torch

from fedunet.batches import ClientLoader, Normalizer
from fedunet.data import make_synthetic
from fedunet.partition import Partition, PartitionError, least_samples, make_partition, pooled

LABELS = torch.arange(3000) % 10


def _all(part):
    return torch.cat(part.train + part.test)


@pytest.mark.parametrize("scheme", ["dirichlet", "iid", "htfl"])
def test_partition_covers_every_sample_exactly_once(scheme):
    part = make_partition(LABELS, 7, scheme, alpha=0.3, seed=1)
    everything = _all(part)
    assert len(everything) == len(LABELS) and len(torch.unique(everything)) == len(LABELS)


def test_same_inputs_same_partition_and_pinned_hash():
    a = make_partition(LABELS, 5, "dirichlet", alpha=0.5, seed=0)
    b = make_partition(LABELS, 5, "dirichlet", alpha=0.5, seed=0)
    assert a.content_hash() == b.content_hash()
    assert make_partition(LABELS, 5, "dirichlet", alpha=0.5, seed=1).content_hash() != a.content_hash()
    # Pinned: NumPy's legacy RandomState stream is stable, so this holds on every machine.
    assert a.content_hash() == PINNED_HASH


PINNED_HASH = "c35a9dd8abca4767dbd7590dd2981365ecab57c779c039e53f4a90f4329e0541"


def test_min_samples_and_test_fraction():
    part = make_partition(LABELS, 10, "dirichlet", alpha=0.1, min_samples=50, test_fraction=0.2, seed=0)
    for tr, te in zip(part.train, part.test):
        n = len(tr) + len(te)
        assert n >= 50
        assert len(te) == round(n * 0.2)
        assert not set(tr.tolist()) & set(te.tolist())


def test_smaller_alpha_means_more_label_skew():
    def skew(alpha):
        counts = make_partition(LABELS, 10, "dirichlet", alpha=alpha, seed=0).class_counts(LABELS)
        shares = counts / counts.sum(1, keepdims=True)
        return float(shares.max(1).mean())

    assert skew(0.1) > skew(1.0) > skew(100.0)
    iid = make_partition(LABELS, 10, "iid", seed=0).class_counts(LABELS)
    assert iid.sum(1).max() - iid.sum(1).min() <= 1


def test_class_counts_matrix_sums_to_dataset():
    part = make_partition(LABELS, 4, "dirichlet", alpha=0.5, seed=0)
    counts = part.class_counts(LABELS)
    assert counts.shape == (4, 10) and counts.sum() == 3000
    assert np.array_equal(counts.sum(0), np.full(10, 300))


def test_save_load_round_trip_and_corruption_is_detected(tmp_path):
    part = make_partition(LABELS, 4, "dirichlet", alpha=0.5, seed=0)
    path = tmp_path / "p.bin"
    part.save(path, LABELS)
    back = Partition.load(path)
    assert back.content_hash() == part.content_hash() and back.settings == part.settings
    assert all(torch.equal(a, b) for a, b in zip(back.train, part.train))
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF  # flip bits inside the last index
    path.write_bytes(bytes(blob))
    with pytest.raises(PartitionError, match="hash mismatch"):
        Partition.load(path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_clients=2000), "exceeds"),
        (dict(num_clients=3, alpha=-1.0), "alpha must be > 0"),
        (dict(num_clients=3, scheme="pathological"), "allowed: dirichlet, iid"),
        (dict(num_clients=3, test_fraction=1.0), "test_fraction"),
        (dict(num_clients=50, alpha=0.01, min_samples=55, max_attempts=3), "no Dirichlet"),
    ],
)
def test_bad_settings_name_the_field(kwargs, message):
    with pytest.raises(PartitionError, match=message):
        make_partition(LABELS, **kwargs)


@pytest.mark.parametrize("scheme", ["dirichlet", "htfl"])
def test_no_client_gets_more_once_it_holds_its_fair_share(scheme):
    """The cap of NIID-Bench and PFLlib: classes are dealt in order 0..C-1, and a client that already
    holds N / clients samples gets none of the later classes.  Replayed from the class counts.

    One exception, faithful to both reference implementations: the split points are
    int(cumsum(p) * n), and when the last client is capped the float cumulative sum before it
    can fall just short of 1, which hands that client the class's last sample."""
    capped = leaked = 0
    for seed in range(3):
        part = make_partition(LABELS, 10, scheme, alpha=0.1, seed=seed)
        counts = part.class_counts(LABELS)
        fair_share = len(LABELS) / 10
        held = np.zeros(10)
        for k in range(counts.shape[1]):
            full = held >= fair_share
            assert (counts[:-1][full[:-1], k] == 0).all(), (seed, k, held, counts[:, k])
            assert not full[-1] or counts[-1, k] <= 1, (seed, k, held, counts[:, k])
            capped += int(full.sum())
            leaked += int(full[-1] and counts[-1, k])
            held += counts[:, k]
    assert capped > 10  # the cap did bind: without it these draws would differ
    assert leaked <= 3


def test_least_samples_rule():
    # PFLlib: int(min(batch_size / (1 - train_ratio), N / clients / 2))
    assert least_samples(70_000, 20, 10, 0.25) == 40  # Fashion-MNIST pooled: one test batch of 10
    assert least_samples(1_000, 20, 10, 0.25) == 25  # half a fair share is smaller
    assert least_samples(3_000, 7, 3, 0.2) == 15  # 3 / 0.2 = 15 (rounded down from float)
    assert least_samples(100, 2, 10, 0.0) == 25  # no test split: half a fair share


def test_htfl_redraws_until_every_client_has_the_least_samples():
    part = make_partition(LABELS, 20, "htfl", alpha=0.1, seed=0)
    least = part.settings["least_samples"]
    assert least == 40 and min(len(tr) + len(te) for tr, te in zip(part.train, part.test)) >= least
    with pytest.raises(PartitionError, match="no Dirichlet"):  # the first draw broke the rule: redrawn
        make_partition(LABELS, 20, "htfl", alpha=0.1, seed=0, max_attempts=1)
    # the rule follows least_samples_batch: a larger batch asks for more
    big = make_partition(LABELS, 20, "htfl", alpha=0.1, seed=0, least_samples_batch=15)
    assert big.settings["least_samples"] == 60
    assert min(len(tr) + len(te) for tr, te in zip(big.train, big.test)) >= 60


def test_htfl_split_is_ceil_test_share_in_pfllib_order_and_deterministic():
    a = make_partition(LABELS, 5, "htfl", alpha=0.5, seed=0)
    b = make_partition(LABELS, 5, "htfl", alpha=0.5, seed=0)
    assert a.content_hash() == b.content_hash() == PINNED_HTFL_HASH
    assert make_partition(LABELS, 5, "htfl", alpha=0.5, seed=1).content_hash() != a.content_hash()
    for tr, te in zip(a.train, a.test):
        n = len(tr) + len(te)
        assert len(te) == -(-n // 4)  # ceil(0.25 n), sklearn's train_test_split(train_size=0.75)
        assert not set(tr.tolist()) & set(te.tolist())
        assert not torch.equal(tr, tr.sort().values)  # PFLlib's order, not sorted
    # the Dirichlet part is the same draw as the dirichlet scheme with min_samples = the rule
    d = make_partition(LABELS, 5, "dirichlet", alpha=0.5, seed=0, min_samples=a.settings["least_samples"])
    assert [sorted(torch.cat([tr, te]).tolist()) for tr, te in zip(a.train, a.test)] == [
        sorted(torch.cat([tr, te]).tolist()) for tr, te in zip(d.train, d.test)
    ]


PINNED_HTFL_HASH = "bec7bc8c654a8624459ba18e97f83cc81ae279e57bfaf02eaad4292614a18097"


def test_pooled_dataset_appends_the_test_split():
    ds = make_synthetic(num_classes=3, channels=1, size=8, train_size=30, test_size=12)
    both = pooled(ds)
    assert len(both.train_labels) == 42 and torch.equal(both.train_labels[30:], ds.test_labels)
    assert torch.equal(both.train_images[:30], ds.train_images) and torch.equal(both.test_images, ds.test_images)


# The loader options that go with the htfl scheme: HtFLlib's DataLoader(shuffle=False, drop_last=True).


def _loader(n, batch_size, **kw):
    images = torch.arange(9, dtype=torch.uint8).view(9, 1, 1, 1).expand(9, 1, 2, 2).contiguous()
    labels = torch.arange(9)
    norm = Normalizer(torch.zeros(1), torch.full((1,), 1 / 255), torch.device("cpu"))
    indices = torch.tensor([5, 1, 7, 3, 0, 2, 6, 4, 8])[:n]
    gen = torch.Generator().manual_seed(0)
    return ClientLoader(images, labels, indices, batch_size, gen, norm, None, **kw), gen


def test_loader_without_shuffle_visits_the_partition_order_and_draws_nothing():
    loader, gen = _loader(9, 4, shuffle=False)
    state = gen.get_state()
    batches = [y.tolist() for _, y in loader]
    assert batches == [[5, 1, 7, 3], [0, 2, 6, 4]]  # the last batch of one is skipped as before
    assert [y.tolist() for _, y in loader] == batches and torch.equal(gen.get_state(), state)
    x, y = next(iter(loader))
    assert x[:, 0, 0, 0].tolist() == y.float().tolist()  # images follow their labels


def test_loader_drop_last_skips_any_incomplete_batch():
    loader, _ = _loader(7, 3, shuffle=False, drop_last=True)
    assert [y.tolist() for _, y in loader] == [[5, 1, 7], [3, 0, 2]] and len(loader) == 2
    keep, _ = _loader(8, 3, shuffle=False)
    assert [len(y) for _, y in keep] == [3, 3, 2] and len(keep) == 3  # default: a batch of two is kept


def test_loader_defaults_are_unchanged():
    a, _ = _loader(9, 4)
    b, _ = _loader(9, 4, shuffle=True, drop_last=False)
    assert [y.tolist() for _, y in a] == [y.tolist() for _, y in b]
    order = torch.tensor([5, 1, 7, 3, 0, 2, 6, 4, 8])[torch.randperm(9, generator=torch.Generator().manual_seed(0))]
    assert torch.cat([y for _, y in _loader(9, 4)[0]]).tolist() == order[:8].tolist()
