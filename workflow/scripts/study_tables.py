"""The study's tables as pure functions: DataFrames (and the costs of ``fedunet info``) in,
DataFrames out.  Nothing here reads or writes a file; ``aggregate.py`` does the I/O and
``study_markdown.py`` renders the Markdown.

* ``accuracy_table``: experiment x method x architecture set (x d, fusion, alpha), both
  protocols, final and best round, mean, std and 95% t-interval over seeds;
* ``progress_table``: per experiment, the runs planned and finished, flattened and diverged;
* ``comparisons_table``: FedUNet minus every other method of its experiment, paired over seeds;
* ``variants_table``: each method minus itself at the study's default d or fusion, paired over seeds
  (the d knee, add vs concat, which fusion reading); both with Holm's correction over each
  experiment's differences (``holm_within_experiments``);
* ``communication_table``: bytes per client per round and per round in total, against
  whole-model FedAvg of each backbone;
* ``compute_table``: training FLOPs per sample and measured throughput with and without the U-Net;
* ``diagnostics_table``: the readings experiment, each path of the model alone;
* ``methods_table``: every method of each experiment with baselines, with its traffic;
* ``paper_vs_ours``: each claim of the paper (``PAPER_CLAIMS``, data) next to our value, one
  small function per kind of claim;
* ``segmentation_table``: the segmentation runs' cells (mIoU and pixel accuracy, both protocols), as
  ``accuracy_table`` with ``SEGMENTATION_METRICS``; their comparisons are ``comparisons_table`` with
  ``SEGMENTATION_COMPARED``.
"""

import math

import pandas as pd

from fedunet import methods
from fedunet.stats import MIN_SEEDS_FOR_A_CLAIM, holm, mean_interval, paired_difference
from fedunet.study import alpha_label

METRICS = {
    "final_pers_acc": "personalized, final",
    "final_global_acc": "global, final",
    "best_pers_acc": "personalized, at the validation-best round",
    "best_global_acc": "global, at the validation-best round",
}
# Diagnostics of the U-Net path (models with a U-Net), final round.
DIAGNOSTICS = ("pers_acc_backbone_only", "pers_acc_unet_only", "norm_backbone", "norm_unet")
# ... and with the bottleneck mean-ablated: recorded by runs from commit 2026-11-26 on (a column only
# when some run has it)
ABLATIONS = ("pers_acc_no_bottleneck",)
GROUP = ["experiment", "archset", "method", "d", "fusion", "alpha"]
# Segmentation runs: mean IoU and pixel accuracy (fedunet/segmentation/evaluation.py).
SEGMENTATION_METRICS = {
    "final_pers_miou": "personalized mIoU, final",
    "final_pers_pixel_acc": "personalized pixel accuracy, final",
    "final_global_miou": "global mIoU, final",
    "final_global_pixel_acc": "global pixel accuracy, final",
    "best_pers_miou": "personalized mIoU, at the validation-best round",
    "best_global_miou": "global mIoU, at the validation-best round",
}
SEGMENTATION_COMPARED = ("final_pers_miou", "final_global_miou", "final_pers_pixel_acc", "final_global_pixel_acc")
SEGMENTATION_DIAGNOSTICS = ("pers_miou_backbone_only", "pers_miou_unet_only", "norm_backbone", "norm_unet")
# what a segmentation table calls its dataset: composites are not a published segmentation benchmark
DATASET_LABELS = {
    "fmnist-composite": "fmnist-composite (composites of Fashion-MNIST garments)",
    "synthetic-composite": "synthetic-composite (composites of synthetic images)",
}


def accuracy_table(runs: pd.DataFrame, metrics: dict = METRICS) -> pd.DataFrame:
    """Mean, std and 95% t-interval half-width over seeds of each of ``metrics``, every run included
    (diverged ones too: they are counted in ``diverged``, never dropped), with how many runs' curves
    flattened."""
    agg = {}
    for col in metrics:
        agg[f"{col}_mean"] = (col, "mean")
        agg[f"{col}_std"] = (col, "std")
        agg[f"{col}_ci95"] = (col, lambda v: mean_interval(v.dropna().tolist()).half_width)
    agg["seeds"] = ("seed", "nunique")
    agg["rounds"] = ("rounds", "max")
    agg["diverged"] = ("diverged", "sum")
    agg["flattened"] = ("flattened", "sum")
    t = runs.groupby(GROUP, sort=True).agg(**agg).reset_index()
    for col in t.columns:
        if col.endswith("_std"):
            t[col] = t[col].fillna(0.0)
    t["diverged"] = t["diverged"].astype(int)
    t["flattened"] = t["flattened"].astype(int)
    return t


