"""Aggregate finished runs into the study's tables (CSV + Markdown), with provenance.

Tables (under ``<results>/<study>/tables/``):

* ``runs.csv``: one row per run and experiment (the long table the others derive from);
* ``curves.csv``: per run and evaluated round, both protocols (for the figures);
* ``per_architecture.csv``: final global accuracy of each backbone in each run;
* ``accuracy``: experiment x method x architecture set (x d, fusion, alpha), both
  protocols, final and best round, mean +- std over seeds;
* ``communication``: bytes per client per round and per round in total, against
  whole-model FedAvg of each backbone;
* ``compute``: training FLOPs per sample and measured throughput with and without the U-Net;
* ``paper_vs_ours``: each claim of the paper next to our value.

Every Markdown table ends with its provenance; ``provenance.json`` has it per run.
Run as a Snakemake script, or import :func:`aggregate` from tests.
"""

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from fedunet.metrics import divergence
from fedunet.stats import flattened, mean_interval, paired_difference
from fedunet.study import alpha_label

# The paper's claims (Seo, Lee, Park 2025, abstract): not ours, quoted for comparison.
PAPER_CLAIMS = [
    {"claim": "accuracy, heterogeneous VGGs, standard module", "paper": 93.11, "unit": "%", "kind": "accuracy", "d": 1024},
    {"claim": "accuracy, heterogeneous VGGs, compact module", "paper": 92.68, "unit": "%", "kind": "accuracy", "d": 128},
    {"claim": "communication per round, compact module", "paper": 0.89, "unit": "MB", "kind": "bytes", "d": 128},
    {"claim": "communication per round, full synchronization", "paper": 56.66, "unit": "MB", "kind": "bytes", "d": 1024},
    {"claim": "communication saved by the compact module", "paper": 98.4, "unit": "%", "kind": "saving"},
]
METRICS = {
    "final_pers_acc": "personalized, final",
    "final_global_acc": "global, final",
    "best_pers_acc": "personalized, at the validation-best round",
    "best_global_acc": "global, at the validation-best round",
}
# Diagnostics of the U-Net path (models with a U-Net), final round.
DIAGNOSTICS = ("pers_acc_backbone_only", "pers_acc_unet_only", "norm_backbone", "norm_unet")
GROUP = ["experiment", "archset", "method", "d", "fusion", "alpha"]


# ------------------------------------------------------------------ reading runs


def run_rows(run_table: list[dict], runs_dir: Path) -> pd.DataFrame:
    rows = []
    cache: dict[str, dict] = {}
    for entry in run_table:
        if entry["run"] not in cache:
            cache[entry["run"]] = _run_facts(runs_dir / entry["run"])
        s, facts = cache[entry["run"]]["summary"], cache[entry["run"]]
        final, best = s["final"], s["best"]
        # a best round chosen on a test split (summaries before validation splits) is not reported
        fair = best.get("selected_by") == "val_acc"
        prov = s["provenance"]
        rows.append(
            {
                **entry,
                "rounds": s["rounds"],
                "reading": _reading(s["config"]["model"]),
                "final_pers_acc": final.get("pers_acc"),
                "final_pers_acc_client_std": final.get("pers_acc_std"),
                "final_global_acc": final.get("global_acc"),
                "best_round": best.get("round") if fair else None,
                "best_val_acc": best.get("val_acc") if fair else None,
                "best_pers_acc": best.get("pers_acc") if fair else None,
                "best_global_acc": best.get("global_acc") if fair else None,
                **{k: final.get(k) for k in DIAGNOSTICS},
                "diverged": facts["diverged"],
                "flattened": facts["flattened"],
                "last5_change_pers_pts": 100 * facts["delta_pers"],
                "last5_change_global_pts": 100 * facts["delta_global"],
                "mb_per_round": facts["mb_per_round"],
                "mb_up_per_client": facts["mb_up_per_client"],
                "mb_down_per_client": facts["mb_down_per_client"],
                "mb_round_total": final["mb_round_total"],
                "payload_bytes": s["communication"]["payload_bytes_up_per_client"],
                "shared_tensor_bytes": s["communication"]["shared_tensor_bytes"],
                "rejected_payloads": sum(1 for e in s["events"] if e["event"] == "payload_rejected"),
                "wall_s": s["timing"]["wall_s"],
                "mean_round_s": s["timing"]["mean_round_s"],
                "commit": (prov["git"]["commit"] or "")[:12],
                "dirty": prov["git"]["dirty"],
                "device": prov["device"]["name"],
                "cpu_capability": prov["device"].get("cpu_capability", ""),
                "torch": prov["packages"]["torch"],
                "finished": prov["finished"],
                "dataset": s["dataset"],
            }
        )
    return pd.DataFrame(rows)


