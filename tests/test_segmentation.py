"""The segmentation package as a whole (fedunet/segmentation/): datasets by name, and what every
segmentation dataset shares with the classification ones (fedunet/segmentation/dataset.py)."""

import pytest
import torch

from fedunet.data import DatasetUnavailable
from fedunet.segmentation import SegmentationDataset, classes_on, load_segmentation_dataset


def test_missing_voc_files_name_the_folder_and_files(tmp_path):
    (tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(DatasetUnavailable) as e:
        load_segmentation_dataset("voc", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "VOCdevkit" / "VOC2012") in msg and "SegmentationClass/<name>.png" in msg
    missing = msg.split("missing: ")[1]
    assert "JPEGImages" not in missing.split(";")[0] and "ImageSets/Segmentation/train.txt" in missing


def test_unknown_segmentation_dataset_lists_allowed():
    with pytest.raises(ValueError, match="allowed: fmnist-composite, oxford-pet, voc"):
        load_segmentation_dataset("cityscapes")


def test_a_segmentation_dataset_moves_every_tensor_and_keeps_the_rest():
    masks = torch.tensor([[[0, 3], [255, 1]]], dtype=torch.uint8)
    ds = SegmentationDataset("x", torch.zeros(1, 3, 2, 2, dtype=torch.uint8), masks, torch.zeros(2, 3, 2, 2), masks, 4, ("a",))
    moved = ds.to("meta")
    assert all(getattr(moved, n).device.type == "meta" for n in ("train_images", "train_masks", "test_images", "test_masks"))
    assert (moved.name, moved.num_classes, moved.class_names, moved.in_channels, moved.input_size) == ("x", 4, ("a",), 3, 2)
    assert ds.to("cpu").content_hash() == ds.content_hash()
    assert classes_on(masks, 4) == [1, 3]  # background and ignored pixels left out
