"""Oxford-IIIT Pet and PASCAL VOC loaders (fedunet/segmentation/pet_voc.py), on fake datasets in
torchvision's layouts."""

import numpy as np
import pytest
import torch

from fedunet.data import DatasetUnavailable
from fedunet.segmentation.dataset import IGNORE_INDEX
from fedunet.segmentation.metrics import confusion_matrix, mean_iou
from fedunet.segmentation.pet_voc import load_oxford_pet, load_voc_segmentation


def test_missing_pet_files_name_the_folder_and_files(tmp_path):
    with pytest.raises(DatasetUnavailable) as e:
        load_oxford_pet(tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "oxford-iiit-pet") in msg
    for name in ("images/<name>.jpg", "annotations/trimaps/<name>.png", "annotations/trainval.txt", "annotations/test.txt"):
        assert name in msg
    assert "download disabled" in msg and "robots.ox.ac.uk" in msg


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
