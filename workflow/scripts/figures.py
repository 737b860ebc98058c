"""Figures of a study (PNG + PDF) from its aggregated tables.

* ``curves_<experiment>``: accuracy vs round per experiment, mean with a band of +-1 std over seeds;
* ``bottleneck_tradeoff``: accuracy vs MB sent per client per round across d (log x);
* ``noniid_alpha``: accuracy vs Dirichlet alpha (and IID);
* ``fusion``: add vs concat;
* ``per_architecture``: each backbone's global accuracy in the heterogeneous runs;
* ``readings_diagnostics``: per fusion reading and method, accuracy with both paths, with each path
  alone, and the U-Net/backbone norm ratio at the classifier input (an ignored U-Net path shows
  as a U-Net-alone bar at chance and a ratio near zero);
* ``comparisons``: every paired difference FedUNet - X of the study (3 or more pairs) with its 95%
  interval, per protocol, marked where it excludes zero and where it survives Holm's correction;
* ``partition_<alpha>-s<seed>``: the class distribution of each partition as a heatmap (segmentation
  partitions: pixels of each class on each client's canvases);
* with segmentation runs: ``curves_<experiment>`` of mIoU, and ``segmentation_examples``: a few global
  test canvases (composites) with their ground-truth masks and the masks FedUNet's and the other
  methods' client models predict, read from each run's ``examples.npz``.

Run as a Snakemake script (each figure written is logged to the rule's log), or import
:func:`make_figures` from tests.
"""

import logging
import math
import re
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from segmentation_figures import segmentation_examples_figure  # noqa: E402

from fedunet.stats import MIN_SEEDS_FOR_A_CLAIM  # noqa: E402
from fedunet.study import COMPARISONS_FIGURE, SEGMENTATION_FIGURE, SUMMARY_FIGURES  # noqa: E402

PROTOCOLS = (("pers_acc", "personalized (own held-out split)"), ("global_acc", "global (shared test set)"))
SEGMENTATION_PROTOCOLS = (("pers_miou", "personalized (own held-out canvases)"), ("global_miou", "global (global test canvases)"))
AXES = ("archset", "method", "d", "fusion", "alpha")
plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "font.size": 10, "axes.grid": True, "grid.alpha": 0.3})
log = logging.getLogger("figures")


def save(fig, figures: Path, name: str, footer: str) -> None:
    """Write the figure as PNG and PDF with ``footer`` under everything, legends placed below an axis included."""
    fig.text(0.99, min(-0.02, _lowest_legend(fig) - 0.02), footer, ha="right", va="top", fontsize=7, color="0.4")
    fig.savefig(figures / f"{name}.png", bbox_inches="tight")
    fig.savefig(figures / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None})  # same figure, same bytes
    plt.close(fig)
    log.info("wrote %s.png and %s.pdf", name, name)


def _lowest_legend(fig) -> float:
    """The lowest edge of the figure's legends, in figure coordinates (0 when none lies below it)."""
    renderer = fig.canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    edges = [leg.get_window_extent(renderer).transformed(fig.transFigure.inverted()).y0 for leg in legends if leg]
    return min([0.0, *edges])


def label(row: pd.Series, varying: list[str]) -> str:
    parts = []
    for axis in varying:
        v = row[axis]
        parts.append({"d": f"d={v}", "alpha": "IID" if v == "iid" else f"α={str(v)[1:]}"}.get(axis, str(v)))
    return ", ".join(parts) or str(row["method"])


def seeds_phrase(exp: pd.DataFrame, by: list[str]) -> str:
    """'3 seeds', or '1-3 seeds per cell' when cells have different counts (a study made so far)."""
    counts = exp.drop_duplicates("run").groupby(by)["seed"].nunique()
    lo, hi = int(counts.min()), int(counts.max())
    return f"{hi} seed{'s' * (hi > 1)}" if lo == hi else f"{lo}-{hi} seeds per cell"


def varying_axes(df: pd.DataFrame) -> list[str]:
    return [a for a in AXES if df[a].nunique() > 1]