# Which configuration of another method a FedUNet cell is compared with: the same experiment,
# architecture set and alpha, and the same d and fusion where that method has them.
COMPARED = ("final_pers_acc", "final_global_acc")


def segmentation_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The segmentation cells: ``accuracy_table`` of mIoU and pixel accuracy, with the dataset
    labelled (composites as composites), the diagnostics of each path, and the traffic per round."""
    t = accuracy_table(runs, SEGMENTATION_METRICS)
    extra = runs.groupby(GROUP, sort=True).agg(
        dataset=("dataset", lambda v: ", ".join(DATASET_LABELS.get(d, d) for d in sorted(set(v)))),
        **{f"{col}_{stat}": (col, stat) for col in SEGMENTATION_DIAGNOSTICS if col in runs for stat in ("mean", "std")},
        mb_up_per_client=("mb_up_per_client", "mean"),
        mb_per_round=("mb_per_round", "mean"),
    )
    return t.join(extra, on=GROUP)


def progress_table(runs: pd.DataFrame, planned: dict[str, int], questions: dict[str, str] | None = None) -> pd.DataFrame:
    """Per experiment of the config (in its order): the question it asks (its ``description``, given as
    ``questions``), the runs it plans, how many have finished, and of those how many flattened and
    diverged; the cells' fewest and most seeds."""
    finished = runs.groupby("experiment").agg(
        finished=("run", "nunique"), flattened=("flattened", "sum"), diverged=("diverged", "sum")
    )
    seeds = runs.groupby(["experiment", *GROUP[1:]])["seed"].nunique().groupby("experiment").agg(["min", "max"])
    t = pd.DataFrame({"experiment": list(planned), "planned": list(planned.values())})
    if questions is not None:
        t.insert(1, "question", [" ".join(questions.get(e, "").split()) for e in planned])
    t = t.set_index("experiment")
    t = t.join(finished).join(seeds.rename(columns={"min": "seeds_min", "max": "seeds_max"}))
    t[["finished", "flattened", "diverged", "seeds_min", "seeds_max"]] = (
        t[["finished", "flattened", "diverged", "seeds_min", "seeds_max"]].fillna(0).astype(int)
    )
    return t.reset_index()


def paired_columns(mine: pd.DataFrame, theirs: pd.DataFrame, compared: tuple[str, ...]) -> dict:
    """``mine - theirs`` of each of ``compared`` paired over the seeds both ran, in points with its 95%
    t-interval, whether it excludes zero and its t-test p-value; how many pairs, and the diverged runs
    of each side."""
    row = {}
    for col in compared:
        diff = paired_difference(dict(zip(mine["seed"], mine[col])), dict(zip(theirs["seed"], theirs[col])))
        row.update(
            {
                f"{col}_diff_pts": 100 * diff.mean,
                f"{col}_ci_low": 100 * diff.low,
                f"{col}_ci_high": 100 * diff.high,
                f"{col}_holds": diff.excludes_zero,
                f"{col}_p": diff.p_value,
            }
        )
    row["pairs"] = diff.n
    row["diverged"] = f"{int(mine['diverged'].sum())}/{int(theirs['diverged'].sum())}"
    return row