def _reading(model: dict) -> str:
    """The fusion reading of a run, ``mode-source-head`` (runs before readings existed: decoder-linear)."""
    return f"{model['fusion']}-{model.get('fusion_source', 'decoder')}-{model.get('fusion_head', 'linear')}"


def _run_facts(run: Path) -> dict:
    """What the tables need beyond the summary, from the run's per-round metrics: divergence
    (flagged by the engine, or a final loss far above the first round's for runs made before the
    engine flagged it), whether the curves flattened, and traffic averaged over every round."""
    s = json.loads((run / "summary.json").read_text())
    m = pd.read_csv(run / "metrics.csv")
    factor = s["config"]["federated"].get("divergence_factor", 10)
    losses = m["train_loss"].tolist()
    first = next((v for v in losses if math.isfinite(v)), None)
    flagged = s.get("diverged", {}).get("any") or any(e["event"] == "diverged" for e in s["events"])
    evaluated = m.dropna(subset=["pers_acc"])
    ok_p, delta_p = flattened(evaluated["pers_acc"].tolist())
    ok_g, delta_g = flattened(evaluated["global_acc"].tolist()) if "global_acc" in m else (True, math.nan)
    rounds, clients = len(m), len(s["clients"])
    senders = m["participants"].clip(lower=1)
    return {
        "summary": s,
        "diverged": bool(flagged or (first is not None and divergence(losses[-1], first, factor))),
        "flattened": bool(ok_p and ok_g),
        "delta_pers": delta_p,
        "delta_global": delta_g,
        # every byte of the run over its rounds (FedKD's payload changes from round to round)
        "mb_per_round": (m["bytes_up"].sum() + m["bytes_down"].sum() + s["communication"].get("initial_sync_bytes", 0))
        / rounds
        / 1e6,
        "mb_up_per_client": float((m["bytes_up"] / senders).mean() / 1e6),
        "mb_down_per_client": float(m["bytes_down"].sum() / rounds / clients / 1e6),
    }


def curves(run_table: list[dict], runs_dir: Path) -> pd.DataFrame:
    frames = []
    for run in sorted({e["run"] for e in run_table}):
        m = pd.read_csv(runs_dir / run / "metrics.csv")
        cols = ("round", "pers_acc", "val_acc", "global_acc", "train_loss", "mb_round_total", "time_round_s", *DIAGNOSTICS)
        keep = [c for c in cols if c in m]
        m = m[keep].dropna(subset=["pers_acc"])
        m.insert(0, "run", run)
        frames.append(m)
    return pd.concat(frames, ignore_index=True)


def per_architecture(runs: pd.DataFrame, runs_dir: Path) -> pd.DataFrame:
    rows = []
    for run in runs["run"].unique():
        final = json.loads((runs_dir / run / "summary.json").read_text())["final"]
        for key, value in final.items():
            if key.startswith("global_acc_") and key != "global_acc_std":
                rows.append({"run": run, "architecture": key[len("global_acc_") :], "final_global_acc": value})
    return pd.DataFrame(rows, columns=["run", "architecture", "final_global_acc"])


