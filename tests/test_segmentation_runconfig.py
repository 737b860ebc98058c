"""A run config's task (fedunet/segmentation/runconfig.py): a segmentation dataset accepts only what
exists per pixel, each refusal names the field and the allowed values before anything is loaded, and a
classification config is filled in exactly as before."""

import pytest
from helpers import TINY, run_fedunet, tiny_raw

from fedunet import config
from fedunet.exit_codes import EXIT_CONFIG, EXIT_DATA
from fedunet.segmentation.runconfig import SEGMENTATION_METHODS

SYNTHETIC_RGB = {"name": "synthetic-composite", "synthetic": {"channels": 3, "size": 8}, "composite": {"canvas_size": 16}}
SEG = {
    "name": "fmnist-composite",
    "max_test": None,
    "composite": {"canvas_size": 32, "garments": [1, 2]},
}


def seg_raw(**sections):
    return tiny_raw(dataset=SEG, model={"architectures": ["encdec-tiny"], "width": 0.125, "unet": {"d": 32}}, **sections)


@pytest.mark.parametrize(
    "sections, fragments",
    [
        ({"method": "fd"}, ["method: 'fd' has no per-pixel version", f"allowed values: {', '.join(SEGMENTATION_METHODS)}"]),
        ({"method": "fedproto"}, ["method: 'fedproto'", "allowed values: fedunet, fedunet-unet, local, fedavg"]),
        ({"model": {"architectures": ["vgg11", "encdec-tiny"]}}, ["model.architectures: vgg11 not allowed"]),
        ({"model": {"architectures": ["encdec-tiny"], "fusion_source": "bottleneck"}}, ["model.fusion_source", "value: decoder"]),
        ({"partition": {"scheme": "htfl"}}, ["partition.scheme: 'htfl'", "dirichlet, iid"]),
        ({"dataset": {**SEG, "max_test": 500}}, ["dataset.max_test", "dataset.composite.test_canvases"]),
        ({"dataset": {**SEG, "composite": {"canvas_size": 20}}}, ["dataset.composite: canvas_size 20 is smaller than a source"]),
        (
            {"dataset": {**SEG, "composite": {"placement": "grid", "canvas_size": 32, "garments": [2, 3]}}},
            ["composite: garments"],
        ),
        ({"dataset": {**SEG, "segmentation": {"size": 64}}}, ["dataset.segmentation: not used by fmnist-composite"]),
        (
            {"dataset": SYNTHETIC_RGB},
            ["dataset.synthetic.channels", "allowed value: 1"],
        ),
    ],
)
def test_segmentation_config_errors_name_the_field_and_what_is_allowed(sections, fragments):
    raw = seg_raw()
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    with pytest.raises(config.ConfigError) as err:
        config.validate(raw)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_segmentation_backbones_and_options_need_a_segmentation_dataset():
    with pytest.raises(config.ConfigError, match="model.architectures: encdec-tiny predict per pixel"):
        config.validate(tiny_raw(model={"architectures": ["encdec-tiny"]}))
    with pytest.raises(config.ConfigError, match="dataset.composite: only for segmentation datasets"):
        config.validate(tiny_raw(dataset={**TINY["dataset"], "composite": {}}))


def test_defaults_follow_the_task_and_leave_classification_configs_as_they_were():
    seg = config.validate({"dataset": {"name": "fmnist-composite", "max_test": None}})
    assert seg["model"]["architectures"] == ["encdec-tiny"] and seg["dataset"]["composite"]["canvas_size"] == 64
    assert "segmentation" not in seg["dataset"]
    pet = config.validate({"dataset": {"name": "oxford-pet"}})
    assert pet["dataset"]["segmentation"] == {"size": 64, "classes": "pet", "border": "ignore"}
    assert "composite" not in pet["dataset"]
    cls = config.validate(tiny_raw())
    assert "composite" not in cls["dataset"] and "segmentation" not in cls["dataset"]


def test_cli_refuses_a_bad_segmentation_config_and_names_the_missing_real_dataset(tmp_path):
    import yaml

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(seg_raw(method="fedgh")))
    r = run_fedunet("train", "--config", str(bad), "--out", str(tmp_path / "out"))
    assert r.returncode == EXIT_CONFIG and "method: 'fedgh'" in r.stderr and "Traceback" not in r.stderr
    pet = tmp_path / "pet.yaml"
    raw = tiny_raw(dataset={"name": "oxford-pet", "root": str(tmp_path / "nothing"), "download": False})
    raw["model"]["architectures"] = ["encdec-tiny"]
    pet.write_text(yaml.safe_dump(raw))
    r = run_fedunet("train", "--config", str(pet), "--out", str(tmp_path / "out"))
    assert r.returncode == EXIT_DATA and "oxford-pet is not available" in r.stderr and "oxford-iiit-pet" in r.stderr