def curves_figure(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    experiment: str,
    figures: Path,
    footer: str,
    protocols: tuple = PROTOCOLS,
    metric: str = "accuracy",
) -> None:
    """``metric`` (``protocols``' columns) against the round, mean and ±1 std over seeds."""
    exp = runs[runs["experiment"] == experiment]
    varying = varying_axes(exp) or ["method"]
    # many configurations: one row of panels per architecture set, so lines stay readable
    panels = (
        sorted(exp["archset"].unique()) if "archset" in varying and exp[list(AXES)].drop_duplicates().shape[0] > 8 else [None]
    )
    if panels != [None]:
        varying = [a for a in varying if a != "archset"]
    # a study without the global protocol (eval.global: false) has one panel per row
    protocols = [(col, title) for col, title in protocols if col in curves and curves[col].notna().any()]
    width = 5.5 * len(protocols)
    shape = (len(panels), len(protocols))
    fig, grid = plt.subplots(*shape, figsize=(width, 4 * len(panels)), squeeze=False, constrained_layout=True)
    colors = {}
    for row, archset in zip(grid, panels):
        part = exp if archset is None else exp[exp["archset"] == archset]
        for _, group in part.groupby(list(AXES), sort=True):
            c = curves[curves["run"].isin(group["run"])]
            stats = c.groupby("round")[[p for p, _ in protocols]].agg(["mean", "std"])
            name = label(group.iloc[0], varying)
            color = colors.setdefault(name, f"C{len(colors) % 10}")
            style = "-" if len(colors) <= 10 else "--"
            for ax, (col, _) in zip(row, protocols):
                mean, std = 100 * stats[(col, "mean")], 100 * stats[(col, "std")].fillna(0)
                ax.plot(stats.index, mean, style, marker="o", ms=3, label=name, color=color)
                ax.fill_between(stats.index, mean - std, mean + std, color=color, alpha=0.15)
        for ax, (_, title) in zip(row, protocols):
            ax.set_title(title if archset is None else f"{title}, clients: {archset}")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_xlabel("round")
            ax.set_ylabel(f"{metric} (%)")
        row[-1].legend(fontsize=7, loc="lower right", ncol=2 if len(colors) > 6 else 1)
    seeds = seeds_phrase(exp, list(AXES))
    fig.suptitle(f"Experiment '{experiment}': {metric} vs round (mean ± std over {seeds})")
    save(fig, figures, f"curves_{experiment}", footer)


def _mean_std(df: pd.DataFrame, by: list[str], cols: list[str]) -> pd.DataFrame:
    return df.groupby(by)[cols].agg(["mean", "std"]).fillna(0.0)


def bottleneck_figure(runs: pd.DataFrame, figures: Path, footer: str) -> None:
    exp = runs[(runs["experiment"] == "bottleneck") & (runs["method"] != "local")]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for archset, group in exp.groupby("archset"):
        s = _mean_std(group, ["d"], ["mb_up_per_client", "final_pers_acc", "final_global_acc"])
        x = s[("mb_up_per_client", "mean")]
        for col, title in (("final_pers_acc", "personalized"), ("final_global_acc", "global")):
            ax.errorbar(x, 100 * s[(col, "mean")], yerr=100 * s[(col, "std")], marker="o", capsize=3, label=f"{archset}, {title}")
            for d, xv, yv in zip(s.index, x, 100 * s[(col, "mean")]):
                ax.annotate(f"d={d}", (xv, yv), textcoords="offset points", xytext=(4, -10), fontsize=7)
    local = runs[(runs["method"] == "local")]
    if not local.empty:
        ax.axhline(100 * local["final_global_acc"].mean(), ls="--", color="0.5", lw=1, label="local only, global (0 MB)")
    ax.set_xscale("log")
    ax.set_xlabel("MB sent per client per round (log scale)")
    ax.set_ylabel("final accuracy (%)")
    ax.set_title("Bottleneck size d: accuracy vs traffic")
    ax.legend(fontsize=7)
    save(fig, figures, "bottleneck_tradeoff", footer)


