"""Small synthetic configurations shared by the tests (a module, so any test folder can import it)."""

import copy

TINY = {
    "name": "tiny",
    "seed": 0,
    "method": "fedunet",
    "dataset": {
        "name": "synthetic",
        "synthetic": {"num_classes": 3, "channels": 3, "size": 16, "train_size": 240, "test_size": 60},
    },
    "partition": {"num_clients": 4, "alpha": 1.0, "min_samples": 20},
    "model": {"architectures": ["vgg11", "cnn"], "width": 0.125, "unet": {"d": 32}},
    "federated": {"rounds": 2},
    "training": {"batch_size": 16},
    "eval": {"batch_size": 64},
    "runtime": {"device": "cpu", "progress": False, "threads": 1},
}


def tiny_raw(**sections) -> dict:
    """The tiny config as a raw mapping, with sections merged in (e.g. federated={"rounds": 4})."""
    raw = copy.deepcopy(TINY)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw
