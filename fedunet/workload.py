"""The work of one run, counted as the engine does it: samples trained and evaluated per client and round.

For every client of a run config: the samples it trains on per round (its share minus the
validation split, x local epochs x participation; the method's extra models train on the same
batches; the prototype methods add an eval-mode pass after training), and the samples each
evaluated round reads (the personalized split, the validation split, the personalized split three
times again for the diagnostics of a model with a U-Net (twice for segmentation), and the whole test
set for the global protocol).
Sample counts are the expected ones (equal shares of the dataset), or a finished run's own.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from fedunet import config as run_config
from fedunet import costs
from fedunet.methods.base import participants
from fedunet.metrics import scheduled
from fedunet.model import ModelSpec
from fedunet.population import model_specs

TEST_SIZES = {"cifar10": 10000, "cifar100": 10000, "fashion-mnist": 10000}
PROTOTYPE_METHODS = ("fedproto", "fedgh", "fedtgp")


class _Geometry:
    """What ``setup.model_specs`` reads from a dataset, without loading one."""

    def __init__(self, cfg: dict):
        self.in_channels, self.input_size, self.num_classes = costs.geometry(cfg)


def dataset_sizes(cfg: dict) -> tuple[int, int]:
    """(samples the clients partition, samples of the global test set) of a run config; for
    segmentation, canvases (composites: each source image pasted ``uses_per_image`` times)."""
    ds = cfg["dataset"]
    if ds["name"] in SEGMENTATION_TEST_SIZES:
        return _segmentation_sizes(cfg)
    if ds["name"] == "synthetic":
        train, test = ds["synthetic"]["train_size"], ds["synthetic"]["test_size"]
    else:
        train, test = run_config.KNOWN_TRAIN_SIZES[ds["name"]], TEST_SIZES[ds["name"]]
    if ds["max_train"] is not None:
        train = min(train, ds["max_train"])
    if ds["max_test"] is not None:
        test = min(test, ds["max_test"])
    if cfg["partition"]["scheme"] == "htfl":  # the splits pooled, then partitioned
        train += test
    return train, test


# global test images of the real segmentation datasets (composites: dataset.composite.test_canvases)
SEGMENTATION_TEST_SIZES = {"fmnist-composite": None, "synthetic-composite": None, "oxford-pet": 3669, "voc": 1449}


def _segmentation_sizes(cfg: dict) -> tuple[int, int]:
    from fedunet.segmentation.runconfig import source_train_size

    ds = cfg["dataset"]
    train = source_train_size(cfg) if ds["max_train"] is None else min(source_train_size(cfg), ds["max_train"])
    if ds["name"] not in ("fmnist-composite", "synthetic-composite"):
        test = SEGMENTATION_TEST_SIZES[ds["name"]]
        return train, test if ds["max_test"] is None else min(test, ds["max_test"])
    c = ds["composite"]
    return round(c["uses_per_image"] * train / (sum(c["garments"]) / 2)), c["test_canvases"]


@dataclass
class ClientWork:
    """One client's samples per round (training) and per evaluated round (each pass)."""

    spec: ModelSpec
    train: float  # training samples per round (expected, participation included)
    aux: list[ModelSpec] = field(default_factory=list)  # extra models trained on the same batches
    after_pass: float = 0.0  # eval-mode forward samples per round after training (prototypes)
    eval: float = 0.0  # forward samples per evaluated round (every pass)


@dataclass
class RunWork:
    name: str
    rounds: int
    eval_rounds: int
    clients: list[ClientWork]
    cfg: dict

    def train_samples(self) -> float:
        return self.rounds * sum(c.train for c in self.clients)

    def eval_samples(self) -> float:
        return self.eval_rounds * sum(c.eval for c in self.clients) + self.rounds * sum(c.after_pass for c in self.clients)


