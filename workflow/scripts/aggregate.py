"""Aggregate finished runs into the study's tables (CSV + Markdown), with provenance.

This module does the I/O: it reads every run once (``summary.json``, ``metrics.csv``,
``clients.csv``), turns them into the long per-run tables below, hands those to the pure
builders of ``study_tables.py`` and the renderers of ``study_markdown.py``, and writes every
file atomically.  Tables (under ``<results>/<study>/tables/``):

* ``runs.csv``: one row per run and experiment (the long table the others derive from);
* ``curves.csv``: per run and evaluated round, both protocols (for the figures);
* ``per_architecture.csv``: final global accuracy of each backbone in each run;
* ``accuracy``, ``comparisons``, ``readings``, ``methods``, ``communication``, ``compute``,
  ``paper_vs_ours``: see ``study_tables.py``.

Every Markdown table ends with its provenance; ``provenance.json`` has it per run.  Run as a
Snakemake script (what it did goes to the rule's log), or import :func:`aggregate` from tests.
"""

import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import study_markdown as md
import study_tables as tables

from fedunet import summary as run_summary
from fedunet.metrics import LossReference
from fedunet.stats import flattened

log = logging.getLogger("aggregate")


# ------------------------------------------------------------------ reading runs


def load_runs(run_table: list[dict], runs_dir: Path) -> dict[str, dict]:
    """Every run's files, read once: ``{run: {"summary", "metrics", "clients"}}``."""
    loaded = {}
    for run in dict.fromkeys(e["run"] for e in run_table):
        d = runs_dir / run
        loaded[run] = {
            "summary": json.loads((d / "summary.json").read_text()),
            "metrics": pd.read_csv(d / "metrics.csv"),
            "clients": pd.read_csv(d / "clients.csv"),
        }
    return loaded


def run_rows(run_table: list[dict], loaded: dict[str, dict]) -> pd.DataFrame:
    rows = []
    facts = {run: _run_facts(files["summary"], files["metrics"]) for run, files in loaded.items()}
    for entry in run_table:
        s, f = loaded[entry["run"]]["summary"], facts[entry["run"]]
        final, acc, comm = run_summary.final(s), run_summary.final_accuracy(s), run_summary.communication(s)
        best = run_summary.best(s)  # None throughout when chosen on a test split (summaries before validation splits)
        rows.append(
            {
                **entry,
                "rounds": s["rounds"],
                "reading": _reading(s["config"]["model"]),
                "final_pers_acc": acc["pers_acc"],
                "final_pers_acc_client_std": acc["pers_acc_client_std"],
                "final_global_acc": acc["global_acc"],
                "best_round": best["round"],
                "best_val_acc": best["val_acc"],
                "best_pers_acc": best["pers_acc"],
                "best_global_acc": best["global_acc"],
                **{k: final.get(k) for k in tables.DIAGNOSTICS},
                "diverged": f["diverged"],
                "flattened": f["flattened"],
                "last5_change_pers_pts": 100 * f["delta_pers"],
                "last5_change_global_pts": 100 * f["delta_global"],
                "mb_per_round": f["mb_per_round"],
                "mb_up_per_client": f["mb_up_per_client"],
                "mb_down_per_client": f["mb_down_per_client"],
                "mb_round_total": final["mb_round_total"],
                "payload_bytes": comm["payload_bytes"],
                "shared_tensor_bytes": comm["shared_tensor_bytes"],
                "rejected_payloads": run_summary.rejected_payloads(s),
                **run_summary.timing(s),
                **run_summary.provenance(s),
                "dataset": s["dataset"],
            }
        )
    return pd.DataFrame(rows)


def _reading(model: dict) -> str:
    """The fusion reading of a run, ``mode-source-head`` (runs before readings existed: decoder-linear)."""
    return f"{model['fusion']}-{model.get('fusion_source', 'decoder')}-{model.get('fusion_head', 'linear')}"


def _run_facts(s: dict, m: pd.DataFrame) -> dict:
    """What the tables need beyond the summary, from the run's per-round metrics: divergence
    (flagged by the engine, or a final loss far above the first round's for runs made before the
    engine flagged it), whether the curves flattened, and traffic averaged over every round."""
    losses = m["train_loss"].tolist()
    reference = LossReference.of(losses, run_summary.divergence_factor(s))  # the engine's rule, on the round means
    flagged = run_summary.diverged(s)
    evaluated = m.dropna(subset=["pers_acc"])
    ok_p, delta_p = flattened(evaluated["pers_acc"].tolist())
    ok_g, delta_g = flattened(evaluated["global_acc"].tolist()) if "global_acc" in m else (True, math.nan)
    rounds, clients = len(m), len(s["clients"])
    senders = m["participants"].clip(lower=1)
    return {
        "diverged": bool(flagged or (reference.value is not None and reference.check(losses[-1]))),
        "flattened": bool(ok_p and ok_g),
        "delta_pers": delta_p,
        "delta_global": delta_g,
        # every byte of the run over its rounds (FedKD's payload changes from round to round)
        "mb_per_round": (m["bytes_up"].sum() + m["bytes_down"].sum() + run_summary.communication(s)["initial_sync_bytes"])
        / rounds
        / 1e6,
        "mb_up_per_client": float((m["bytes_up"] / senders).mean() / 1e6),
        "mb_down_per_client": float(m["bytes_down"].sum() / rounds / clients / 1e6),
    }


