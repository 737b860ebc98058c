"""Segmentation building blocks: composite canvases, label skew, mIoU, real-dataset loaders, models."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedunet.data import DEBIAN_FASHION_MNIST, DatasetUnavailable, load_dataset
from fedunet.model import ClientModel, ModelSpec, select_state, state_nbytes
from fedunet.segmentation import (
    IGNORE_INDEX,
    CompositeOptions,
    ConfusionMatrix,
    class_pixel_counts,
    classes_on,
    composite,
    confusion_matrix,
    federated_composites,
    iou_per_class,
    load_oxford_pet,
    load_segmentation_dataset,
    load_voc_segmentation,
    make_fmnist_composites,
    mean_iou,
    pixel_accuracy,
    segmentation_scores,
)
from fedunet.segmodel import SEG_BACKBONES, SegClientModel, SegSpec
from fedunet.unet import BOTTLENECK_PREFIX

HAVE_FMNIST = (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists() or (
    DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte"
).exists()
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST is not installed")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models: one intra-op thread is fastest, and far faster on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fmnist():
    """A fixed 3,000-image subset of the real Fashion-MNIST training split, and 500 test images."""
    ds = load_dataset("fashion-mnist", download=False, max_train=3000, max_test=500)
    return ds.train_images, ds.train_labels, ds.test_images, ds.test_labels


def blocks(values, labels):
    """Synthetic 28x28 'garments': image k is uniformly values[k] (fully foreground if > threshold)."""
    images = torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 28, 28).contiguous()
    return images, torch.tensor(labels)


# ---------------------------------------------------------------- composites


@pytest.mark.parametrize("overlap", ["over", "under"])
def test_overlap_rule_later_or_earlier_garment_on_top(overlap):
    # canvas = garment size: every garment covers the whole canvas, so the rule alone decides the mask
    images, labels = blocks([100, 150, 200], [4, 7, 2])
    opts = CompositeOptions(canvas_size=28, garments=(2, 2), overlap=overlap)
    canvas, mask, sources = composite(images, labels, 20, opts, seed=1)
    top = sources[:, 1] if overlap == "over" else sources[:, 0]
    assert torch.equal(mask, (labels[top] + 1).to(torch.uint8).view(-1, 1, 1).expand(-1, 28, 28))
    assert torch.equal(canvas[:, 0], images[top, 0])


def test_only_a_garments_own_pixels_are_pasted():
    images, labels = blocks([0], [3])
    images[0, 0, 5:10, 5:20] = 21  # just above the threshold: foreground
    images[0, 0, 12:14, :] = 20  # at the threshold: not foreground
    canvas, mask, _ = composite(images, labels, 4, CompositeOptions(canvas_size=40, garments=(1, 1), threshold=20), seed=0)
    assert (mask > 0).sum(dim=(1, 2)).tolist() == [5 * 15] * 4
    assert torch.equal(canvas[:, 0] > 20, mask > 0) and mask.max() == 4  # class 3 -> mask 4
    assert torch.equal(canvas[:, 0][mask == 0], torch.zeros_like(canvas[:, 0][mask == 0]))


def test_grid_placement_never_overlaps():
    images, labels = blocks([100, 200], [0, 1])
    kw = dict(canvas_size=64, garments=(4, 4), placement="grid")
    over = composite(images, labels, 10, CompositeOptions(overlap="over", **kw), seed=2)
    under = composite(images, labels, 10, CompositeOptions(overlap="under", **kw), seed=2)
    assert all(torch.equal(a, b) for a, b in zip(over, under))
    assert ((over[1] > 0).sum(dim=(1, 2)) == 4 * 28 * 28).all()  # four full garments, all visible


def test_composite_options_are_checked():
    images, labels = blocks([100], [0])
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


# ---------------------------------------------------------------- metrics


def test_miou_and_pixel_accuracy_against_a_hand_computed_example():
    # 4 classes; class 3 appears in neither prediction nor ground truth; one pixel is ignored (255).
    target = torch.tensor([[0, 0, 0, 1], [1, 2, 2, IGNORE_INDEX]])
    pred = torch.tensor([[0, 0, 1, 1], [2, 2, 0, 3]])  # the prediction at the ignored pixel is not counted
    # valid (truth, pred) pairs: (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) (2,0)  -> 7 pixels, 4 correct
    cm = confusion_matrix(pred, target, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    # IoU = TP / (row sum + column sum - TP):
    #   class 0: 2 / (3 + 3 - 2) = 1/2;  class 1: 1 / (2 + 2 - 1) = 1/3;  class 2: 1 / (2 + 2 - 1) = 1/3
    #   class 3: 0 / 0 -> absent from both -> NaN, left out of the mean
    iou = iou_per_class(cm)
    assert iou[:3].tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 3]) and math.isnan(iou[3])
    # mIoU = (1/2 + 1/3 + 1/3) / 3 = 7/18 (it would be 7/24 if the absent class counted as 0)
    assert mean_iou(cm).item() == pytest.approx(7 / 18)
    assert pixel_accuracy(cm).item() == pytest.approx(4 / 7)
    # a class predicted but absent from the ground truth scores 0 and stays in the mean:
    # predicting 3 at (1, 2) instead of 0 -> class 0: 2 / (3 + 2 - 2) = 2/3, class 3: 0 / (0 + 1 - 0) = 0
    pred2 = pred.clone()
    pred2[1, 2] = 3
    cm2 = confusion_matrix(pred2, target, 4)
    assert iou_per_class(cm2).tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3, 0.0])
    assert mean_iou(cm2).item() == pytest.approx((2 / 3 + 1 / 3 + 1 / 3 + 0) / 4)  # = 1/3
    s = segmentation_scores(cm)
    assert s["miou"] == pytest.approx(7 / 18) and s["pixel_acc"] == pytest.approx(4 / 7) and s["pixels"] == 7


def test_confusion_matrix_accumulates_batches_from_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 8, 8, generator=g)
    target = torch.randint(0, 5, (6, 8, 8), generator=g)
    target[0, 0, :3] = IGNORE_INDEX
    meter = ConfusionMatrix(5)
    for lo in range(0, 6, 4):
        meter.update(logits[lo : lo + 4], target[lo : lo + 4])
    whole = confusion_matrix(logits.argmax(1), target, 5)
    assert torch.equal(meter.matrix, whole) and int(whole.sum()) == 6 * 64 - 3
    # against a plain per-pixel count
    ref = np.zeros((5, 5), dtype=np.int64)
    for t, p in zip(target.flatten().tolist(), logits.argmax(1).flatten().tolist()):
        if t != IGNORE_INDEX:
            ref[t, p] += 1
    assert whole.numpy().tolist() == ref.tolist()
    assert meter.scores()["pixel_acc"] == pytest.approx(np.trace(ref) / ref.sum())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_confusion_matrix_stays_on_the_device():
    meter = ConfusionMatrix(3, device="cuda")
    meter.update(torch.zeros(2, 3, 4, 4, device="cuda"), torch.zeros(2, 4, 4, dtype=torch.long, device="cuda"))
    assert meter.matrix.device.type == "cuda" and int(meter.matrix[0, 0]) == 32


# ---------------------------------------------------------------- real datasets


def test_missing_pet_files_name_the_folder_and_files(tmp_path):
    with pytest.raises(DatasetUnavailable) as e:
        load_oxford_pet(tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "oxford-iiit-pet") in msg
    for name in ("images/<name>.jpg", "annotations/trimaps/<name>.png", "annotations/trainval.txt", "annotations/test.txt"):
        assert name in msg
    assert "download disabled" in msg and "robots.ox.ac.uk" in msg


def test_missing_voc_files_name_the_folder_and_files(tmp_path):
    (tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(DatasetUnavailable) as e:
        load_segmentation_dataset("voc", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "VOCdevkit" / "VOC2012") in msg and "SegmentationClass/<name>.png" in msg
    missing = msg.split("missing: ")[1]
    assert "JPEGImages" not in missing.split(";")[0] and "ImageSets/Segmentation/train.txt" in missing


def write_image(path, size, seed):
    from PIL import Image

    rs = np.random.RandomState(seed)
    Image.fromarray(rs.randint(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def test_oxford_pet_loader_on_a_fake_dataset(tmp_path):
    from PIL import Image

    base = tmp_path / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    splits = {"trainval": ["Abyssinian_1", "beagle_2", "Bengal_3"], "test": ["pug_4", "Persian_5"]}
    species = {"Abyssinian_1": 1, "beagle_2": 2, "Bengal_3": 1, "pug_4": 2, "Persian_5": 1}  # 1 cat, 2 dog
    trimap = np.full((16, 16), 2, dtype=np.uint8)  # background
    trimap[4:12, 4:12] = 3  # border
    trimap[5:11, 5:11] = 1  # pet
    for split, names in splits.items():
        (base / "annotations" / f"{split}.txt").write_text("".join(f"{n} 1 {species[n]} 1\n" for n in names))
        for i, n in enumerate(names):
            write_image(base / "images" / f"{n}.jpg", 16, i)
            Image.fromarray(trimap).save(base / "annotations" / "trimaps" / f"{n}.png")
    ds = load_oxford_pet(tmp_path, size=16)
    assert ds.train_images.shape == (3, 3, 16, 16) and ds.test_images.shape == (2, 3, 16, 16)
    assert ds.train_images.dtype == torch.uint8 and ds.num_classes == 2
    expected = np.zeros((16, 16), dtype=np.uint8)
    expected[4:12, 4:12] = IGNORE_INDEX
    expected[5:11, 5:11] = 1
    assert all((m.numpy() == expected).all() for m in torch.cat([ds.train_masks, ds.test_masks]))
    sp = load_oxford_pet(tmp_path, size=8, classes="species", border="pet", max_train=2)
    assert sp.class_names == ("background", "cat", "dog") and sp.train_images.shape == (2, 3, 8, 8)
    assert sp.train_masks[0].max() == 1 and sp.train_masks[1].max() == 2 and IGNORE_INDEX not in sp.train_masks


def test_voc_loader_on_a_fake_dataset(tmp_path):
    from PIL import Image

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    names = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"]}
    mask = np.zeros((12, 12), dtype=np.uint8)
    mask[2:6, 2:6], mask[6:10, 6:10], mask[0, :] = 15, 12, 255  # person, dog, border
    for split, ids in names.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in ids))
        for i, n in enumerate(ids):
            write_image(voc / "JPEGImages" / f"{n}.jpg", 12, i)
            png = Image.fromarray(mask, mode="P")
            png.putpalette([v for c in range(256) for v in (c, c, c)])
            png.save(voc / "SegmentationClass" / f"{n}.png")
    ds = load_voc_segmentation(tmp_path, size=12)
    assert ds.num_classes == 21 and ds.train_images.shape == (2, 3, 12, 12) and ds.test_masks.shape == (1, 12, 12)
    assert all((m.numpy() == mask).all() for m in ds.train_masks)
    cm = confusion_matrix(ds.test_masks, ds.test_masks, 21)  # borders ignored by the metric
    assert int(cm.sum()) == 12 * 12 - 12 and mean_iou(cm).item() == 1.0


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("arch", SEG_BACKBONES)
@pytest.mark.parametrize("channels, size", [(1, 64), (3, 32)])
def test_segmentation_models_give_per_pixel_scores(arch, channels, size):
    model = SegClientModel(SegSpec(arch, channels, size, num_classes=11, width=0.125, unet_d=32))
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 11, size, size)
    assert model.features(torch.randn(2, channels, size, size)).shape[1] == model.feature_dim


def test_only_the_unet_bottleneck_is_shared_and_it_is_the_classification_one():
    seg = SegClientModel(SegSpec("fcn-vgg11", 1, 64, num_classes=11, width=0.125, unet_d=64))
    shared = select_state(seg, BOTTLENECK_PREFIX)
    assert shared and all(k.startswith("unet.bottleneck.") for k in shared)
    assert not any(k.startswith(("backbone.", "fusion.", "classifier.")) for k in shared)
    everything = seg.state_dict()
    assert {k for k in everything if k.startswith("unet.")} - set(shared)  # the rest of the U-Net stays local
    cls = ClientModel(ModelSpec("vgg11", 1, 28, 10, width=0.125, unet_d=64))
    other = select_state(cls, BOTTLENECK_PREFIX)
    assert {k: v.shape for k, v in shared.items()} == {k: v.shape for k, v in other.items()}  # same bytes per round
    assert sum(t.numel() * t.element_size() for t in shared.values()) == state_nbytes(cls.unet.bottleneck)


def test_fusion_modes_and_plain_model():
    add = SegClientModel(SegSpec("encdec-tiny", 1, 32, 5, width=0.5, unet_d=32, fusion="add"))
    cat = SegClientModel(SegSpec("encdec-tiny", 1, 32, 5, width=0.5, unet_d=32, fusion="concat"))
    plain = SegClientModel(SegSpec("encdec-tiny", 1, 32, 5, width=0.5, unet_d=None))
    k = plain.feature_dim
    assert (add.feature_dim, cat.feature_dim) == (k, 2 * k) and plain.unet is None
    assert add.fusion.project.in_channels == 32 // 16  # the decoder output, d/16 channels
    assert not select_state(plain, BOTTLENECK_PREFIX)
    with pytest.raises(ValueError, match="allowed: add, concat"):
        SegClientModel(SegSpec("encdec-tiny", 1, 32, 5, fusion="sum"))
    with pytest.raises(ValueError, match="allowed: encdec-tiny"):
        SegClientModel(SegSpec("fcn-vit-tiny", 1, 32, 5))


def test_a_few_steps_on_composites_reduce_the_loss():
    torch.manual_seed(0)
    images, labels = blocks([60, 120, 180, 240], [0, 1, 2, 3])
    images[:, :, :, 14:] = 0  # half-width garments, so that there is background to tell apart
    canvas, mask, _ = composite(images, labels, 16, CompositeOptions(canvas_size=32, garments=(1, 2)), seed=0)
    x, y = canvas.float() / 255 - 0.5, mask.long()
    model = SegClientModel(SegSpec("encdec-tiny", 1, 32, num_classes=5, width=0.25, unet_d=32))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = F.cross_entropy(model(x), y, ignore_index=IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