def alpha_figure(runs: pd.DataFrame, figures: Path, footer: str) -> None:
    exp = runs[runs["experiment"] == "noniid"].copy()
    exp["alpha_x"] = [math.inf if a == "iid" else float(a[1:]) for a in exp["alpha"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    order = sorted(exp["alpha_x"].unique())
    ticks = list(range(len(order)))
    for (archset, method), group in exp.groupby(["archset", "method"]):
        s = _mean_std(group, ["alpha_x"], ["final_pers_acc", "final_global_acc"]).reindex(order)
        for ax, (col, _) in zip(axes, (("final_pers_acc", 0), ("final_global_acc", 1))):
            ax.errorbar(
                ticks, 100 * s[(col, "mean")], yerr=100 * s[(col, "std")], marker="o", capsize=3, label=f"{method} ({archset})"
            )
    for ax, (_, title) in zip(axes, PROTOCOLS):
        ax.set_xticks(ticks, ["IID" if math.isinf(a) else f"{a:g}" for a in order])
        ax.set_xlabel("Dirichlet α (smaller = more label skew)")
        ax.set_ylabel("final accuracy (%)")
        ax.set_title(title)
    axes[1].legend(fontsize=8)
    fig.suptitle("Non-IID sweep")
    save(fig, figures, "noniid_alpha", footer)


def grouped_bars(ax, table: pd.DataFrame, groups: list[str], series: list[str], title: str) -> None:
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, name in enumerate(series):
        means = [table.loc[(g, name), "mean"] if (g, name) in table.index else np.nan for g in groups]
        stds = [table.loc[(g, name), "std"] if (g, name) in table.index else 0 for g in groups]
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            100 * np.array(means),
            width,
            yerr=100 * np.nan_to_num(stds),
            capsize=3,
            label=name,
        )
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_ylabel("final accuracy (%)")
    ax.set_title(title)


def fusion_figure(runs: pd.DataFrame, figures: Path, footer: str) -> None:
    exp = runs[runs["experiment"] == "fusion"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    groups = sorted(exp["archset"].unique())
    fusions = sorted(exp["fusion"].unique())
    for ax, (col, title) in zip(axes, (("final_pers_acc", PROTOCOLS[0][1]), ("final_global_acc", PROTOCOLS[1][1]))):
        table = exp.groupby(["archset", "fusion"])[col].agg(["mean", "std"]).fillna(0)
        grouped_bars(ax, table, groups, fusions, title)
        lo = 100 * exp[col].min()
        ax.set_ylim(max(0, lo - 10), None)
    axes[1].legend(title="fusion")
    fig.suptitle("Fusion of the U-Net output: add vs concat (mean ± std over seeds)")
    save(fig, figures, "fusion", footer)


def per_architecture_figure(runs: pd.DataFrame, per_arch: pd.DataFrame, figures: Path, footer: str) -> None:
    exp = runs[runs["experiment"] == "heterogeneous"].drop_duplicates("run")
    merged = per_arch.merge(exp[["run", "archset", "method"]], on="run")
    archsets = sorted(merged["archset"].unique())
    fig, axes = plt.subplots(1, len(archsets), figsize=(5.5 * len(archsets), 4), squeeze=False)
    for ax, archset in zip(axes[0], archsets):
        sub = merged[merged["archset"] == archset]
        table = sub.groupby(["architecture", "method"])["final_global_acc"].agg(["mean", "std"]).fillna(0)
        grouped_bars(ax, table, sorted(sub["architecture"].unique()), sorted(sub["method"].unique()), f"clients: {archset}")
        ax.legend(fontsize=8)
    fig.suptitle("Per-architecture global accuracy in heterogeneous runs (final round, mean ± std over seeds)")
    save(fig, figures, "per_architecture", footer)


def partition_figure(counts_csv: Path, figures: Path, footer: str) -> None:
    counts = pd.read_csv(counts_csv, index_col="client")
    name = counts_csv.name.replace(".counts.csv", "")
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * counts.shape[1] + 2), max(3, 0.35 * counts.shape[0] + 1.5)))
    im = ax.imshow(counts.values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(counts.shape[1]), [c.replace("class_", "") for c in counts.columns], fontsize=7)
    ax.set_yticks(range(counts.shape[0]), counts.index, fontsize=7)
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    ax.grid(False)
    pixels = str(counts.columns[0]).startswith("pixels_")  # a segmentation partition: pixels per class
    fig.colorbar(im, ax=ax, label="pixels (train + held-out canvases)" if pixels else "samples (train + held-out)")
    m = re.match(r"(?P<alpha>iid|a[0-9.e+-]+)-s(?P<seed>\d+)", name)
    alpha = "IID" if m["alpha"] == "iid" else f"Dirichlet α={m['alpha'][1:]}"
    ax.set_title(f"Class distribution: {alpha}, seed {m['seed']}")
    save(fig, figures, f"partition_{name}", footer)