def client_throughput(run_table: list[dict], runs_dir: Path) -> pd.DataFrame:
    """Training images/s per architecture, as measured inside the runs (per client, per round)."""
    frames = []
    for entry in {e["run"]: e for e in run_table}.values():
        c = pd.read_csv(runs_dir / entry["run"] / "clients.csv")
        if "time_train_s" not in c:
            continue
        model = json.loads((runs_dir / entry["run"] / "summary.json").read_text())["model"]
        # "unet": backbone + U-Net; "plain": the backbone alone; runs training extra models are left out
        kind = "unet" if model["unet"] else ("plain" if not model["aux_models"] else None)
        if kind is None:
            continue
        c = c[c["participated"].astype(str) == "True"]
        frames.append(c.assign(kind=kind, d=entry["d"])[["architecture", "kind", "d", "train_samples", "time_train_s"]])
    if not frames:
        return pd.DataFrame(columns=["architecture", "kind", "d", "samples", "seconds", "images_per_s", "client_round_s"])
    c = pd.concat(frames)
    g = c.groupby(["architecture", "kind", "d"])
    return (
        g.agg(samples=("train_samples", "sum"), seconds=("time_train_s", "sum"), client_round_s=("time_train_s", "mean"))
        .assign(images_per_s=lambda t: t["samples"] / t["seconds"])
        .reset_index()
    )


# ------------------------------------------------------------------ tables


def accuracy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and 95% t-interval half-width over seeds, every run included (diverged ones too:
    they are counted in ``diverged``, never dropped), with how many runs' curves flattened."""
    agg = {}
    for col in METRICS:
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


def comparisons_table(runs: pd.DataFrame, reference: str = "fedunet") -> pd.DataFrame:
    """For every FedUNet cell and every other method of its experiment: the paired difference
    (FedUNet - X, in points) over the seeds both ran, with its 95% t-interval."""
    rows = []
    keys = ["experiment", "archset", "alpha"]
    for (exp, archset, alpha), cell in runs.groupby(keys, sort=True):
        ours = cell[cell["method"] == reference]
        for (d, fusion), mine in ours.groupby(["d", "fusion"], sort=True):
            for other in sorted(set(cell["method"]) - {reference}):
                theirs = cell[cell["method"] == other]
                same = theirs[(theirs["d"] == d) & (theirs["fusion"] == fusion)]
                theirs = same if len(same) else theirs[theirs["fusion"] == theirs["fusion"].iloc[0]]
                if theirs["d"].nunique() > 1 or theirs["fusion"].nunique() > 1:
                    continue  # no single configuration of the other method to compare with
                row = {"experiment": exp, "archset": archset, "alpha": alpha, "d": d, "fusion": fusion, "versus": other}
                for col in COMPARED:
                    diff = paired_difference(
                        dict(zip(mine["seed"], mine[col])), dict(zip(theirs["seed"], theirs[col]))
                    )
                    row.update(
                        {
                            f"{col}_diff_pts": 100 * diff.mean,
                            f"{col}_ci_low": 100 * diff.low,
                            f"{col}_ci_high": 100 * diff.high,
                            f"{col}_holds": diff.excludes_zero,
                        }
                    )
                row["pairs"] = diff.n
                row["diverged"] = f"{int(mine['diverged'].sum())}/{int(theirs['diverged'].sum())}"
                rows.append(row)
    return pd.DataFrame(rows)


def comparisons_markdown(t: pd.DataFrame, prov: dict) -> str:
    show = t[["experiment", "archset", "alpha", "d", "fusion", "versus", "pairs", "diverged"]].copy()
    for col, label in (("final_pers_acc", "personalized"), ("final_global_acc", "global")):
        show[f"FedUNet - X, {label} (pts, 95% CI)"] = [
            "-" if math.isnan(m) else f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]{' *' if holds else ''}"
            for m, lo, hi, holds in zip(
                t[f"{col}_diff_pts"], t[f"{col}_ci_low"], t[f"{col}_ci_high"], t[f"{col}_holds"]
            )
        ]
    note = (
        "Paired differences of final-round accuracy, FedUNet minus the method in `versus`, over the seeds both ran "
        "(same partition and seed), in percentage points with a 95% Student-t interval; `*` marks an interval that "
        "excludes zero. `diverged`: runs flagged as diverged, FedUNet/other (they stay in the difference)."
    )
    return markdown(show, "FedUNet against each method (paired over seeds)", note, prov)


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