def comparisons_table(runs: pd.DataFrame, reference: str = "fedunet", compared: tuple[str, ...] = COMPARED) -> pd.DataFrame:
    """For every FedUNet cell and every other method of its experiment: the paired difference
    (FedUNet - X, in points) of each of ``compared`` over the seeds both ran, with its 95% t-interval."""
    rows = []
    keys = ["experiment", "archset", "alpha"]
    for (exp, archset, alpha), cell in runs.groupby(keys, sort=True):
        ours = cell[cell["method"] == reference]
        for (d, fusion), mine in ours.groupby(["d", "fusion"], sort=True):
            for other in sorted(set(cell["method"]) - {reference}):
                theirs = cell[cell["method"] == other]
                same = theirs[(theirs["d"] == d) & (theirs["fusion"] == fusion)]
                if len(same):
                    theirs = same
                elif theirs["unet"].any():
                    continue  # a method with a U-Net is compared at the same d and reading only
                else:  # no U-Net (FedAvg, the prototype methods...): d and fusion do not apply to it
                    theirs = theirs[theirs["fusion"] == theirs["fusion"].iloc[0]]
                if theirs["d"].nunique() > 1 or theirs["fusion"].nunique() > 1:
                    continue  # no single configuration of the other method to compare with
                row = {"experiment": exp, "archset": archset, "alpha": alpha, "d": d, "fusion": fusion, "versus": other}
                rows.append({**row, **paired_columns(mine, theirs, compared)})
    return holm_within_experiments(pd.DataFrame(rows), compared)


def holm_within_experiments(t: pd.DataFrame, compared: tuple[str, ...]) -> pd.DataFrame:
    """Adds ``{col}_p_holm`` and ``{col}_holds_holm``: each p-value adjusted by Holm's method over its
    experiment's family, every difference of the experiment's rows in every column of ``compared``
    (an experiment asks one question; the table asks many).  Rows with fewer than
    ``MIN_SEEDS_FOR_A_CLAIM`` pairs make no claim, so they are not in the family (NaN)."""
    if t.empty:
        return t
    t = t.copy()
    for col in compared:
        t[f"{col}_p_holm"] = math.nan
    claims = t["pairs"] >= MIN_SEEDS_FOR_A_CLAIM
    for _, rows in t[claims].groupby("experiment", sort=False):
        family = [(i, col) for col in compared for i in rows.index]
        for (i, col), p in zip(family, holm([t.at[i, f"{col}_p"] for i, col in family])):
            t.at[i, f"{col}_p_holm"] = p
    for col in compared:
        t[f"{col}_holds_holm"] = t[f"{col}_holds"] & (t[f"{col}_p_holm"] < 0.05)
    return t


# The settings a method is compared with itself over: same partition and seed, so pairs are fair
# (alpha changes the partition, so it is not one of them).
VARIED = ("d", "fusion")


def variants_table(runs: pd.DataFrame, defaults: dict, compared: tuple[str, ...] = COMPARED) -> pd.DataFrame:
    """For every method of an experiment that varies d or the fusion: each setting (the row's d and
    fusion) minus the same method at the study's default value of ``option`` (``reference``; from
    ``defaults``, e.g. ``{"d": [64], "fusion": ["add"]}``, or the smallest value run where the default
    was not), the other option held, paired over the seeds both ran, with its 95% t-interval, and
    the bytes each sends up per client and round."""
    rows = []
    for (exp, archset, alpha, method), cell in runs.groupby(["experiment", "archset", "alpha", "method"], sort=True):
        for option in VARIED:
            (fixed_option,) = [o for o in VARIED if o != option]
            for fixed, group in cell.groupby(fixed_option, sort=True):
                values = sorted(set(group[option]))
                if len(values) < 2:
                    continue
                reference = defaults[option][0] if defaults[option][0] in values else values[0]
                base = group[group[option] == reference]
                for value in values:
                    if value == reference:
                        continue
                    mine = group[group[option] == value]
                    row = {"experiment": exp, "archset": archset, "alpha": alpha, "method": method, option: value,
                           fixed_option: fixed, "option": option, "reference": reference}  # fmt: skip
                    row.update(paired_columns(mine, base, compared))
                    row["mb_up_per_client"] = mine["mb_up_per_client"].mean()
                    row["mb_up_per_client_reference"] = base["mb_up_per_client"].mean()
                    rows.append(row)
    return holm_within_experiments(pd.DataFrame(rows), compared)


