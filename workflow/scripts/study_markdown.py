"""The study's tables rendered as Markdown, each with a note on what it shows and a provenance
footer (which runs, commits, devices and seeds produced it)."""

import math

import pandas as pd
from study_tables import GROUP, METRICS, SEGMENTATION_METRICS

from fedunet.stats import MIN_SEEDS_FOR_A_CLAIM
from fedunet.study import finished_so_far


def markdown(df: pd.DataFrame, title: str, note: str, prov: dict, percent: tuple[str, ...] = ()) -> str:
    cols = list(df.columns)
    lines = [f"# {title}", "", note, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_cell(r[c], c in percent) for c in cols) + " |")
    lines += ["", _footer(prov)]
    return "\n".join(lines) + "\n"


def _cell(v, percent: bool) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if percent:
            return f"{100 * v:.2f}"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def _footer(prov: dict) -> str:
    dirty = f", {prov['dirty_runs']} run(s) from a modified checkout" if prov["dirty_runs"] else ""
    so_far = finished_so_far(prov["runs"], prov.get("planned_runs", prov["runs"]))
    return (
        f"*Ours, produced by the pipeline (workflow/scripts/aggregate.py) on {prov['generated']} from {prov['runs']} runs{so_far} "
        f"of study `{prov['study']}` ({', '.join(prov['config_files'])}); datasets: {', '.join(prov['datasets'])}; "
        f"seeds {prov['seeds']}; commits {', '.join(prov['commits'])}{dirty}; devices: {'; '.join(prov['devices'])}; "
        f"torch {', '.join(prov['torch'])}. Per-run provenance: provenance.json.*"
    )


# What each table shows, printed under its title.
ACCURACY_NOTE = (
    "Accuracy (%) as mean ± std over seeds (sample std). Personalized: each client on its own held-out split, "
    "sample-weighted (HtFLlib protocol). Global: each client model on the shared test set (a fixed subset where "
    "the study sets dataset.max_test), averaged over clients "
    "(NIID-Bench protocol). The final round is the primary figure; the best round is chosen on validation splits "
    "carved from each client's training data, never on either test set (HtFLlib picks it on the test split). "
    "`diverged`: runs flagged as diverged (kept in the mean); `flattened`: runs whose last-5-round mean moved "
    "< 0.5 point from the 5 rounds before, on both protocols."
)
COMPARISONS_NOTE = (
    "Paired differences of final-round accuracy, FedUNet minus the method in `versus`, over the seeds both ran "
    "(same partition and seed), in percentage points with a 95% Student-t interval; `*` marks an interval that "
    "excludes zero, `**` one that still holds after Holm's correction over its experiment (every difference of "
    "the experiment's rows with 3 or more pairs, both protocols). `diverged`: runs flagged as diverged, "
    "FedUNet/other (they stay in the difference). `verdict`: FedUNet higher or lower where the difference holds "
    "after the correction, \"(uncorrected only)\" where only the interval excludes zero, \"no difference shown\" "
    "where it does not (not a proof of equality: the interval says how large a difference stays possible), no "
    "claim from fewer than 3 pairs."
)
PROGRESS_NOTE = (
    "Runs each experiment of the config plans and how many have finished (a summary.json); of those, how many "
    "flattened (mean of the last 5 evaluated rounds within 0.5 point of the 5 before, both protocols) and how many "
    "were flagged as diverged. A run shared by two experiments counts in both."
)
VARIANTS_NOTE = (
    "Paired differences of final-round accuracy, a method at the row's `d` and `fusion` minus the same method at "
    "the `reference` value of the varied `option` (the study's default), over the seeds both ran (same partition "
    "and seed), in percentage points with a 95% Student-t interval; `*` marks an interval that excludes zero. "
    "`diverged`: runs flagged as diverged, this setting/reference. MB up: serialized payload per client per round, "
    "this setting vs reference. `**`: the difference still holds after Holm's correction over its experiment "
    "(every difference of the experiment's rows with 3 or more pairs, both protocols). `verdict`: the setting "
    "higher or lower where the difference holds after the correction, \"(uncorrected only)\" where only the "
    "interval excludes zero, \"no difference shown\" where it does not, no claim from fewer than 3 pairs."
)
READINGS_NOTE = (
    "Fusion readings (`mode-source-head`, see the README): final round, mean ± std over seeds. Each path alone: "
    "personalized accuracy with the other path zeroed at the classifier input. Norm ratio: mean L2 norm of the "
    "U-Net's contribution over the backbone's at the classifier input. Bottleneck mean-ablated: personalized accuracy "
    "with the bottleneck's output replaced by its per-channel mean over the client's split, so that nothing "
    "image-specific passes the block FedUNet shares (both paths kept); the drop from the full model, taken within "
    "each run and then over seeds with a 95% Student-t interval (`*`: excludes zero), is what the block carries. "
    "`local` trains the same model without sharing."
)
METHODS_NOTE = (
    "Every method of each experiment with a baseline (a method FedUNet is measured against), sorted by final "
    "global accuracy within each set of client architectures and label skew. " + ACCURACY_NOTE + " Traffic: "
    "lengths of the real serialized payloads (MB = 10^6 bytes)."
)
COMMUNICATION_NOTE = (
    "MB = 10^6 bytes of the real serialized payloads, per client per round (up, down) and per "
    "round over all clients. FedAvg = the whole backbone + classifier of that client sent instead (fp32)."
)
COMPUTE_NOTE = (  # {d}: the U-Net's bottleneck size
    "Training FLOPs per sample (forward + backward, torch FlopCounterMode) of each backbone alone and "
    "with the d={d} U-Net; images/s from a microbenchmark (`fedunet info --measure`, batch 64) and as "
    "measured inside the study's runs (per client, local training only). The U-Net is light in traffic, not in compute."
)
PAPER_VS_OURS_NOTE = (
    "`paper`: the values stated by Seo, Lee, Park (arXiv 2508.12740), not reproduced by us. "
    "`ours`: produced by this pipeline; accuracy on our dataset and protocol (see columns), so a gap may reflect the "
    "dataset and settings rather than the method."
)
# the diagnostics shown as mean ± std by the readings table, and their labels
ROUNDS_NOTE = (
    "Personalized accuracy (%) after each round shown (`pers_acc_rN`: round N), mean over seeds; "
    "`pers_acc_max_over_rounds`: each run's highest personalized accuracy over all evaluated rounds, "
    "mean over seeds. That maximum is what HtFLlib reports, chosen on the very split it reports, so it "
    "is optimistic; our selected round is the validation-best one (accuracy table). `seconds_per_round`: "
    "wall time of a round (training, aggregation, evaluation) and `train_samples_per_s`: local-training "
    "throughput, both mean over the cell's runs, on the devices in the footer."
)