def paper_vs_ours(runs: pd.DataFrame, costs: dict, command: str, defaults: dict) -> pd.DataFrame:
    """The paper's claims next to ours: accuracy of FedUNet on VGG11/13/16/19 at the study's
    default fusion and alpha (one configuration, mean over seeds), bytes from exact arithmetic."""
    unets = {u["d"]: u for u in costs["unets"]}
    rows = []
    alpha = alpha_label(defaults["alpha"][0])
    hetero = runs[
        (runs["method"] == "fedunet")
        & runs["architectures"].str.fullmatch("vgg11 vgg13 vgg16 vgg19")
        & (runs["fusion"] == defaults["fusion"][0])
        & (runs["alpha"] == alpha)
    ]
    for claim in PAPER_CLAIMS:
        base = {"claim": claim["claim"], "paper": claim["paper"], "unit": claim["unit"]}
        if claim["kind"] == "accuracy":
            subset = hetero[hetero["d"] == claim["d"]].drop_duplicates("run")
            if subset.empty:
                rows.append(
                    {
                        **base,
                        "ours": math.nan,
                        "protocol": f"not run in this study (needs fedunet, VGG11/13/16/19, d={claim['d']})",
                        "dataset": "",
                        "source": "",
                        "command": command,
                    }
                )
                continue
            for col, protocol in (
                ("final_global_acc", "global, final round"),
                ("final_pers_acc", "personalized, final round"),
                ("best_global_acc", "global, best round"),
            ):
                rows.append(
                    {
                        **base,
                        "ours": 100 * subset[col].mean(),
                        "ours_std": 100 * subset[col].std(ddof=1) if len(subset) > 1 else 0.0,
                        "protocol": f"{protocol}, mean ± std over {len(subset)} seeds, {defaults['fusion'][0]} fusion, {alpha}",
                        "dataset": subset["dataset"].iloc[0],
                        "source": f"runs/{subset['archset'].iloc[0]}/fedunet/d{claim['d']}-*",
                        "command": command,
                    }
                )
        elif claim["kind"] == "bytes":
            u = unets[claim["d"]]
            rows.append(
                {
                    **base,
                    "ours": u["bottleneck_state_bytes"] / 1e6,
                    "protocol": f"bottleneck state_dict, fp32, d={claim['d']}",
                    "dataset": "any (independent of input)",
                    "source": "costs.json (fedunet info)",
                    "command": "fedunet info",
                }
            )
            rows.append(
                {
                    **base,
                    "ours": u["payload_bytes_fp32"] / 1e6,
                    "protocol": f"serialized payload incl. header, d={claim['d']}",
                    "dataset": "any (independent of input)",
                    "source": "costs.json (fedunet info)",
                    "command": "fedunet info",
                }
            )
        else:
            saving = 100 * (1 - unets[128]["payload_bytes_fp32"] / unets[1024]["payload_bytes_fp32"])
            rows.append(
                {
                    **base,
                    "ours": saving,
                    "protocol": "1 - payload(d=128) / payload(d=1024)",
                    "dataset": "any",
                    "source": "costs.json (fedunet info)",
                    "command": "fedunet info",
                }
            )
            vgg16 = next((b for b in costs["backbones"] if b["architecture"] == "vgg16"), None)
            if vgg16 is not None and costs["width"] == 1.0 and costs["geometry"][0] == 3:
                rows.append(
                    {
                        **base,
                        "ours": 100 * (1 - unets[128]["payload_bytes_fp32"] / vgg16["fedavg_payload_bytes_fp32"]),
                        "protocol": "1 - payload(d=128) / whole VGG16-BN (58.9 MB)",
                        "dataset": "any",
                        "source": "costs.json (fedunet info)",
                        "command": "fedunet info",
                    }
                )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ writing


def provenance(runs: pd.DataFrame, study: dict, costs: dict) -> dict:
    return {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "study": study["name"],
        "config_files": study["config_files"],
        "runs": len(runs["run"].unique()),
        "commits": sorted(set(runs["commit"])),
        "dirty_runs": int(runs.drop_duplicates("run")["dirty"].fillna(False).astype(bool).sum()),
        "devices": sorted(set(runs["device"])),
        "torch": sorted(set(runs["torch"])),
        "datasets": sorted(set(runs["dataset"])),
        "seeds": sorted(int(s) for s in set(runs["seed"])),
        "runs_finished": [min(runs["finished"]), max(runs["finished"])],
        "costs": costs.get("provenance", {}),
    }


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
    return (
        f"*Ours, produced by the pipeline (workflow/scripts/aggregate.py) on {prov['generated']} from {prov['runs']} runs "
        f"of study `{prov['study']}` ({', '.join(prov['config_files'])}); datasets: {', '.join(prov['datasets'])}; "
        f"seeds {prov['seeds']}; commits {', '.join(prov['commits'])}{dirty}; devices: {'; '.join(prov['devices'])}; "
        f"torch {', '.join(prov['torch'])}. Per-run provenance: provenance.json.*"
    )


