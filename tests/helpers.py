"""What several test files share (a module, so any test folder can import it): small synthetic
configurations, and the Snakemake workflow run from a scratch directory."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_FMNIST_PRESENT = any((DEBIAN_FMNIST / f).exists() for f in ("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"))
SNAKEFILE = REPO / "workflow" / "Snakefile"  # where the Snakemake workflow catalog expects it

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


# A tiny segmentation run: composites of 8 px synthetic grayscale images on 16 px canvases, 3 clients.
SEG_TINY = {
    **TINY,
    "name": "seg-tiny",
    "dataset": {
        "name": "synthetic-composite",
        "synthetic": {"num_classes": 3, "channels": 1, "size": 8, "train_size": 360, "test_size": 90},
        "composite": {"canvas_size": 16, "garments": [1, 2], "test_canvases": 40},
    },
    "partition": {"num_clients": 3, "alpha": 1.0, "min_samples": 20},
    "model": {"architectures": ["encdec-tiny", "fcn-cnn"], "width": 0.25, "unet": {"d": 32}},
    "federated": {"rounds": 2, "local_epochs": 2},
    "optimizer": {"lr": 0.05},
}


def seg_tiny_raw(**sections) -> dict:
    """The tiny segmentation config as a raw mapping, with sections merged in."""
    raw = copy.deepcopy(SEG_TINY)
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return raw


def tiny_raw(**sections) -> dict:
    """The tiny config as a raw mapping, with sections merged in (e.g. federated={"rounds": 4})."""
    raw = copy.deepcopy(TINY)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def run_fedunet(*args: str, cwd: Path | None = REPO, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m fedunet ARGS`` as users call it, by the interpreter running the tests (output captured)."""
    return subprocess.run([sys.executable, "-m", "fedunet", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models: one intra-op thread is fastest, and far faster on a loaded machine.  A module
    that imports this fixture runs all its tests with one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def wrap_client_train(sim, index: int, wrapper):
    """Make client ``index`` of a built ``Simulation`` train through ``wrapper(train, epochs, loss_fn)``,
    ``train`` being its own training (a fault injected into one client); returns the client."""
    client = sim.clients[index]
    train = client.train
    client.train = lambda epochs, loss_fn: wrapper(train, epochs, loss_fn)
    return client


def garment_blocks(values, labels):
    """Synthetic 28x28 'garments' for composites: image k is uniformly values[k] (fully foreground
    if above the threshold); returns (uint8 images (N, 1, 28, 28), labels)."""
    import torch

    images = torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 28, 28).contiguous()
    return images, torch.tensor(labels)


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The workflow run in ``workdir`` by the interpreter running the tests."""
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir), *args]


def write_study(workdir: Path, name: str = "smoke.yaml", edit=None) -> Path:
    """A copy of ``config/<name>`` in ``workdir``, changed by ``edit(cfg)`` if given."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    if edit:
        edit(cfg)
    path = workdir / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# every table the smoke study makes (config/smoke.yaml)
SMOKE_TABLES = [
    f"{name}.{ext}"
    for name in ("accuracy", "rounds", "communication", "compute", "paper_vs_ours", "comparisons", "variants", "readings", "methods", "progress")
    for ext in ("csv", "md")
] + [
    "runs.csv",
    "curves.csv",
    "per_architecture.csv",
    "provenance.json",
]