def readings_figure(runs: pd.DataFrame, figures: Path, footer: str) -> None:
    exp = runs[runs["experiment"] == "readings"].drop_duplicates("run")
    readings = sorted(exp["reading"].unique())
    methods = sorted(exp["method"].unique())
    fig, (ax, ax_norm) = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [3, 1.4]})
    shown = [("final_pers_acc", "both paths", 1.0, None), ("pers_acc_backbone_only", "backbone alone", 0.65, None),
             ("pers_acc_unet_only", "U-Net alone", 0.35, None)]  # fmt: skip
    if "pers_acc_no_bottleneck" in exp:  # runs before the ablation was recorded have none
        shown.append(("pers_acc_no_bottleneck", "bottleneck ablated", 1.0, "//"))
    series = [(m, col, f"{m}: {what}", alpha, hatch) for m in methods for col, what, alpha, hatch in shown]
    width = 0.8 / len(series)
    x = np.arange(len(readings))
    for i, (method, col, name, alpha, hatch) in enumerate(series):
        part = exp[exp["method"] == method].groupby("reading")[col].agg(["mean", "std"]).reindex(readings)
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            100 * part["mean"],
            width,
            yerr=100 * part["std"].fillna(0),
            capsize=2,
            label=name,
            color=f"C{methods.index(method)}",
            alpha=alpha,
            hatch=hatch,
            edgecolor="white" if hatch else None,
        )
    names = [r.replace("-", "\n", 1) for r in readings]  # "add\nbottleneck-linear": short, unrotated
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("final personalized accuracy (%)")
    ax.set_title("Each path alone (the other zeroed at the classifier input)")
    ax.legend(fontsize=7, ncol=len(methods), loc="upper center", bbox_to_anchor=(0.5, -0.14))  # below: bars stay visible
    for j, method in enumerate(methods):
        part = exp[exp["method"] == method].assign(ratio=lambda t: t["norm_unet"] / t["norm_backbone"])
        part = part.groupby("reading")["ratio"].agg(["mean", "std"]).reindex(readings)
        ax_norm.bar(x + (j - (len(methods) - 1) / 2) * 0.8 / len(methods), part["mean"], 0.8 / len(methods),
                    yerr=part["std"].fillna(0), capsize=2, label=method, color=f"C{j}")  # fmt: skip
    ax_norm.set_xticks(x, [r.replace("-", "\n") for r in readings], fontsize=7)
    ax_norm.set_ylabel("‖U-Net contribution‖ / ‖backbone features‖")
    ax_norm.set_title("Norms at the classifier input")
    ax_norm.legend(fontsize=7)
    fig.suptitle(f"Fusion readings: is the U-Net path used? (mean ± std over {seeds_phrase(exp, ['method', 'reading'])})")
    save(fig, figures, "readings_diagnostics", footer)


# how a difference reads: its interval across zero, excluding zero, or surviving Holm's correction too
VERDICT_COLORS = (("no difference shown", "tab:gray"), ("interval excludes zero", "tab:orange"), ("holds after Holm", "tab:red"))


