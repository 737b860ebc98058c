"""``fmnist-composite`` (fedunet/segmentation/composites.py): overlap and placement rules, determinism,
masks that follow the garments, and label skew over clients."""

import pytest
import torch
from helpers import garment_blocks, one_thread  # noqa: F401  (one_thread: autouse, every test here on one thread)

from fedunet.data import DEBIAN_FASHION_MNIST, load_dataset
from fedunet.segmentation.composites import CompositeOptions, composite, federated_composites, make_fmnist_composites
from fedunet.segmentation.dataset import class_pixel_counts, classes_on

HAVE_FMNIST = (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists() or (
    DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte"
).exists()
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST is not installed")


@pytest.fixture(scope="module")
def fmnist():
    """A fixed 3,000-image subset of the real Fashion-MNIST training split, and 500 test images."""
    ds = load_dataset("fashion-mnist", download=False, max_train=3000, max_test=500)
    return ds.train_images, ds.train_labels, ds.test_images, ds.test_labels


@pytest.mark.parametrize("overlap", ["over", "under"])
def test_overlap_rule_later_or_earlier_garment_on_top(overlap):
    # canvas = garment size: every garment covers the whole canvas, so the rule alone decides the mask
    images, labels = garment_blocks([100, 150, 200], [4, 7, 2])
    opts = CompositeOptions(canvas_size=28, garments=(2, 2), overlap=overlap)
    canvas, mask, sources = composite(images, labels, 20, opts, seed=1)
    top = sources[:, 1] if overlap == "over" else sources[:, 0]
    assert torch.equal(mask, (labels[top] + 1).to(torch.uint8).view(-1, 1, 1).expand(-1, 28, 28))
    assert torch.equal(canvas[:, 0], images[top, 0])


def test_only_a_garments_own_pixels_are_pasted():
    images, labels = garment_blocks([0], [3])
    images[0, 0, 5:10, 5:20] = 21  # just above the threshold: foreground
    images[0, 0, 12:14, :] = 20  # at the threshold: not foreground
    canvas, mask, _ = composite(images, labels, 4, CompositeOptions(canvas_size=40, garments=(1, 1), threshold=20), seed=0)
    assert (mask > 0).sum(dim=(1, 2)).tolist() == [5 * 15] * 4
    assert torch.equal(canvas[:, 0] > 20, mask > 0) and mask.max() == 4  # class 3 -> mask 4
    assert torch.equal(canvas[:, 0][mask == 0], torch.zeros_like(canvas[:, 0][mask == 0]))


def test_grid_placement_never_overlaps():
    images, labels = garment_blocks([100, 200], [0, 1])
    kw = dict(canvas_size=64, garments=(4, 4), placement="grid")
    over = composite(images, labels, 10, CompositeOptions(overlap="over", **kw), seed=2)
    under = composite(images, labels, 10, CompositeOptions(overlap="under", **kw), seed=2)
    assert all(torch.equal(a, b) for a, b in zip(over, under))
    assert ((over[1] > 0).sum(dim=(1, 2)) == 4 * 28 * 28).all()  # four full garments, all visible


def test_composite_options_are_checked():
    images, labels = garment_blocks([100], [0])
    for bad, match in [
        (dict(placement="spiral"), "placement"),
        (dict(overlap="blend"), "overlap"),
        (dict(garments=(3, 2)), "garments"),
        (dict(canvas_size=20), "smaller"),
        (dict(canvas_size=64, garments=(1, 5), placement="grid"), "at most 4"),
    ]:
        with pytest.raises(ValueError, match=match):
            composite(images, labels, 1, CompositeOptions(**bad))


def test_same_seed_and_options_give_bit_identical_tensors():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.arange(50) % 10
    opts = CompositeOptions(canvas_size=48, garments=(1, 3))
    a = composite(images, labels, 30, opts, seed=5)
    b = composite(images, labels, 30, opts, seed=5)
    c = composite(images, labels, 30, opts, seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])
    d = composite(images, labels, 30, CompositeOptions(canvas_size=48, garments=(1, 3), threshold=50), seed=5)
    assert torch.equal(a[2], d[2]) and not torch.equal(a[1], d[1])  # same draws, other threshold


@needs_fmnist
def test_fmnist_composites_masks_follow_the_garments(fmnist):
    opts = CompositeOptions(canvas_size=64, garments=(2, 4))
    canvas, mask, sources = composite(fmnist[0], fmnist[1], 40, opts, seed=0)
    assert canvas.shape == (40, 1, 64, 64) and mask.shape == (40, 64, 64) and mask.dtype == torch.uint8
    assert torch.equal(canvas[:, 0] > opts.threshold, mask > 0)  # painted pixels are exactly the labelled ones
    counts = (sources >= 0).sum(1)
    assert counts.min() >= 2 and counts.max() <= 4
    for m, src in zip(mask, sources):
        allowed = {int(fmnist[1][s]) + 1 for s in src.tolist() if s >= 0}
        assert set(m.unique().tolist()) - {0} <= allowed


@needs_fmnist
def test_fmnist_composite_dataset_is_deterministic_and_named_as_composite(fmnist):
    kw = dict(train_canvases=30, test_canvases=10, source=fmnist)
    a, b = make_fmnist_composites(seed=3, **kw), make_fmnist_composites(seed=3, **kw)
    assert a.name == "fmnist-composite" and a.num_classes == 11 and a.class_names[0] == "background"
    assert a.content_hash() == b.content_hash()
    assert make_fmnist_composites(seed=4, **kw).content_hash() != a.content_hash()
    assert (a.in_channels, a.input_size) == (1, 64)


@needs_fmnist
def test_client_canvases_show_only_their_dirichlet_share_of_classes(fmnist):
    opts = CompositeOptions(canvas_size=56, garments=(1, 3))
    ds, part = federated_composites(4, alpha=0.1, options=opts, min_samples=20, source=fmnist, global_test_canvases=20)
    again, _ = federated_composites(4, alpha=0.1, options=opts, min_samples=20, source=fmnist, global_test_canvases=20)
    assert ds.content_hash() == again.content_hash()
    # canvas indices: disjoint, covering every canvas
    every = torch.cat(part.train + part.test).sort().values
    assert torch.equal(every, torch.arange(len(ds.train_images)))
    from fedunet.partition import make_partition

    src = make_partition(fmnist[1], 4, "dirichlet", 0.1, 20, 0.25, 0)
    assert part.settings["source_partition_sha256"] == src.content_hash()
    sets = []
    for i in range(4):
        for mine, shard in ((part.train[i], src.train[i]), (part.test[i], src.test[i])):
            shown = set(classes_on(ds.train_masks[mine], 11))
            assert shown <= {int(c) + 1 for c in fmnist[1][shard].unique()}
        sets.append(frozenset(classes_on(ds.train_masks[part.train[i]], 11)))
    assert len(set(sets)) > 1  # label skew: clients see different classes
    counts = class_pixel_counts(ds.train_masks, part, 11)
    assert counts.shape == (4, 11) and (counts[:, 0] > 0).all()
    # the global test set comes from the official test split and shows every class
    assert classes_on(ds.test_masks, 11) == list(range(1, 11))
    iid, _ = federated_composites(4, alpha=None, options=opts, min_samples=20, source=fmnist, global_test_canvases=5)
    assert iid.settings["source_partition"]["scheme"] == "iid"