ACCURACY_NOTE = (
    "Accuracy (%) as mean ± std over seeds (sample std). Personalized: each client on its own held-out split, "
    "sample-weighted (HtFLlib protocol). Global: each client model on the full test set, averaged over clients "
    "(NIID-Bench protocol). The final round is the primary figure; the best round is chosen on validation splits "
    "carved from each client's training data, never on either test set (HtFLlib picks it on the test split). "
    "`diverged`: runs flagged as diverged (kept in the mean); `flattened`: runs whose last-5-round mean moved "
    "< 0.5 point from the 5 rounds before, on both protocols."
)


def _with_accuracy_columns(show: pd.DataFrame, t: pd.DataFrame) -> pd.DataFrame:
    for col, label in METRICS.items():
        show[label + " (%)"] = [
            "-" if math.isnan(m) else f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(t[f"{col}_mean"], t[f"{col}_std"])
        ]
    return show


def accuracy_markdown(t: pd.DataFrame, prov: dict) -> str:
    show = t[GROUP + ["seeds", "rounds", "diverged", "flattened"]].copy()
    return markdown(_with_accuracy_columns(show, t), "Accuracy", ACCURACY_NOTE, prov)


def diagnostics_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The readings experiment: accuracy with both paths, each path alone, and their norms."""
    exp = runs[runs["experiment"] == "readings"]
    cols = ["final_pers_acc", "final_global_acc", *DIAGNOSTICS]
    by = ["archset", "reading", "method"]
    t = exp.groupby(by, sort=True)[cols].agg(["mean", "std"])
    t.columns = [f"{a}_{b}" for a, b in t.columns]
    t["seeds"] = exp.groupby(by, sort=True)["seed"].nunique()
    t["diverged"] = exp.groupby(by, sort=True)["diverged"].sum().astype(int)
    return t.reset_index()


def readings_markdown(t: pd.DataFrame, prov: dict) -> str:
    show = t[["archset", "reading", "method", "seeds", "diverged"]].copy()
    for col, label in (
        ("final_pers_acc", "personalized (%)"),
        ("final_global_acc", "global (%)"),
        ("pers_acc_backbone_only", "backbone path alone (%)"),
        ("pers_acc_unet_only", "U-Net path alone (%)"),
    ):
        show[label] = [
            "-" if pd.isna(m) else f"{100 * m:.2f} ± {100 * (0 if pd.isna(s) else s):.2f}"
            for m, s in zip(t[f"{col}_mean"], t[f"{col}_std"])
        ]
    show["U-Net / backbone norm"] = [
        "-" if pd.isna(u) else f"{u / b:.3f}" for u, b in zip(t["norm_unet_mean"], t["norm_backbone_mean"])
    ]
    note = (
        "Fusion readings (`mode-source-head`, see the README): final round, mean ± std over seeds. Each path alone: "
        "personalized accuracy with the other path zeroed at the classifier input. Norm ratio: mean L2 norm of the "
        "U-Net's contribution over the backbone's at the classifier input. `local` trains the same model without sharing."
    )
    return markdown(show, "Fusion readings and whether the U-Net path is used", note, prov)


def methods_table(runs: pd.DataFrame, acc: pd.DataFrame) -> pd.DataFrame:
    """Every method of the heterogeneous experiment: both protocols and the traffic it costs."""
    t = acc[acc["experiment"] == "heterogeneous"].copy()
    traffic = runs.groupby(["archset", "method", "d", "fusion", "alpha"])[["mb_up_per_client", "mb_down_per_client"]].mean()
    t = t.join(traffic, on=["archset", "method", "d", "fusion", "alpha"])
    return t.sort_values(["archset", "final_global_acc_mean"], ascending=[True, False]).reset_index(drop=True)


def methods_markdown(t: pd.DataFrame, prov: dict) -> str:
    show = t[["archset", "method", "seeds", "rounds"]].copy()
    show = _with_accuracy_columns(show, t)
    show["MB up / client / round"] = [f"{v:.4g}" for v in t["mb_up_per_client"]]
    show["MB down / client / round"] = [f"{v:.4g}" for v in t["mb_down_per_client"]]
    note = (
        "Every method in the heterogeneous experiment, sorted by final global accuracy within each set of client "
        "architectures. " + ACCURACY_NOTE + " Traffic: lengths of the real serialized payloads (MB = 10^6 bytes)."
    )
    return markdown(show, "Methods", note, prov)


def write(df: pd.DataFrame, tables: Path, name: str, md: str | None) -> None:
    from fedunet.io import atomic_write_text

    atomic_write_text(tables / f"{name}.csv", df.to_csv(index=False))
    if md is not None:
        atomic_write_text(tables / f"{name}.md", md)


def aggregate(run_table: list[dict], runs_dir: Path, tables: Path, costs_path: Path, study: dict) -> None:
    from fedunet.io import atomic_write_json

    tables.mkdir(parents=True, exist_ok=True)
    costs = json.loads(Path(costs_path).read_text())
    runs = run_rows(run_table, runs_dir)
    prov = provenance(runs, study, costs)
    command = f"snakemake --cores all --configfile {study['config_files'][0]}"

    write(runs, tables, "runs", None)
    write(curves(run_table, runs_dir), tables, "curves", None)
    write(per_architecture(runs, runs_dir), tables, "per_architecture", None)
    acc = accuracy_table(runs)
    write(acc, tables, "accuracy", accuracy_markdown(acc, prov))
    comp_t = comparisons_table(runs)
    if len(comp_t):
        write(comp_t, tables, "comparisons", comparisons_markdown(comp_t, prov))
    if "readings" in set(runs["experiment"]):
        diag = diagnostics_table(runs)
        write(diag, tables, "readings", readings_markdown(diag, prov))
    if "heterogeneous" in set(runs["experiment"]):
        meth = methods_table(runs, acc)
        write(meth, tables, "methods", methods_markdown(meth, prov))
    comm = communication_table(runs, costs)
    write(
        comm,
        tables,
        "communication",
        markdown(
            comm,
            "Communication",
            "MB = 10^6 bytes of the real serialized payloads, per client per round (up, down) and per "
            "round over all clients. FedAvg = the whole backbone + classifier of that client sent instead (fp32).",
            prov,
        ),
    )
    comp = compute_table(costs, client_throughput(run_table, runs_dir))
    write(
        comp,
        tables,
        "compute",
        markdown(
            comp,
            "Compute",
            f"Training FLOPs per sample (forward + backward, torch FlopCounterMode) of each backbone alone and "
            f"with the d={costs['d']} U-Net; images/s from a microbenchmark (`fedunet info --measure`, batch 64) and as "
            "measured inside the study's runs (per client, local training only). The U-Net is light in traffic, not in compute.",
            prov,
        ),
    )
    pvo = paper_vs_ours(runs, costs, command, study["defaults"])
    pvo = pvo.reindex(columns=["claim", "paper", "ours", "ours_std", "unit", "protocol", "dataset", "source", "command"])
    write(
        pvo,
        tables,
        "paper_vs_ours",
        markdown(
            pvo,
            "Paper vs ours",
            "`paper`: the values stated by Seo, Lee, Park (arXiv 2508.12740), not reproduced by us. "
            "`ours`: produced by this pipeline; accuracy on our dataset and protocol (see columns), so a gap may reflect the "
            "dataset and settings rather than the method.",
            prov,
        ),
    )
    per_run = {
        r["run"]: {k: r[k] for k in ("commit", "dirty", "device", "torch", "finished")}
        for _, r in runs.drop_duplicates("run").iterrows()
    }
    atomic_write_json(tables / "provenance.json", {**prov, "per_run": per_run})


if "snakemake" in globals():
    sm = globals()["snakemake"]
    aggregate(sm.params.runs, Path(sm.params.runs_dir), Path(sm.params.tables), Path(sm.input.costs), sm.params.study)
