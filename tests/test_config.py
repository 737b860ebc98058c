import pytest
from helpers import tiny_raw

from fedunet import config
from fedunet.config import ConfigError


def test_defaults_are_the_documented_paper_reading():
    cfg = config.validate({})
    assert cfg["method"] == "fedunet"
    assert cfg["model"]["unet"]["d"] == 128 and cfg["model"]["fusion"] == "add"
    assert cfg["model"]["architectures"] == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert cfg["partition"]["num_clients"] == 10 and cfg["partition"]["alpha"] == 0.5
    assert cfg["optimizer"] == {
        "name": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "schedule": "none",
        "step_rounds": 30,
        "step_gamma": 0.1,
    }
    assert cfg["federated"]["share_buffers"] is True and cfg["training"]["batch_size"] == 64


@pytest.mark.parametrize(
    "raw, fragments",
    [
        ({"modle": {}}, ["(top level): unknown key(s) 'modle'", "allowed keys:", "model"]),
        ({"model": {"fusion": "sum"}}, ["model.fusion: 'sum' is not allowed", "allowed values: add, concat"]),
        ({"model": {"architectures": ["vgg17"]}}, ["model.architectures.0: 'vgg17'", "resnet18", "vgg16"]),
        ({"model": {"architectures": []}}, ["model.architectures"]),
        (
            {"method": "fedsgd"},
            [
                "method: 'fedsgd' is not allowed",
                "fd, fedavg, fedgh, fedkd, fedproto, fedtgp, fedunet, fedunet-unet, fml, lg-fedavg, local",
            ],
        ),
        ({"partition": {"alpha": -0.5}}, ["partition.alpha: -0.5 must be > 0"]),
        ({"federated": {"rounds": "ten"}}, ["federated.rounds: expected integer, got 'ten'"]),
        ({"federated": {"rounds": 0}}, ["federated.rounds: 0 must be >= 1"]),
        ({"model": {"unet": {"d": 100}}}, ["model.unet.d: 100 must be a multiple of 16"]),
        ({"dataset": {"name": "mnist"}}, ["dataset.name: 'mnist'", "cifar10, cifar100, fashion-mnist, synthetic"]),
        ({"runtime": {"device": "tpu"}}, ["runtime.device"]),
        ({"partition": {"num_clients": 100000}}, ["partition.num_clients", "exceeds the 50000 training samples"]),
        ({"method": "fedavg"}, ["model.architectures: method fedavg", "same architecture"]),
        ({"method": "fedunet", "model": {"unet": {"attach": False}}}, ["model.unet.attach"]),
        ([1, 2], ["expected a mapping"]),
    ],
)
def test_errors_name_the_field_and_what_is_allowed(raw, fragments):
    with pytest.raises(ConfigError) as err:
        config.validate(raw)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_all_errors_are_reported_at_once():
    with pytest.raises(ConfigError) as err:
        config.validate({"model": {"fusion": "x"}, "partition": {"alpha": 0}})
    assert len(err.value.problems) == 2


def test_overrides_parse_yaml_values():
    cfg = config.validate(
        config.apply_overrides(
            tiny_raw(), ["federated.rounds=7", "model.architectures=[cnn]", "optimizer.lr=1e-3", "dataset.max_test=null"]
        )
    )
    assert cfg["federated"]["rounds"] == 7 and cfg["model"]["architectures"] == ["cnn"]
    assert cfg["optimizer"]["lr"] == 0.001 and cfg["dataset"]["max_test"] is None


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(ConfigError, match="expected key=value"):
        config.apply_overrides({}, ["federated.rounds"])


def test_override_of_unknown_key_is_caught_by_the_schema():
    with pytest.raises(ConfigError, match="unknown key\\(s\\) 'round'"):
        config.validate(config.apply_overrides({}, ["federated.round=3"]))


def test_scientific_notation_is_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optimizer: {lr: 1e-3, weight_decay: 5e-4}\n")
    cfg = config.load(path)
    assert cfg["optimizer"]["lr"] == 0.001 and cfg["optimizer"]["weight_decay"] == 0.0005


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)


def test_a_newly_registered_architecture_and_method_are_valid_in_a_run_config(monkeypatch):
    from fedunet import methods, models

    for registry in (models.REGISTRY, methods.REGISTRY):  # forget this test's registrations after it
        monkeypatch.setattr(registry, "_members", dict(registry._members))
    raw = {"method": "toy-method", "model": {"architectures": ["toy-net"]}, "methods": {"toy-method": {}}}
    with pytest.raises(ConfigError) as err:
        config.validate(raw)
    assert "method: 'toy-method' is not allowed" in str(err.value) and "'toy-net' is not allowed" in str(err.value)

    @models.register("toy-net")
    def toy_net(in_channels, input_size, width): ...

    @methods.register
    class ToyMethod(methods.get("local")):
        name = "toy-method"

    cfg = config.validate(raw)
    assert cfg["method"] == "toy-method" and cfg["model"]["architectures"] == ["toy-net"]
    assert "toy-method" in config.schema()["properties"]["methods"]["properties"]