def comparisons_figure(comparisons: pd.DataFrame | None, figures: Path, footer: str) -> list[str]:
    """Every FedUNet - X difference with ``MIN_SEEDS_FOR_A_CLAIM`` or more pairs (comparisons.csv), one row
    each, personalized and global side by side: the study's answers in one figure.  The x axis is
    linear within 2 points and logarithmic beyond, so a 25-point gap and a 0.3-point one both read.  Returns the
    row labels shown (top first); without any such difference the figure says so.  Colour: the
    interval across zero, excluding it, or surviving Holm's correction too (comparisons.md's `*`, `**`)."""
    rows = pd.DataFrame() if comparisons is None else comparisons[comparisons["pairs"] >= MIN_SEEDS_FOR_A_CLAIM]
    labels = [
        f"{r['experiment']}: {r['archset']}, {label(r, ['alpha'])}, d={r['d']}, {r['fusion']} vs {r['versus']}"
        for _, r in rows.iterrows()
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.6 + 0.26 * max(len(rows), 1)), sharey=True, constrained_layout=True)
    fig.suptitle(f"FedUNet against each method, paired over seeds ({MIN_SEEDS_FOR_A_CLAIM} or more pairs)")
    if rows.empty:
        for ax in axes:
            ax.set_axis_off()
        fig.text(0.5, 0.5, f"no FedUNet - X difference with {MIN_SEEDS_FOR_A_CLAIM} or more pairs of seeds yet", ha="center")
        save(fig, figures, COMPARISONS_FIGURE, footer)
        return []
    y = np.arange(len(rows))[::-1]
    for ax, (col, title) in zip(axes, PROTOCOLS):
        m, lo, hi = (rows[f"final_{col}_{k}"].to_numpy() for k in ("diff_pts", "ci_low", "ci_high"))
        level = (rows[f"final_{col}_holds"].astype(int) + rows[f"final_{col}_holds_holm"].astype(int)).to_numpy()
        for i, (name, color) in enumerate(VERDICT_COLORS):
            k = level == i
            ax.errorbar(m[k], y[k], xerr=[m[k] - lo[k], hi[k] - m[k]], fmt="o", ms=4, color=color, capsize=2, lw=1.2, label=name)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xscale("symlog", linthresh=2)
        ax.set_xticks([t for t in (-30, -10, -3, -1, 0, 1, 3, 10, 30) if lo.min() - 1 <= t <= hi.max() + 1])
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:+g}" if v else "0"))
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("FedUNet − X, final round (points, 95% CI)")
        ax.set_title(title)
    axes[0].set_yticks(y, labels, fontsize=7)
    axes[1].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    save(fig, figures, COMPARISONS_FIGURE, footer)
    return labels


def make_figures(tables: Path, figures: Path, counts: list[Path], footer: str, classification=True, segmentation=False) -> None:
    """Every figure of a study from its tables (``classification``/``segmentation``: whether it has
    runs of that task); the segmentation examples come from the runs' directories beside ``tables``."""
    figures.mkdir(parents=True, exist_ok=True)
    if classification:
        classification_figures(tables, figures, footer)
    if segmentation:
        runs = pd.read_csv(tables / "segmentation_runs.csv")
        curves = pd.read_csv(tables / "segmentation_curves.csv")
        log.info("read %d segmentation runs from %s", runs["run"].nunique(), tables)
        for experiment in sorted(set(runs["experiment"])):
            curves_figure(runs, curves, experiment, figures, footer, SEGMENTATION_PROTOCOLS, "mIoU")
        save(segmentation_examples_figure(runs, tables.parent / "runs"), figures, SEGMENTATION_FIGURE, footer)
    for path in counts:
        partition_figure(Path(path), figures, footer)


def classification_figures(tables: Path, figures: Path, footer: str) -> None:
    runs = pd.read_csv(tables / "runs.csv")
    curves = pd.read_csv(tables / "curves.csv")
    per_arch = pd.read_csv(tables / "per_architecture.csv")
    experiments = set(runs["experiment"])
    log.info("read %d runs of experiments %s from %s", runs["run"].nunique(), ", ".join(sorted(experiments)), tables)
    for experiment in sorted(experiments):
        curves_figure(runs, curves, experiment, figures, footer)
    makers = {
        "bottleneck": lambda: bottleneck_figure(runs, figures, footer),
        "noniid": lambda: alpha_figure(runs, figures, footer),
        "fusion": lambda: fusion_figure(runs, figures, footer),
        "heterogeneous": lambda: per_architecture_figure(runs, per_arch, figures, footer),
        "readings": lambda: readings_figure(runs, figures, footer),
    }
    assert set(makers) == set(SUMMARY_FIGURES)
    for experiment, make in makers.items():
        if experiment in experiments:
            make()
    path = tables / "comparisons.csv"  # absent while no FedUNet run has a partner of the same seed
    comparisons_figure(pd.read_csv(path) if path.exists() else None, figures, footer)


def main(sm) -> None:
    logging.basicConfig(filename=sm.log[0], filemode="w", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # ours at INFO; matplotlib and others only warn
    try:
        tables, figures = Path(sm.params.tables), Path(sm.output[0]).parent
        counts = [Path(p) for p in sm.input.counts]
        make_figures(tables, figures, counts, sm.params.footer, bool(len(sm.input.runs)), bool(len(sm.input.segmentation)))
    except Exception:
        log.exception("figures failed")
        raise


if "snakemake" in globals():
    main(globals()["snakemake"])
