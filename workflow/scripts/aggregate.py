"""Aggregate finished runs into the study's tables (CSV + Markdown), with provenance.

This module does the I/O: it reads every run once (``summary.json``, ``metrics.csv``,
``clients.csv``), turns them into the long per-run tables below, hands those to the pure
builders of ``study_tables.py`` and the renderers of ``study_markdown.py``, and writes every
file atomically.  Tables (under ``<results>/<study>/tables/``):

* ``runs.csv``: one row per run and experiment (the long table the others derive from);
* ``curves.csv``: per run and evaluated round, both protocols (for the figures);
* ``per_architecture.csv``: final global accuracy of each backbone in each run;
* ``accuracy``, ``comparisons``, ``readings``, ``methods``, ``communication``, ``compute``,
  ``paper_vs_ours``: see ``study_tables.py``;
* with segmentation runs (a segmentation dataset, ``fedunet.summary.task``): ``segmentation_runs.csv``,
  ``segmentation_curves.csv``, ``segmentation`` (mIoU and pixel accuracy per cell) and
  ``segmentation_comparisons.csv`` (FedUNet minus each method, paired over seeds).  The classification
  tables above hold the classification runs only (their footers too), so adding a segmentation
  experiment to a study changes none of them.

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
from study_tables import SEGMENTATION_COMPARED, SEGMENTATION_METRICS

from fedunet import methods
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
    for entry in run_table:
        s = loaded[entry["run"]]["summary"]
        acc = run_summary.final_accuracy(s)
        best = run_summary.best(s)  # None throughout when chosen on a test split (summaries before validation splits)
        scores = {
            "final_pers_acc": acc["pers_acc"],
            "final_pers_acc_client_std": acc["pers_acc_client_std"],
            "final_global_acc": acc["global_acc"],
            "best_round": best["round"],
            "best_val_acc": best["val_acc"],
            "best_pers_acc": best["pers_acc"],
            "best_global_acc": best["global_acc"],
            **{k: run_summary.final(s).get(k) for k in tables.DIAGNOSTICS},
            **{k: v for k in tables.ABLATIONS if (v := run_summary.final(s).get(k)) is not None},
        }
        rows.append(_row(entry, loaded[entry["run"]], scores, ("pers_acc", "global_acc")))
    return pd.DataFrame(rows)


def segmentation_rows(run_table: list[dict], loaded: dict[str, dict]) -> pd.DataFrame:
    """One row per segmentation run and experiment: mIoU and pixel accuracy under both protocols at
    the last round and at the validation-best round (chosen on ``val_miou``), then what every run has."""
    rows = []
    for entry in run_table:
        s = loaded[entry["run"]]["summary"]
        final, best = run_summary.final_segmentation(s), run_summary.best(s)
        scores = {f"final_{k}": final[k] for k in ("pers_miou", "pers_pixel_acc", "global_miou", "global_pixel_acc")}
        scores["final_pers_miou_client_std"] = final["pers_miou_std"]
        scores.update({f"best_{k}": v for k, v in best.items()})
        scores.update({k: run_summary.final(s).get(k) for k in tables.SEGMENTATION_DIAGNOSTICS})
        rows.append(_row(entry, loaded[entry["run"]], scores, ("pers_miou", "global_miou")))
    return pd.DataFrame(rows)


def _row(entry: dict, files: dict, scores: dict, protocols: tuple[str, str]) -> dict:
    """A run's row: its grid point, its scores, then divergence, convergence, traffic, timing and
    provenance (read the same way for every task; ``protocols``: the personalized and global score)."""
    s = files["summary"]
    f = _run_facts(s, files["metrics"], files["clients"], *protocols)
    final, comm = run_summary.final(s), run_summary.communication(s)
    return {
        **entry,
        "rounds": s["rounds"],
        "reading": _reading(s["config"]["model"]),
        "unet": methods.attaches_unet(s["config"]["method"], s["config"]["model"]["unet"]["attach"]),
        **scores,
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


def _reading(model: dict) -> str:
    """The fusion reading of a run, ``mode-source-head`` (runs before readings existed: decoder-linear)."""
    return f"{model['fusion']}-{model.get('fusion_source', 'decoder')}-{model.get('fusion_head', 'linear')}"


def _run_facts(s: dict, m: pd.DataFrame, c: pd.DataFrame, pers: str = "pers_acc", glob: str = "global_acc") -> dict:
    """What the tables need beyond the summary, from the run's per-round metrics (``m``) and per-client
    rows (``c``): divergence (the engine's rule replayed on each client's losses, so that every run,
    whenever it was made, is judged by today's rule; and a final round mean far above the first
    rounds'), whether the curves (``pers``, ``glob``) flattened, and traffic averaged over every round."""
    factor, floor = run_summary.divergence_factor(s), run_summary.chance_loss(s)
    losses = m["train_loss"].tolist()
    reference = LossReference.of(losses, factor, floor)  # the engine's rule, on the round means
    trained = c[c["participated"].astype(bool)].sort_values("round")
    flagged = any(
        LossReference.first_divergence(series.tolist(), factor, floor) for _, series in trained.groupby("client")["train_loss"]
    )
    evaluated = m.dropna(subset=[pers])
    ok_p, delta_p = flattened(evaluated[pers].tolist())
    ok_g, delta_g = flattened(evaluated[glob].tolist()) if glob in m else (True, math.nan)
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


CURVES = ("round", "pers_acc", "val_acc", "global_acc", "train_loss", "mb_round_total", "time_round_s", *tables.DIAGNOSTICS,
          *tables.ABLATIONS)
SEGMENTATION_CURVES = (
    "round", "pers_miou", "pers_pixel_acc", "val_miou", "global_miou", "global_pixel_acc", "train_loss",
    "mb_round_total", "time_round_s", *tables.SEGMENTATION_DIAGNOSTICS,
)  # fmt: skip


def curves(loaded: dict[str, dict], cols: tuple[str, ...] = CURVES) -> pd.DataFrame:
    """Every evaluated round of every run: the columns ``cols`` of its metrics.csv."""
    frames = []
    for run in sorted(loaded):
        m = loaded[run]["metrics"]
        m = m[[c for c in cols if c in m]].dropna(subset=[cols[1]])
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


def provenance(runs: pd.DataFrame, study: dict, costs: dict, task: str | None = "classification") -> dict:
    """What every table's footer and provenance.json say; ``planned_runs``: the study's runs of ``task``
    (of every task when ``None``), more than ``runs`` when the tables hold the runs finished so far."""
    planned = study.get("planned_runs", {})
    return {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "study": study["name"],
        "config_files": study["config_files"],
        "runs": len(runs["run"].unique()),
        "planned_runs": (planned.get(task) if task else sum(planned.values())) or len(runs["run"].unique()),
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


def aggregate(run_table: list[dict], runs_dir: Path, out: Path, costs_path: Path | None, study: dict) -> None:
    """Every table of a study; ``costs_path`` (``fedunet info``'s costs.json) is needed for the
    classification tables only."""
    from fedunet.io import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    loaded = load_runs(run_table, runs_dir)
    log.info("read %d runs (%d run x experiment rows) under %s; costs from %s", len(loaded), len(run_table), runs_dir, costs_path)
    segmentation = {run for run, files in loaded.items() if run_summary.task(files["summary"]) == "segmentation"}
    seg_table = [e for e in run_table if e["run"] in segmentation]
    cls_table = [e for e in run_table if e["run"] not in segmentation]
    frames = []
    if cls_table:
        costs = json.loads(Path(costs_path).read_text())
        cls_loaded = {run: files for run, files in loaded.items() if run not in segmentation}
        frames.append(classification_tables(cls_table, cls_loaded, out, costs, study))
    else:
        costs = {}
    if seg_table:
        seg_loaded = {run: files for run, files in loaded.items() if run in segmentation}
        frames.append(segmentation_tables(seg_table, seg_loaded, out, study))
    runs = pd.concat(frames, ignore_index=True)
    prov = provenance(runs, study, costs, task=None)
    if "planned_by_experiment" in study:
        progress = tables.progress_table(runs, study["planned_by_experiment"], study.get("questions"))
        write(progress, out, "progress", md.progress_markdown(progress, prov))
    per_run = {
        r["run"]: {k: r[k] for k in ("commit", "dirty", "device", "torch", "finished")}
        for _, r in runs.drop_duplicates("run").iterrows()
    }
    atomic_write_json(out / "provenance.json", {**prov, "per_run": per_run})
    log.info("wrote provenance.json (%d runs, commits %s)", prov["runs"], ", ".join(prov["commits"]))


def _warn_diverged(runs: pd.DataFrame) -> None:
    diverged = sorted(runs.loc[runs["diverged"], "run"].unique())
    if diverged:
        log.warning("%d run(s) flagged as diverged (kept in the means): %s", len(diverged), ", ".join(diverged))


def segmentation_tables(run_table: list[dict], loaded: dict[str, dict], out: Path, study: dict) -> pd.DataFrame:
    """The segmentation runs' tables (their footers name these runs only); returns their rows."""
    runs = segmentation_rows(run_table, loaded)
    _warn_diverged(runs)
    prov = provenance(runs, study, {}, "segmentation")
    write(runs, out, "segmentation_runs", None)
    write(curves(loaded, SEGMENTATION_CURVES), out, "segmentation_curves", None)
    cells = tables.segmentation_table(runs)
    comparisons = tables.comparisons_table(runs, compared=SEGMENTATION_COMPARED)
    write(cells, out, "segmentation", md.segmentation_markdown(cells, comparisons, prov))
    write(comparisons, out, "segmentation_comparisons", None)
    log.info("segmentation: %d runs; metrics %s", runs["run"].nunique(), ", ".join(SEGMENTATION_METRICS))
    return runs


def classification_tables(run_table: list[dict], loaded: dict[str, dict], out: Path, costs: dict, study: dict) -> pd.DataFrame:
    """The classification runs' tables; returns their rows."""
    runs = run_rows(run_table, loaded)
    _warn_diverged(runs)
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
    variants = tables.variants_table(runs, study["defaults"])
    if len(variants):
        write(variants, out, "variants", md.variants_markdown(variants, prov))
    experiments = set(runs["experiment"])
    if "readings" in experiments:
        diag = tables.diagnostics_table(runs)
        write(diag, out, "readings", md.readings_markdown(diag, prov))
    meth = tables.methods_table(runs, acc)
    if len(meth):
        write(meth, out, "methods", md.methods_markdown(meth, prov))
    comm = tables.communication_table(runs, costs)
    write(comm, out, "communication", md.communication_markdown(comm, prov))
    comp = tables.compute_table(costs, client_throughput(run_table, loaded))
    write(comp, out, "compute", md.compute_markdown(comp, costs["d"], prov))
    pvo = tables.paper_vs_ours(runs, costs, command, study["defaults"])
    write(pvo, out, "paper_vs_ours", md.paper_vs_ours_markdown(pvo, prov))
    return runs


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
        costs = Path(sm.input.costs[0]) if len(sm.input.costs) else None  # none: segmentation runs only
        aggregate(sm.params.runs, runs_dir_of(summaries, sm.params.runs), Path(sm.params.tables), costs, sm.params.study)
    except Exception:
        log.exception("aggregation failed")
        raise


if "snakemake" in globals():
    main(globals()["snakemake"])
