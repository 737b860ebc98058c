"""The clients a run builds from its config: data splits, seeds, what each client holds."""

import pytest
import torch

from fedunet import population
from fedunet.partition import PartitionError
from fedunet.population import load_run_dataset, model_specs, partition_for
from fedunet.runtime import resolve_runtime


def built(cfg):
    return population.build(cfg, resolve_runtime(cfg))


def test_validation_split_is_carved_from_training_data_only(tiny_cfg):
    cfg = tiny_cfg(eval={"validation_fraction": 0.2})
    pop = built(cfg)
    for c, train_idx, test_idx in zip(pop.clients, pop.partition.train, pop.partition.test):
        val, kept = set(c.val_indices.tolist()), set(c.loader.indices.tolist())
        assert val and not val & kept and not val & set(test_idx.tolist())
        assert val | kept == set(train_idx.tolist())
        assert len(val) == round(0.2 * len(train_idx))
    again = built(cfg)
    assert all(torch.equal(a.val_indices, b.val_indices) for a, b in zip(pop.clients, again.clients))
    none = built(tiny_cfg(eval={"validation_fraction": 0.0}))
    assert all(torch.equal(c.loader.indices, t) and len(c.val_indices) == 0 for c, t in zip(none.clients, none.partition.train))


def test_the_same_config_builds_the_same_clients(tiny_cfg):
    a, b = built(tiny_cfg()), built(tiny_cfg())
    assert [c.architecture for c in a.clients] == ["vgg11", "cnn", "vgg11", "cnn"]
    for x, y in zip(a.clients, b.clients):
        assert all(torch.equal(t, y.model.state_dict()[n]) for n, t in x.model.state_dict().items())
        assert torch.equal(x.loader.indices, y.loader.indices) and torch.equal(x.test_indices, y.test_indices)
    assert a.class_counts == b.class_counts and len(a.class_counts) == len(a.clients)
    weights = [c.model.state_dict()["classifier.weight"] for c in a.clients]
    assert not torch.equal(weights[0], weights[2])  # each client from its own seed


def test_model_specs_cycle_the_architectures_and_follow_the_dataset(tiny_cfg):
    cfg = tiny_cfg()
    specs = model_specs(cfg, load_run_dataset(cfg))
    assert [s.architecture for s in specs] == ["vgg11", "cnn", "vgg11", "cnn"]
    assert {(s.in_channels, s.input_size, s.num_classes, s.unet_d) for s in specs} == {(3, 16, 3, 32)}


def test_the_method_decides_whether_a_unet_is_attached(tiny_cfg):
    cfg = tiny_cfg(method="local")  # the same model as fedunet, nothing shared: the fair local baseline
    assert {s.unet_d for s in model_specs(cfg, load_run_dataset(cfg))} == {32}
    cfg = tiny_cfg(method="fedproto")
    assert {s.unet_d for s in model_specs(cfg, load_run_dataset(cfg))} == {None}
    assert {s.feature_width for s in model_specs(cfg, load_run_dataset(cfg))} == {cfg["model"]["feature_width"]}


def test_a_partition_file_made_with_other_settings_is_refused(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    dataset = load_run_dataset(cfg)
    path = tmp_path / "part.bin"
    made = partition_for(cfg, dataset)
    made.save(path, dataset.train_labels)
    cfg["partition"]["file"] = str(path)
    assert partition_for(cfg, dataset).content_hash() == made.content_hash()  # same settings: accepted
    cfg["partition"]["alpha"] = 0.3
    with pytest.raises(PartitionError, match=r"partition.alpha: file has 1.0, config has 0.3"):
        partition_for(cfg, dataset)
