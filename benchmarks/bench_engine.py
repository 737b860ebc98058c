"""The training engine against the reference loop, a bare training loop, and a DataLoader.

Sizes: ``full`` is the quick study's setting (Fashion-MNIST when installed, 4 clients
cycling narrow VGG11/13/16/19, d=64 U-Net, batch 64); ``small`` is a tiny synthetic
setting that runs every check once in CI.
"""

import os

import pytest
import torch
import torch.nn.functional as F
from goals import record_check
from reference import ImageFolderLike, ReferenceFL, transforms_for
from torch.utils.data import DataLoader

from fedunet import config
from fedunet.data import DEBIAN_FASHION_MNIST, eval_batches
from fedunet.federated import Simulation

# the device every benchmark here trains on (pytest benchmarks --bench-device cuda)
DEVICE = os.environ.get("FEDUNET_BENCH_DEVICE", "cpu")


def settings(bench_size: str, **overrides) -> dict:
    if bench_size == "small":
        raw = {
            "dataset": {
                "name": "synthetic",
                "synthetic": {"num_classes": 4, "channels": 1, "size": 16, "train_size": 512, "test_size": 128},
            },
            "partition": {"num_clients": 2, "min_samples": 20},
            "model": {"width": 0.125, "unet": {"d": 32}},
        }
    else:
        dataset = (
            {"name": "fashion-mnist", "max_train": 8000, "max_test": 2000}
            if DEBIAN_FASHION_MNIST.exists()
            else {
                "name": "synthetic",
                "synthetic": {"num_classes": 10, "channels": 1, "size": 28, "train_size": 8000, "test_size": 2000},
            }
        )
        raw = {
            "dataset": dataset,
            "partition": {"num_clients": 4, "min_samples": 50},
            "model": {"width": 0.125, "unet": {"d": 64}},
        }
    raw.update(method="fedunet", seed=0)
    raw.setdefault("training", {}).update(batch_size=64, crop_padding=2)
    raw["federated"] = {"rounds": 1000}  # rounds are driven by hand; never the last, so no evaluation inside
    raw["eval"] = {"every": 1000}
    raw["runtime"] = {"device": os.environ.get("FEDUNET_BENCH_DEVICE", DEVICE), "progress": False, "checkpoint_every": 0}
    if os.environ.get("FEDUNET_BENCH_THREADS"):  # e.g. 1 on a shared CI machine (scripts/device-check.sh --dry)
        raw["runtime"]["threads"] = int(os.environ["FEDUNET_BENCH_THREADS"])
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return config.validate(raw)


def simulation(tmp_path, cfg) -> Simulation:
    sim = Simulation(cfg, tmp_path)
    sim.build()
    return sim


@torch.inference_mode()
def global_accuracy(sim: Simulation, models) -> float:
    accs = []
    for model in models:
        model.eval()
        correct = 0
        for x, y in eval_batches(sim.data.test_images, sim.data.test_labels, None, 500, sim.normalizer):
            correct += int((model(x).argmax(1) == y).sum())
        accs.append(correct / len(sim.data.test_labels))
    return 100 * sum(accs) / len(accs)


@pytest.mark.parametrize("impl", ["ours", "reference"])
def test_engine_round(benchmark, bench_size, tmp_path, impl):
    """One federated round (local training, payloads, aggregation; no evaluation)."""
    sim = simulation(tmp_path, settings(bench_size))
    benchmark.group = "engine-round"
    benchmark.extra_info.update(
        case=f"{sim.data.name}-{len(sim.clients)}clients", impl=impl, samples=sum(c.num_train for c in sim.clients)
    )
    if impl == "ours":
        rounds = iter(range(1, 1000))
        benchmark.pedantic(lambda: sim.run_round(next(rounds)), rounds=3 if bench_size == "full" else 1, warmup_rounds=0)
    else:
        ref = ReferenceFL(sim)
        benchmark.pedantic(ref.round, rounds=3 if bench_size == "full" else 1, warmup_rounds=0)


def test_engine_and_reference_reach_the_same_accuracy(bench_size, tmp_path):
    """Same clients, models, partition and settings, each loop with its own random streams
    (order, crops); the mean over three seeds at the full size, so that chance moves it less."""
    rounds = 5 if bench_size == "full" else 2
    seeds = (0, 1, 2) if bench_size == "full" else (0,)
    ours, theirs = [], []
    for seed in seeds:
        sim = simulation(tmp_path / f"seed{seed}", settings(bench_size, seed=seed))
        ref = ReferenceFL(sim)
        for r in range(1, rounds + 1):
            sim.run_round(r)
            ref.round()
        ours.append(global_accuracy(sim, [c.model for c in sim.clients]))
        theirs.append(global_accuracy(sim, ref.models()))
    mean_ours, mean_theirs = sum(ours) / len(ours), sum(theirs) / len(theirs)
    print(f"\nglobal accuracy after {rounds} rounds, seeds {seeds}: engine {ours}, reference {theirs}")
    # A goal, reported met or missed: a short run differs by chance as well; the same-batch
    # test below is the exact check that both loops do the same work.
    gap = abs(mean_ours - mean_theirs)
    record_check(
        "final accuracy within 0.5 points of the reference loop (points apart)",
        f"{sim.data.name}-{rounds}rounds-{len(seeds)}seeds: engine {mean_ours:.2f}%, reference {mean_theirs:.2f}% "
        f"(per seed {', '.join(f'{a:.2f}/{b:.2f}' for a, b in zip(ours, theirs))})",
        gap,
        0.5,
        gap <= 0.5,
    )
    assert min(ours) > 0 and min(theirs) > 0