READINGS_COLUMNS = {
    "final_pers_acc": "personalized (%)",
    "final_global_acc": "global (%)",
    "pers_acc_backbone_only": "backbone path alone (%)",
    "pers_acc_unet_only": "U-Net path alone (%)",
    "pers_acc_no_bottleneck": "bottleneck mean-ablated (%)",
}


def _with_mean_std_columns(show: pd.DataFrame, t: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """A "mean ± std" column in % per ``{column: label}`` from ``t``'s ``<column>_mean`` and
    ``<column>_std``: ``-`` where the mean is missing, a missing std (one seed) shown as 0."""
    for col, label in labels.items():
        show[label] = [
            "-" if pd.isna(m) else f"{100 * m:.2f} ± {100 * (0 if pd.isna(s) else s):.2f}"
            for m, s in zip(t[f"{col}_mean"], t[f"{col}_std"])
        ]
    return show


def _with_accuracy_columns(show: pd.DataFrame, t: pd.DataFrame) -> pd.DataFrame:
    return _with_mean_std_columns(show, t, {col: label + " (%)" for col, label in METRICS.items()})


def accuracy_markdown(t: pd.DataFrame, prov: dict) -> str:
    show = t[GROUP + ["seeds", "rounds", "diverged", "flattened"]].copy()
    return markdown(_with_accuracy_columns(show, t), "Accuracy", ACCURACY_NOTE, prov)


def comparisons_markdown(t: pd.DataFrame, prov: dict) -> str:
    title = "FedUNet against each method (paired over seeds)"
    return markdown(_differences(t, CLASSIFICATION_DIFFERENCES, verdicts=True), title, COMPARISONS_NOTE, prov)


def progress_markdown(t: pd.DataFrame, prov: dict) -> str:
    title = "Progress of the study: runs finished per experiment"
    show = t[["experiment", *(["question"] if "question" in t else []), "planned", "finished", "flattened", "diverged"]].copy()
    show["seeds per cell"] = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in zip(t["seeds_min"], t["seeds_max"])]
    return markdown(show, title, PROGRESS_NOTE, prov)