def communication_table(runs: pd.DataFrame, costs: dict) -> pd.DataFrame:
    """Traffic per run averaged over all its rounds, then over seeds (a method whose payload changes
    from round to round, such as FedKD's, is not represented by one round)."""
    fedavg = {b["architecture"]: b["fedavg_payload_bytes_fp32"] / 1e6 for b in costs["backbones"]}
    per_run = runs.drop_duplicates("run")
    cols = ["mb_up_per_client", "mb_down_per_client", "mb_per_round"]
    first = per_run.groupby(["archset", "method", "d", "architectures"], sort=True)[cols].mean().reset_index()
    rows = []
    for _, r in first.iterrows():
        for arch in dict.fromkeys(r["architectures"].split()):
            full = fedavg.get(arch, math.nan)
            rows.append(
                {
                    "archset": r["archset"],
                    "method": r["method"],
                    "d": r["d"],
                    "backbone": arch,
                    "mb_up_per_client_per_round": r["mb_up_per_client"],
                    "mb_down_per_client_per_round": r["mb_down_per_client"],
                    "mb_per_round_all_clients": r["mb_per_round"],
                    "fedavg_mb_per_client_per_round": full,
                    "saved_vs_fedavg_pct": 100 * (1 - r["mb_up_per_client"] / full),
                }
            )
    return pd.DataFrame(rows)


def compute_table(costs: dict, throughput: pd.DataFrame) -> pd.DataFrame:
    rows = []
    measured = costs.get("provenance", {}).get("device", {}).get("name", "")
    for b in costs["backbones"]:
        arch = b["architecture"]
        row = {
            "backbone": arch,
            "parameters": b["parameters"],
            "gflops_train_per_sample": b["train_flops_per_sample"] / 1e9,
            f"gflops_with_unet_d{costs['d']}": b["train_flops_per_sample_with_unet"] / 1e9,
            "flops_ratio_with_unet": b["flops_ratio_with_unet"],
            "microbench_images_per_s": b.get("images_per_s", math.nan),
            "microbench_images_per_s_with_unet": b.get("images_per_s_with_unet", math.nan),
            "microbench_device": measured if "images_per_s" in b else "",
        }
        mine = throughput[throughput["architecture"] == arch]
        with_unet = mine[(mine["kind"] == "unet") & (mine["d"] == costs["d"])]
        plain = mine[mine["kind"] == "plain"]
        row["run_images_per_s_with_unet"] = _weighted_rate(with_unet)
        row["run_client_round_s_with_unet"] = with_unet["client_round_s"].mean() if len(with_unet) else math.nan
        row["run_images_per_s_plain"] = _weighted_rate(plain)
        row["run_client_round_s_plain"] = plain["client_round_s"].mean() if len(plain) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _weighted_rate(t: pd.DataFrame) -> float:
    return float(t["samples"].sum() / t["seconds"].sum()) if len(t) and t["seconds"].sum() > 0 else math.nan


def round_columns(rounds: list[int], most: int = 8) -> list[int]:
    """The evaluated rounds a by-round table shows: all of them, or at most ``most`` (the first three,
    then evenly spaced, always the last)."""
    rounds = sorted(rounds)
    if len(rounds) <= most:
        return rounds
    rest = rounds[3:]
    picks = {rest[round(i * (len(rest) - 1) / (most - 4))] for i in range(most - 3)}
    return rounds[:3] + sorted(picks)


def rounds_table(runs: pd.DataFrame, curves: pd.DataFrame, most: int = 8) -> pd.DataFrame:
    """Personalized accuracy after each (shown) round, mean over seeds, per cell; the maximum over
    rounds (HtFLlib's reported figure: chosen on the test split itself, so optimistic); time per
    round and training samples per second of the runs."""
    cells = runs[["run", *GROUP]]
    c = curves.merge(cells, on="run")
    shown = round_columns(c["round"].unique().tolist(), most)
    by_round = c[c["round"].isin(shown)].pivot_table(index=[*GROUP, "run"], columns="round", values="pers_acc")
    by_round.columns = [f"pers_acc_r{r}" for r in by_round.columns]
    by_round["pers_acc_max_over_rounds"] = c.groupby([*GROUP, "run"])["pers_acc"].max()
    t = by_round.groupby(GROUP, sort=True).mean()
    per_cell = runs.groupby(GROUP, sort=True)
    t["seeds"] = per_cell["seed"].nunique()
    t["seconds_per_round"] = per_cell["mean_round_s"].mean()
    t["train_samples_per_s"] = per_cell["train_samples_per_s"].mean()
    return t.reset_index()