def _aux_specs(cfg: dict, spec: ModelSpec, first_arch: str) -> list[ModelSpec]:
    method = cfg["method"]
    hp = cfg.get("methods", {}).get(method, {})
    option = {"fml": "meme", "fedkd": "mentee"}.get(method)
    if option is None:
        return []
    arch = hp.get(option, "fedavg-cnn")
    arch = first_arch if arch == "client0" else arch
    return [ModelSpec(arch, spec.in_channels, spec.input_size, spec.num_classes, width=spec.width, unet_d=None)]


def run_work(cfg: dict, name: str = "", clients: list[dict] | None = None) -> RunWork:
    """The work of one run config (validated, defaults filled in).

    ``clients`` (optional, e.g. from a finished run's summary) gives each client's real
    ``n_train`` (after the validation split) and ``n_test``; else equal shares are assumed.
    """
    specs = model_specs(cfg, _Geometry(cfg))
    k = len(specs)
    n, n_global = dataset_sizes(cfg)
    test_fraction = cfg["partition"]["test_fraction"]
    val_fraction = cfg["eval"].get("validation_fraction", 0.0)
    fed, ev = cfg["federated"], cfg["eval"]
    participation = 1.0 if fed["participation"] >= 1 else participants(fed["participation"], k) / k
    rounds = fed["rounds"]
    evaluated = [r for r in range(1, rounds + 1) if scheduled(r, ev["every"], rounds)]
    eval_rounds = len(evaluated)
    attach = specs[0].unet_d is not None
    diagnostics = ev.get("diagnostics", False) and attach
    # the share of evaluated rounds that run the diagnostics (eval.diagnostics_every, and the last)
    diagnosed = sum(scheduled(r, ev.get("diagnostics_every", 1), rounds) for r in evaluated) / eval_rounds
    # classification: each path alone and the bottleneck ablated; segmentation: each path alone
    diagnostic_passes = 2 if cfg["dataset"]["name"] in SEGMENTATION_TEST_SIZES else 3
    hp = cfg.get("methods", {}).get(cfg["method"], {})
    prototypes_after = cfg["method"] in PROTOTYPE_METHODS and hp.get("prototypes") != "during"
    work = []
    for i, spec in enumerate(specs):
        if clients is not None:  # n_train as summaries record it: after the validation split
            n_train, n_test = clients[i]["n_train"], clients[i]["n_test"]
            n_val = clients[i].get("n_val", round(n_train * val_fraction / (1 - val_fraction)))
        else:
            share = n / k
            n_test = round(share * test_fraction)
            n_val = round((share - n_test) * val_fraction)
            n_train = share - n_test - n_val
        batches_dropped = 1 if n_train % cfg["training"]["batch_size"] == 1 else 0  # a last batch of one is skipped
        trained = (n_train - batches_dropped) * fed["local_epochs"]
        per_eval = n_test + n_val + (diagnostic_passes * n_test * diagnosed if diagnostics else 0) + (n_global if ev["global"] else 0)
        work.append(
            ClientWork(
                spec=spec,
                train=trained * participation,
                aux=_aux_specs(cfg, spec, specs[0].architecture),
                after_pass=n_train * participation if prototypes_after else 0.0,
                eval=per_eval,
            )
        )
    return RunWork(name or cfg["name"], rounds, eval_rounds, work, cfg)


def run_work_from_summary(summary: dict) -> RunWork:
    """The work of a finished run, from its summary.json: its config as it ran (evaluation passes
    the engine did not have yet count as off) and its clients' real sample counts."""
    raw = copy.deepcopy(summary["config"])
    raw.setdefault("eval", {}).setdefault("validation_fraction", 0.0)
    raw["eval"].setdefault("diagnostics", False)
    return run_work(run_config.validate(raw), summary["name"], summary["clients"])


def finished_runs(directory: str | Path) -> list[tuple[dict, RunWork]]:
    """(summary, work) of every finished run below ``directory`` (a study's results folder)."""
    out = []
    for path in sorted(Path(directory).rglob("summary.json")):
        summary = json.loads(path.read_text())
        if summary.get("status") == "complete" and "timing" in summary:
            out.append((summary, run_work_from_summary(summary)))
    return out
