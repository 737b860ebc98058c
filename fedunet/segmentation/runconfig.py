"""What a run config means for the task: a segmentation dataset makes a segmentation run, which
accepts only the methods, backbones and settings that exist per pixel.

Checked by :func:`fedunet.config.validate` with every other rule between fields, before anything is
loaded or trained; every problem names the field and what is allowed.  The defaults that follow the
task (segmentation backbones, the dataset's options section) are set before the schema's own
(:func:`prefill`), so that a classification config is filled in exactly as before.
"""

from __future__ import annotations

from fedunet.segmodel import SEG_BACKBONES

COMPOSITE_DATASETS = ("fmnist-composite", "synthetic-composite")  # canvases made by fedunet.segmentation.composites
REAL_DATASETS = ("oxford-pet", "voc")  # torchvision's layouts, on the user's disk
SEGMENTATION_DATASETS = COMPOSITE_DATASETS + REAL_DATASETS
# Methods whose exchange exists per pixel: they share model tensors by name (or nothing). The ones
# that exchange class-level vectors (logits, prototypes, a linear head) have no per-pixel version yet.
SEGMENTATION_METHODS = ("fedunet", "fedunet-unet", "local", "fedavg")
DEFAULT_ARCHITECTURES = ("encdec-tiny",)
# images the clients partition (the source images of composites), for partition.min_samples
SOURCE_TRAIN_SIZES = {"fmnist-composite": 60000, "oxford-pet": 3680, "voc": 1464}
SOURCE_SIZE = {"fmnist-composite": 28}  # side of a source image (synthetic-composite: dataset.synthetic.size)


def task(cfg: dict) -> str:
    """``segmentation`` or ``classification``, by the dataset a (raw or validated) config names."""
    dataset = cfg.get("dataset")
    name = dataset.get("name") if isinstance(dataset, dict) else None
    return "segmentation" if name in SEGMENTATION_DATASETS else "classification"


def options_section(name: str) -> str:
    """The dataset section holding a segmentation dataset's options."""
    return "composite" if name in COMPOSITE_DATASETS else "segmentation"


def prefill(raw: dict) -> None:
    """The defaults that follow the task, set in a raw config before the schema's: segmentation
    backbones (``model.architectures``) and the dataset's options section, filled by the schema."""
    if task(raw) != "segmentation":
        return
    model = raw.setdefault("model", {})
    if isinstance(model, dict):
        model.setdefault("architectures", list(DEFAULT_ARCHITECTURES))
    raw["dataset"].setdefault(options_section(raw["dataset"]["name"]), {})


def source_train_size(cfg: dict) -> int:
    """Images the clients' partition splits (before ``dataset.max_train``)."""
    ds = cfg["dataset"]
    if ds["name"] in ("synthetic", "synthetic-composite"):
        return ds["synthetic"]["train_size"]
    return SOURCE_TRAIN_SIZES[ds["name"]]


def problems(cfg: dict) -> list[str]:
    """What a validated config (defaults filled in) asks that its task cannot do."""
    ds, model = cfg["dataset"], cfg["model"]
    name = ds["name"]
    if task(cfg) == "classification":
        out = [f"dataset.{key}: only for segmentation datasets ({', '.join(SEGMENTATION_DATASETS)}); dataset.name is {name}"
               for key in ("composite", "segmentation") if key in ds]  # fmt: skip
        seg = [a for a in model["architectures"] if a in SEG_BACKBONES]
        if seg:
            out.append(
                f"model.architectures: {', '.join(seg)} predict per pixel and need a segmentation dataset "
                f"(dataset.name: {', '.join(SEGMENTATION_DATASETS)}); dataset.name is {name}"
            )
        return out
    out = []
    if cfg["method"] not in SEGMENTATION_METHODS:
        out.append(
            f"method: {cfg['method']!r} has no per-pixel version for segmentation (dataset.name: {name}); "
            f"allowed values: {', '.join(SEGMENTATION_METHODS)}"
        )
    wrong = [a for a in model["architectures"] if a not in SEG_BACKBONES]
    if wrong:
        out.append(
            f"model.architectures: {', '.join(wrong)} not allowed for segmentation (dataset.name: {name}); "
            f"allowed values: {', '.join(SEG_BACKBONES)}"
        )
    for key, only in (("fusion_source", "decoder"), ("fusion_head", "linear")):
        if model[key] != only:
            out.append(
                f"model.{key}: {model[key]!r} not allowed for segmentation: the U-Net's decoder output is fused per "
                f"pixel by a local 1x1 convolution; allowed value: {only}"
            )
    if cfg["partition"]["scheme"] == "htfl":
        out.append(
            "partition.scheme: 'htfl' pools the test split into the clients' data; allowed for segmentation: dirichlet, iid"
        )
    section = options_section(name)
    other = "segmentation" if section == "composite" else "composite"
    if other in ds:
        out.append(f"dataset.{other}: not used by {name}; its options go under dataset.{section}")
    if name in COMPOSITE_DATASETS:
        out += _composite_problems(cfg)
    return out


def _composite_problems(cfg: dict) -> list[str]:
    ds = cfg["dataset"]
    out = []
    if ds["max_test"] is not None:
        out.append(
            f"dataset.max_test: not used by {ds['name']}: its global test set is dataset.composite.test_canvases "
            "canvases of the official test split; set it to null"
        )
    source = SOURCE_SIZE.get(ds["name"])
    if ds["name"] == "synthetic-composite":
        source = ds["synthetic"]["size"]
        if ds["synthetic"]["channels"] != 1:
            channels = ds["synthetic"]["channels"]
            out.append(f"dataset.synthetic.channels: composites paste grayscale images; allowed value: 1, got {channels}")
    try:
        composite_options(cfg).check(source)
    except ValueError as e:
        out.append(f"dataset.composite: {str(e).removeprefix('composite options: ')}")
    return out


def composite_options(cfg: dict):
    """The :class:`~fedunet.segmentation.composites.CompositeOptions` of a composite run config."""
    from fedunet.segmentation.composites import CompositeOptions

    c = cfg["dataset"]["composite"]
    fields = ("canvas_size", "placement", "overlap", "threshold")
    return CompositeOptions(garments=tuple(c["garments"]), **{k: c[k] for k in fields})
