"""The segmentation figure of a study (``segmentation_examples``, PNG + PDF): a few global test
canvases with their ground-truth masks and the masks each method's client models predict, read from
the runs' ``examples.npz`` (plain numpy arrays, no pickles), so that it is redrawn from committed runs
without retraining.  Called by ``figures.py``."""

import logging
from pathlib import Path

import matplotlib
import matplotlib.patches

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

log = logging.getLogger("figures")


def _palette(num_classes: int, ignore_index: int) -> np.ndarray:
    """RGB per mask value: background black, the classes in tab20's colours, ignored pixels white."""
    lut = np.ones((256, 3))
    lut[0] = 0.0
    colours = plt.get_cmap("tab20").colors
    for k in range(1, num_classes):
        lut[k] = colours[(2 * (k - 1)) % 20 if k <= 10 else (2 * (k - 11) + 1) % 20]
    lut[ignore_index] = 1.0
    return lut


def segmentation_examples_figure(runs: pd.DataFrame, runs_dir: Path, canvases: int = 3):
    """A few global test canvases of the first seed, per architecture set: the canvas, its ground
    truth, and the mask client 0's model predicts after the last round under each method (FedUNet
    first, then Local, then the others), from the runs' ``examples.npz``; returns the figure."""
    shown = runs.drop_duplicates("run")
    shown = shown[shown["seed"] == shown["seed"].min()]
    archsets = sorted(shown["archset"].unique())
    methods = sorted(shown["method"].unique(), key=lambda m: (m != "fedunet", m != "local", m))
    fig, axes = plt.subplots(len(archsets) * canvases, 2 + len(methods), squeeze=False,
                             figsize=(1.7 * (2 + len(methods)), 1.75 * len(archsets) * canvases + 0.9))  # fmt: skip
    names: list[str] = []
    for i, archset in enumerate(archsets):
        mine = shown[shown["archset"] == archset]
        data = {}
        for method, run in zip(mine["method"], mine["run"]):
            with np.load(runs_dir / run / "examples.npz", allow_pickle=False) as npz:
                data[method] = {k: npz[k] for k in npz.files}
        ref = data[next(m for m in methods if m in data)]
        if any(not np.array_equal(d["images"], ref["images"]) for d in data.values()):
            log.warning("%s: the runs' example canvases differ (other dataset settings?)", archset)
        names = [str(n) for n in ref["class_names"]]
        lut = _palette(len(names), int(ref["ignore_index"]))
        for j in range(min(canvases, len(ref["images"]))):
            row = axes[i * canvases + j]
            row[0].imshow(ref["images"][j].transpose(1, 2, 0).squeeze(), cmap="gray", vmin=0, vmax=255)
            row[1].imshow(lut[ref["masks"][j]], interpolation="nearest")
            for k, method in enumerate(methods):
                if method in data:
                    row[2 + k].imshow(lut[data[method]["predictions"][0, j]], interpolation="nearest")
            if j == 0:
                arch = str(ref["architectures"][0])
                titles = [f"canvas\n({archset})", "ground truth"] + [f"{m}\nclient 0: {arch}" for m in methods]
                for ax, title in zip(row, titles):
                    ax.set_title(title, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    lut = _palette(len(names), 255)
    handles = [matplotlib.patches.Patch(color=lut[k], label=name) for k, name in enumerate(names)]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False, title="class", title_fontsize=7)
    seed = int(shown["seed"].min())
    fig.suptitle(f"Segmentation: global test canvases (composites), ground truth and predicted masks, seed {seed}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.83, 0.97))
    return fig