def curves(loaded: dict[str, dict]) -> pd.DataFrame:
    frames = []
    cols = ("round", "pers_acc", "val_acc", "global_acc", "train_loss", "mb_round_total", "time_round_s", *tables.DIAGNOSTICS)
    for run in sorted(loaded):
        m = loaded[run]["metrics"]
        m = m[[c for c in cols if c in m]].dropna(subset=["pers_acc"])
        m.insert(0, "run", run)
        frames.append(m)
    return pd.concat(frames, ignore_index=True)


def per_architecture(runs: pd.DataFrame, loaded: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for run in runs["run"].unique():
        for arch, value in run_summary.architecture_accuracies(loaded[run]["summary"]).items():
            rows.append({"run": run, "architecture": arch, "final_global_acc": value})
    return pd.DataFrame(rows, columns=["run", "architecture", "final_global_acc"])


def client_throughput(run_table: list[dict], loaded: dict[str, dict]) -> pd.DataFrame:
    """Training images/s per architecture, as measured inside the runs (per client, per round)."""
    frames = []
    for entry in {e["run"]: e for e in run_table}.values():
        c = loaded[entry["run"]]["clients"]
        if "time_train_s" not in c:
            continue
        model = run_summary.trained_models(loaded[entry["run"]]["summary"])
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


# ------------------------------------------------------------------ writing


def write(df: pd.DataFrame, out: Path, name: str, markdown: str | None) -> None:
    from fedunet.io import atomic_write_text

    atomic_write_text(out / f"{name}.csv", df.to_csv(index=False))
    if markdown is not None:
        atomic_write_text(out / f"{name}.md", markdown)
    log.info("wrote %s.csv (%d rows x %d columns)%s", name, len(df), len(df.columns), " and .md" if markdown else "")


def aggregate(run_table: list[dict], runs_dir: Path, out: Path, costs_path: Path, study: dict) -> None:
    from fedunet.io import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    costs = json.loads(Path(costs_path).read_text())
    loaded = load_runs(run_table, runs_dir)
    runs = run_rows(run_table, loaded)
    log.info("read %d runs (%d run x experiment rows) under %s; costs from %s", len(loaded), len(runs), runs_dir, costs_path)
    diverged = sorted(runs.loc[runs["diverged"], "run"].unique())
    if diverged:
        log.warning("%d run(s) flagged as diverged (kept in the means): %s", len(diverged), ", ".join(diverged))
    prov = provenance(runs, study, costs)
    command = f"snakemake --cores all --configfile {study['config_files'][0]}"

    write(runs, out, "runs", None)
    curve_rows = curves(loaded)
    write(curve_rows, out, "curves", None)
    by_round = tables.rounds_table(runs, curve_rows)
    write(by_round, out, "rounds", md.rounds_markdown(by_round, prov))
    write(per_architecture(runs, loaded), out, "per_architecture", None)
    acc = tables.accuracy_table(runs)
    write(acc, out, "accuracy", md.accuracy_markdown(acc, prov))
    comp_t = tables.comparisons_table(runs)
    if len(comp_t):
        write(comp_t, out, "comparisons", md.comparisons_markdown(comp_t, prov))
    else:
        log.info("no comparisons table: no experiment has FedUNet next to another method")
    experiments = set(runs["experiment"])
    if "readings" in experiments:
        diag = tables.diagnostics_table(runs)
        write(diag, out, "readings", md.readings_markdown(diag, prov))
    if "heterogeneous" in experiments:
        meth = tables.methods_table(runs, acc)
        write(meth, out, "methods", md.methods_markdown(meth, prov))
    comm = tables.communication_table(runs, costs)
    write(comm, out, "communication", md.communication_markdown(comm, prov))
    comp = tables.compute_table(costs, client_throughput(run_table, loaded))
    write(comp, out, "compute", md.compute_markdown(comp, costs["d"], prov))
    pvo = tables.paper_vs_ours(runs, costs, command, study["defaults"])
    write(pvo, out, "paper_vs_ours", md.paper_vs_ours_markdown(pvo, prov))
    per_run = {
        r["run"]: {k: r[k] for k in ("commit", "dirty", "device", "torch", "finished")}
        for _, r in runs.drop_duplicates("run").iterrows()
    }
    atomic_write_json(out / "provenance.json", {**prov, "per_run": per_run})
    log.info("wrote provenance.json (%d runs, commits %s)", prov["runs"], ", ".join(prov["commits"]))


def runs_dir_of(summaries: list[str], run_table: list[dict]) -> Path:
    """The directory all runs live in, from where the workflow put one run's summary:
    ``<runs_dir>/<run>/summary.json``."""
    run_dir = Path(summaries[0]).parent
    run = next(e["run"] for e in run_table if run_dir.as_posix().endswith("/" + e["run"]))
    return run_dir.parents[len(Path(run).parts) - 1]


def main(sm) -> None:
    logging.basicConfig(filename=sm.log[0], filemode="w", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # ours at INFO; pandas and others only warn
    try:
        summaries = list(sm.input.summaries)
        out = Path(sm.input.costs).parent  # costs.json sits among the tables
        aggregate(sm.params.runs, runs_dir_of(summaries, sm.params.runs), out, Path(sm.input.costs), sm.params.study)
    except Exception:
        log.exception("aggregation failed")
        raise


if "snakemake" in globals():
    main(globals()["snakemake"])