def variants_markdown(t: pd.DataFrame, prov: dict) -> str:
    title = "Each method against itself at the default d or fusion (paired over seeds)"
    keys = ["experiment", "archset", "alpha", "method", "option", "d", "fusion", "reference", "pairs", "diverged"]
    show = _differences(t, CLASSIFICATION_DIFFERENCES, keys, "setting - reference", verdicts=True)
    mb = zip(t["mb_up_per_client"], t["mb_up_per_client_reference"])
    show["MB up (setting vs reference)"] = [f"{a:.4g} vs {b:.4g}" for a, b in mb]
    return markdown(show, title, VARIANTS_NOTE, prov)


CLASSIFICATION_DIFFERENCES = (("final_pers_acc", "personalized"), ("final_global_acc", "global"))
SEGMENTATION_DIFFERENCES = (
    ("final_pers_miou", "personalized mIoU"),
    ("final_global_miou", "global mIoU"),
    ("final_pers_pixel_acc", "personalized pixel accuracy"),
    ("final_global_pixel_acc", "global pixel accuracy"),
)


def interval_text(m: float, lo: float, hi: float, holds: bool, holds_corrected: bool = False) -> str:
    """A difference with its 95% interval, ``*`` when the interval excludes zero and ``**`` when it still
    holds after Holm's correction; "-" without a value, and "(one seed: no interval)" where a single seed
    leaves the interval unbounded."""
    if math.isnan(m):
        return "-"
    if math.isinf(lo) or math.isinf(hi):
        return f"{m:+.2f} (one seed: no interval)"
    return f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]{' **' if holds_corrected else ' *' if holds else ''}"


COMPARISON_KEYS = ["experiment", "archset", "alpha", "d", "fusion", "versus", "pairs", "diverged"]


def _differences(
    t: pd.DataFrame, columns: tuple, keys: list[str] = COMPARISON_KEYS, what: str = "FedUNet - X", verdicts: bool = False
) -> pd.DataFrame:
    """A table of paired differences shown: one "<what>, <label> (pts, 95% CI)" column per ``(column, label)``,
    with ``verdicts`` a last column saying in words what the intervals show (:func:`verdict`)."""
    show = t[keys].copy()
    for col, label in columns:
        show[f"{what}, {label} (pts, 95% CI)"] = [
            interval_text(*values)
            for values in zip(*(t[f"{col}_{k}"] for k in ("diff_pts", "ci_low", "ci_high", "holds", "holds_holm")))
        ]
    if verdicts:
        show["verdict"] = [
            verdict({label: (r[f"{col}_diff_pts"], r[f"{col}_holds"], r[f"{col}_holds_holm"]) for col, label in columns}, r["pairs"])
            for _, r in t.iterrows()
        ]
    return show


def verdict(differences: dict[str, tuple[float, bool, bool]], pairs: int) -> str:
    """In words, what paired differences show: ``{protocol: (difference, interval excludes zero, and still
    after Holm's correction)}`` over ``pairs`` seeds. Fewer than ``MIN_SEEDS_FOR_A_CLAIM`` pairs make no claim
    (3 seeds for any claim); an interval across zero is "no difference shown", which is not "equal": its width
    is in the row; one that excludes zero only before the correction is said to be so."""
    if pairs < MIN_SEEDS_FOR_A_CLAIM:
        return f"too few seeds ({pairs})"

    def word(m: float, holds: bool, corrected: bool) -> str:
        if not holds:
            return "no difference shown"
        return ("higher" if m > 0 else "lower") + ("" if corrected else " (uncorrected only)")

    words = {p: word(*d) for p, d in differences.items()}
    if len(set(words.values())) == 1:
        return next(iter(words.values()))
    return "; ".join(f"{p}: {w}" for p, w in words.items())


# what the note says of each dataset a segmentation table can hold
SEGMENTATION_DATASET_NOTES = {
    "fmnist-composite": (
        "Dataset `fmnist-composite`: canvases composited from real Fashion-MNIST garments by "
        "fedunet.segmentation.composites (per-pixel class masks from each garment's own pixels, a background class), "
        "not a published segmentation benchmark and not Fashion-MNIST classification; its global test canvases are "
        "composites of the official test split."
    ),
    "synthetic-composite": "Dataset `synthetic-composite`: composites of synthetic images (a pipeline check, not a result).",
}
SEGMENTATION_NOTE = (
    "mIoU and pixel accuracy (%) as "
    "mean ± std over seeds (sample std). Personalized: each client on its own held-out canvases, read from the "
    "confusion matrix summed over clients (pixel-weighted). Global: each client model on the global test canvases, "
    "mIoU per client averaged over clients. A class absent from both the "
    "prediction and the ground truth of a matrix is left out of its mean. The best round is chosen on validation "
    "canvases carved from each client's training data (val mIoU), never on a test set. Each path alone: "
    "personalized mIoU with the other path zeroed at the classifier input. MB: real serialized payloads per client "
    "per round (up)."
)
SEGMENTATION_DIFFERENCES_NOTE = (
    "Paired differences of the final round, FedUNet minus the method in `versus`, over the seeds both ran (same "
    "canvases and seed), in points with a 95% Student-t interval; `*` marks an interval that excludes zero."
)