def test_engine_and_reference_aggregate_the_same_bottleneck(bench_size, tmp_path):
    """Fed the same batches without augmentation, both loops must end a round with the same
    global bottleneck: the engine's speed cannot come from doing less work.

    Equal up to float rounding (the two normalize pixels with differently ordered arithmetic):
    within 1e-3 of each tensor's scale (1e-6 at least), where one skipped or different batch moves the
    BatchNorm statistics by percents."""
    cfg = settings(
        bench_size,
        training={"crop_padding": 0, "flip": False},
        runtime={"device": DEVICE, "progress": False, "checkpoint_every": 0, "channels_last": False, "bf16": False},
        **({"dataset": {"max_train": 2000}} if bench_size == "full" else {}),
    )
    sim = simulation(tmp_path, cfg)
    for c in sim.clients:
        c.loader.augmentation = None
    orders = {}
    for c in sim.clients:  # the engine's batch order: one permutation per epoch from the client's generator
        g = torch.Generator(device=c.generator.device)  # on CUDA the client's generator is a CUDA one
        g.set_state(c.generator.get_state())
        idx = c.loader.indices
        orders[c.index] = [idx[torch.randperm(len(idx), generator=g, device=idx.device)].tolist()]
    ref = ReferenceFL(sim, augment=False, orders=orders)
    sim.run_round(1)
    ref.round()
    for name, ours in sim.method.global_state.items():
        theirs = ref.global_state[name]
        scale = float(theirs.double().abs().max()) or 1.0
        torch.testing.assert_close(
            ours.double(), theirs.double(), rtol=0, atol=max(1e-3 * scale, 1e-6), msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.parametrize("impl", ["ours", "bare"])
def test_engine_throughput(benchmark, bench_size, tmp_path, impl):
    """Local training over one client's samples: the engine's loader, augmentation and step
    against the barest loop over pre-normalized tensors (same model, same samples)."""
    sim = simulation(tmp_path, settings(bench_size))
    client = sim.clients[2 % len(sim.clients)]
    benchmark.group = "engine-throughput"
    benchmark.extra_info.update(case=f"{client.architecture}-{sim.data.name}", impl=impl, samples=client.num_train)
    if impl == "ours":
        benchmark.pedantic(lambda: client.train(1, sim.method.loss), rounds=3 if bench_size == "full" else 1, warmup_rounds=1)
        return
    model, opt = client.model, client.optimizer
    x_all = sim.normalizer(sim.data.train_images[client.loader.indices])
    y_all = sim.data.train_labels[client.loader.indices]
    bs = sim.cfg["training"]["batch_size"]

    def bare_epoch():  # the same precision as the engine (bf16 autocast on CUDA)
        model.train()
        for i in range(0, len(y_all) - 1, bs):
            with client.autocast():
                loss = F.cross_entropy(model(x_all[i : i + bs]), y_all[i : i + bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if x_all.is_cuda:  # the engine's epoch ends with one sync (its loss read once)
            torch.cuda.synchronize()

    benchmark.pedantic(bare_epoch, rounds=3 if bench_size == "full" else 1, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["ours", "dataloader"])
def test_data_path(benchmark, bench_size, tmp_path, impl):
    """One epoch over every client's shard: batches of the same shape, augmented and normalized."""
    sim = simulation(tmp_path, settings(bench_size))
    benchmark.group = "data-path"
    n = sum(c.num_train for c in sim.clients)
    benchmark.extra_info.update(case=f"{sim.data.name}-{n}samples", impl=impl, samples=n)
    if impl == "ours":

        def epoch():
            last = None
            for c in sim.clients:
                for batch in c.loader:
                    last = batch[0]
            if last.is_cuda:
                torch.cuda.synchronize()
            return last
    else:
        dataset = ImageFolderLike(sim.data.train_images, sim.data.train_labels, transforms_for(sim, augment=True))
        loaders = [
            DataLoader(torch.utils.data.Subset(dataset, c.loader.indices.tolist()), batch_size=64, shuffle=True)
            for c in sim.clients
        ]

        def epoch():
            last = None
            for loader in loaders:
                for batch in loader:
                    last = batch[0]
            return last

    x = benchmark.pedantic(epoch, rounds=3 if bench_size == "full" else 1, warmup_rounds=1 if bench_size == "full" else 0)
    assert x.dtype == torch.float32 and x.shape[1:] == sim.data.train_images.shape[1:]
