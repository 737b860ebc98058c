"""On-device batches (fedunet/batches.py): batched crop and flip, one-gather augmentation, the
client loader's order and batches, normalization."""

import pytest
import torch

from fedunet.batches import (
    Augmentation,
    ClientLoader,
    MaskLoader,
    Normalizer,
    gather_augmented,
    pad_images,
    random_crop,
    random_flip,
)
from fedunet.data import make_synthetic


def test_random_crop_matches_per_sample_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (6, 2, 5, 7), dtype=torch.uint8)
    out = random_crop(x, 2, g)
    g2 = torch.Generator().manual_seed(0)
    dy = torch.randint(0, 5, (6, 1), generator=g2)
    dx = torch.randint(0, 5, (6, 1), generator=g2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        expected = padded[i, :, dy[i, 0] : dy[i, 0] + 5, dx[i, 0] : dx[i, 0] + 7]
        assert torch.equal(out[i], expected)


def test_random_flip_flips_about_half():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(1000 * 4, dtype=torch.float32).view(1000, 1, 1, 4)
    out = random_flip(x, g)
    flipped = (out[:, 0, 0, 0] == x[:, 0, 0, 3]).float().mean()
    assert 0.4 < flipped < 0.6
    assert torch.equal(out.sort(dim=3).values, x)


def test_client_loader_visits_each_index_once_per_epoch_in_seeded_order():
    ds = make_synthetic(train_size=100, test_size=10, size=8)
    idx = torch.arange(3, 90)
    norm = Normalizer(*ds.channel_stats(), torch.device("cpu"))

    def labels_seen(seed):
        loader = ClientLoader(
            ds.train_images, torch.arange(100), idx, 16, torch.Generator().manual_seed(seed), norm, Augmentation()
        )
        return torch.cat([y for _, y in loader])

    seen = labels_seen(1)
    assert sorted(seen.tolist()) == idx.tolist()
    assert torch.equal(seen, labels_seen(1)) and not torch.equal(seen, labels_seen(2))


def test_loader_skips_a_trailing_single_sample_batch():
    ds = make_synthetic(train_size=40, test_size=4, size=8)
    norm = Normalizer(*ds.channel_stats(), torch.device("cpu"))
    loader = ClientLoader(ds.train_images, ds.train_labels, torch.arange(33), 16, torch.Generator(), norm, None)
    assert [len(y) for _, y in loader] == [16, 16] and len(loader) == 2


def test_normalizer_standardizes_and_can_be_channels_last():
    ds = make_synthetic(train_size=200, test_size=4, size=8)
    mean, std = ds.channel_stats()
    norm = Normalizer(mean, std, torch.device("cpu"), channels_last=True)
    x = norm(ds.train_images)
    assert x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)


@pytest.mark.parametrize("padding, flip", [(2, True), (4, False), (0, True), (0, False)])
def test_one_gather_equals_crop_then_flip_with_the_same_draws(padding, flip):
    images = torch.randint(0, 255, (50, 3, 7, 9), dtype=torch.uint8)
    idx = torch.tensor([4, 0, 49, 4, 17, 23])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    expected = random_crop(images[idx], padding, g1)
    if flip:
        expected = random_flip(expected, g1)
    got = gather_augmented(pad_images(images, padding), idx, padding, flip, g2)
    assert torch.equal(got, expected)
    assert torch.equal(g1.get_state(), g2.get_state())  # same random stream consumed


@pytest.mark.parametrize("channels_last", [False, True])
def test_masks_are_cropped_and_flipped_with_their_canvases(channels_last):
    """Each pixel's class is written in its canvas (10 * (class + 1)): after augmentation every mask
    pixel still names the class of its canvas pixel, and padding is ignored, never background."""
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 4, (40, 8, 8), generator=g, dtype=torch.uint8)
    images = (10 * (masks.long() + 1)).to(torch.uint8).unsqueeze(1)
    identity = Normalizer(torch.zeros(1), torch.full((1,), 1 / 255), torch.device("cpu"), channels_last)
    loader = MaskLoader(images, masks, torch.arange(40), 16, torch.Generator().manual_seed(1), identity,
                        Augmentation(crop_padding=2, flip=True), ignore_index=255)  # fmt: skip
    batches = list(loader)
    x = torch.cat([b[0] for b in batches])[:, 0]
    y = torch.cat([b[1] for b in batches])
    assert y.dtype == torch.int64 and y.shape == (40, 8, 8)
    padded = y == 255
    assert padded.any() and torch.equal(x[padded], torch.zeros_like(x[padded]))  # zero-padded canvas, ignored mask
    assert torch.equal(x[~padded], 10.0 * (y[~padded] + 1))
    # the memory format the runtime asks for, strides included (one channel is contiguous in both)
    assert batches[0][0].stride()[1] == (1 if channels_last else 8 * 8)