def segmentation_markdown(t: pd.DataFrame, comparisons: pd.DataFrame, prov: dict) -> str:
    """The segmentation cells, then FedUNet against each method of their experiment."""
    show = t[["dataset", *GROUP, "seeds", "rounds", "diverged"]].copy()
    labels = {col: label + " (%)" for col, label in SEGMENTATION_METRICS.items()}
    paths = {
        "pers_miou_backbone_only": "backbone path alone, pers. mIoU (%)",
        "pers_miou_unet_only": "U-Net path alone, pers. mIoU (%)",
    }
    labels.update({col: label for col, label in paths.items() if f"{col}_mean" in t})
    show = _with_mean_std_columns(show, t, labels)
    show["MB up / client / round"] = [f"{v:.4g}" for v in t["mb_up_per_client"]]
    datasets = sorted(set(prov["datasets"]))
    title = "Semantic segmentation (" + "; ".join(f"{d}: composites" if d.endswith("-composite") else d for d in datasets) + ")"
    note = " ".join(SEGMENTATION_DATASET_NOTES.get(d, f"Dataset `{d}`.") for d in datasets) + " " + SEGMENTATION_NOTE
    text = markdown(show, title, note, prov)
    if len(comparisons):
        diffs = markdown(_differences(comparisons, SEGMENTATION_DIFFERENCES), "FedUNet against each method (paired over seeds)",
                         SEGMENTATION_DIFFERENCES_NOTE, prov)  # fmt: skip
        text += "\n" + diffs.replace("# FedUNet", "## FedUNet", 1)
    return text


def rounds_markdown(t: pd.DataFrame, prov: dict) -> str:
    percent = tuple(c for c in t.columns if c.startswith("pers_acc"))
    return markdown(t, "Accuracy by round", ROUNDS_NOTE, prov, percent)


def readings_markdown(t: pd.DataFrame, prov: dict) -> str:
    labels = {col: label for col, label in READINGS_COLUMNS.items() if f"{col}_mean" in t}  # older runs: no ablation
    show = _with_mean_std_columns(t[["archset", "reading", "method", "seeds", "diverged"]].copy(), t, labels)
    show["U-Net / backbone norm"] = [
        "-" if pd.isna(u) else f"{u / b:.3f}" for u, b in zip(t["norm_unet_mean"], t["norm_backbone_mean"])
    ]
    if "bottleneck_drop_pts" in t:
        show["drop when the bottleneck is mean-ablated (pts, 95% CI)"] = [
            interval_text(m, lo, hi, holds)
            for m, lo, hi, holds in zip(
                t["bottleneck_drop_pts"], t["bottleneck_drop_ci_low"], t["bottleneck_drop_ci_high"], t["bottleneck_drop_holds"]
            )
        ]
    return markdown(show, "Fusion readings and whether the U-Net path is used", READINGS_NOTE, prov)


def methods_markdown(t: pd.DataFrame, prov: dict) -> str:
    varying = [c for c in ("d", "fusion") if t[c].nunique() > 1]  # FedUNet at several points of one cell
    show = t[["experiment", "archset", "alpha", "method", *varying, "seeds", "rounds"]].copy()
    show = _with_accuracy_columns(show, t)
    show["MB up / client / round"] = [f"{v:.4g}" for v in t["mb_up_per_client"]]
    show["MB down / client / round"] = [f"{v:.4g}" for v in t["mb_down_per_client"]]
    return markdown(show, "Methods", METHODS_NOTE, prov)


def communication_markdown(t: pd.DataFrame, prov: dict) -> str:
    return markdown(t, "Communication", COMMUNICATION_NOTE, prov)


def compute_markdown(t: pd.DataFrame, d: int, prov: dict) -> str:
    return markdown(t, "Compute", COMPUTE_NOTE.format(d=d), prov)


def paper_vs_ours_markdown(t: pd.DataFrame, prov: dict) -> str:
    return markdown(t, "Paper vs ours", PAPER_VS_OURS_NOTE, prov)