def diagnostics_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The readings experiment: accuracy with both paths, each path alone, and their norms; where runs
    have it, the drop from mean-ablating the bottleneck (paired within each run) with its 95% t-interval."""
    exp = runs[runs["experiment"] == "readings"]
    cols = ["final_pers_acc", "final_global_acc", *DIAGNOSTICS, *[c for c in ABLATIONS if c in exp]]
    by = ["archset", "reading", "method"]
    t = exp.groupby(by, sort=True)[cols].agg(["mean", "std"])
    t.columns = [f"{a}_{b}" for a, b in t.columns]
    t["seeds"] = exp.groupby(by, sort=True)["seed"].nunique()
    t["diverged"] = exp.groupby(by, sort=True)["diverged"].sum().astype(int)
    if "pers_acc_no_bottleneck" in exp:  # what the block carries: the drop within each run, over seeds
        drops = (exp["final_pers_acc"] - exp["pers_acc_no_bottleneck"]).groupby([exp[c] for c in by], sort=True)
        intervals = drops.agg(lambda v: mean_interval(v.dropna().tolist())).reindex(t.index)
        t["bottleneck_drop_pts"] = [100 * i.mean for i in intervals]
        t["bottleneck_drop_ci_low"] = [100 * i.low for i in intervals]
        t["bottleneck_drop_ci_high"] = [100 * i.high for i in intervals]
        t["bottleneck_drop_holds"] = [i.excludes_zero for i in intervals]
    return t.reset_index()


def methods_table(runs: pd.DataFrame, acc: pd.DataFrame) -> pd.DataFrame:
    """Every method of each experiment with a baseline (``Method.baseline``; ``Study.experiments_with_baselines``
    names the table as a workflow output): both protocols and the traffic each costs, best global accuracy
    first within each cell of clients and label skew."""
    with_baseline = {e for e, m in zip(acc["experiment"], acc["method"]) if methods.get(m).baseline}
    t = acc[acc["experiment"].isin(with_baseline)].copy()
    traffic = runs.groupby(["archset", "method", "d", "fusion", "alpha"])[["mb_up_per_client", "mb_down_per_client"]].mean()
    t = t.join(traffic, on=["archset", "method", "d", "fusion", "alpha"])
    order = ["experiment", "archset", "alpha", "final_global_acc_mean"]
    return t.sort_values(order, ascending=[True, True, True, False]).reset_index(drop=True)


# ------------------------------------------------------------------ the paper's claims

# Seo, Lee, Park 2025 (arXiv 2508.12740), abstract: not ours, quoted for comparison.  `kind` names
# the function that puts our value beside the claim (CLAIM_KINDS below).
PAPER_CLAIMS = (
    {"claim": "accuracy, heterogeneous VGGs, standard module", "paper": 93.11, "unit": "%", "kind": "accuracy", "d": 1024},
    {"claim": "accuracy, heterogeneous VGGs, compact module", "paper": 92.68, "unit": "%", "kind": "accuracy", "d": 128},
    {"claim": "communication per round, compact module", "paper": 0.89, "unit": "MB", "kind": "bytes", "d": 128},
    {"claim": "communication per round, full synchronization", "paper": 56.66, "unit": "MB", "kind": "bytes", "d": 1024},
    {
        "claim": "communication saved by the compact module",
        "paper": 98.4,
        "unit": "%",
        "kind": "saving",
        "d": 128,
        "versus": 1024,
    },
)
PAPER_ARCHITECTURES = "vgg11 vgg13 vgg16 vgg19"  # "heterogeneous VGGs"
# Our accuracy columns read for an accuracy claim, in table order.
ACCURACY_PROTOCOLS = (
    ("final_global_acc", "global, final round"),
    ("final_pers_acc", "personalized, final round"),
    ("best_global_acc", "global, best round"),
)
# Our byte counts for a bytes claim (keys of costs.json's `unets`), in table order.
BYTE_MEASURES = (
    ("bottleneck_state_bytes", "bottleneck state_dict, fp32, d={d}"),
    ("payload_bytes_fp32", "serialized payload incl. header, d={d}"),
)
PAPER_VS_OURS_COLUMNS = ["claim", "paper", "ours", "ours_std", "unit", "protocol", "dataset", "source", "command"]
FROM_COSTS = {"source": "costs.json (fedunet info)", "command": "fedunet info"}


def _accuracy_rows(claim: dict, runs: pd.DataFrame, costs: dict, command: str, defaults: dict) -> list[dict]:
    """FedUNet on VGG11/13/16/19 at the claim's d and the study's default fusion and alpha (one
    configuration, mean over seeds), under each protocol; one "not run" row if the study lacks it."""
    fusion, alpha = defaults["fusion"][0], alpha_label(defaults["alpha"][0])
    subset = runs[
        (runs["method"] == "fedunet")
        & runs["architectures"].str.fullmatch(PAPER_ARCHITECTURES)
        & (runs["fusion"] == fusion)
        & (runs["alpha"] == alpha)
        & (runs["d"] == claim["d"])
    ].drop_duplicates("run")
    if subset.empty:
        protocol = f"not run in this study (needs fedunet, VGG11/13/16/19, d={claim['d']})"
        return [{"ours": math.nan, "protocol": protocol, "dataset": "", "source": "", "command": command}]
    return [
        {
            "ours": 100 * subset[col].mean(),
            "ours_std": 100 * subset[col].std(ddof=1) if len(subset) > 1 else 0.0,
            "protocol": f"{protocol}, mean ± std over {len(subset)} seeds, {fusion} fusion, {alpha}",
            "dataset": subset["dataset"].iloc[0],
            "source": f"runs/{subset['archset'].iloc[0]}/fedunet/d{claim['d']}-*",
            "command": command,
        }
        for col, protocol in ACCURACY_PROTOCOLS
    ]


ANY_INPUT = "any (independent of input)"


def _bytes_rows(claim: dict, runs: pd.DataFrame, costs: dict, command: str, defaults: dict) -> list[dict]:
    """Exact byte counts of the d-sized bottleneck, from the U-Net we build (no run needed)."""
    unet = _unet(costs, claim["d"])
    return [
        {"ours": unet[key] / 1e6, "protocol": protocol.format(d=claim["d"]), "dataset": ANY_INPUT, **FROM_COSTS}
        for key, protocol in BYTE_MEASURES
    ]


def _saving_rows(claim: dict, runs: pd.DataFrame, costs: dict, command: str, defaults: dict) -> list[dict]:
    """1 - payload(d) / payload(versus); and against the whole VGG16-BN where costs.json has the
    paper's geometry (3 channels, full width)."""
    d, versus = claim["d"], claim["versus"]
    payload = _unet(costs, d)["payload_bytes_fp32"]
    rows = [
        {
            "ours": 100 * (1 - payload / _unet(costs, versus)["payload_bytes_fp32"]),
            "protocol": f"1 - payload(d={d}) / payload(d={versus})",
            "dataset": "any",
            **FROM_COSTS,
        }
    ]
    vgg16 = next((b for b in costs["backbones"] if b["architecture"] == "vgg16"), None)
    if vgg16 is not None and costs["width"] == 1.0 and costs["geometry"][0] == 3:
        rows.append(
            {
                "ours": 100 * (1 - payload / vgg16["fedavg_payload_bytes_fp32"]),
                "protocol": f"1 - payload(d={d}) / whole VGG16-BN (58.9 MB)",
                "dataset": "any",
                **FROM_COSTS,
            }
        )
    return rows


def _unet(costs: dict, d: int) -> dict:
    return {u["d"]: u for u in costs["unets"]}[d]


CLAIM_KINDS = {"accuracy": _accuracy_rows, "bytes": _bytes_rows, "saving": _saving_rows}


def paper_vs_ours(runs: pd.DataFrame, costs: dict, command: str, defaults: dict, claims=PAPER_CLAIMS) -> pd.DataFrame:
    """Each claim of the paper next to our value(s), one row per way we measure it."""
    rows = []
    for claim in claims:
        quoted = {"claim": claim["claim"], "paper": claim["paper"], "unit": claim["unit"]}
        rows += [{**quoted, **ours} for ours in CLAIM_KINDS[claim["kind"]](claim, runs, costs, command, defaults)]
    return pd.DataFrame(rows).reindex(columns=PAPER_VS_OURS_COLUMNS)
