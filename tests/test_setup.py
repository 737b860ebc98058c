import pytest
import torch

from fedunet.partition import PartitionError
from fedunet.setup import RunError, derive_seed, load_run_dataset, model_specs, partition_for, resolve_runtime


def test_derived_seeds_are_stable():
    assert derive_seed(0, "model", 1) == derive_seed(0, "model", 1) != derive_seed(0, "model", 2)
    assert derive_seed(0, "model", 1) == 535_332_118_539_220_824  # same on every machine (SHA-256)


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_requested_without_cuda_names_the_field(tiny_cfg):
    cfg = tiny_cfg(runtime={"device": "cuda", "threads": 1})
    with pytest.raises(RunError, match=r"runtime.device: 'cuda' requested but CUDA is not available"):
        resolve_runtime(cfg)
