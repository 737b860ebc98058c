"""A study: named experiments, each a small grid, expanded into one run config per job.

The workflow (``workflow/Snakefile``) and the tests use this module; it opens no dataset and
trains nothing, so expanding hundreds of runs takes well under a second.

Grid axes: architecture set x method x bottleneck size d x fusion x Dirichlet alpha
(or ``iid``) x seed.  An experiment lists the axes it varies; the others take the
study's ``defaults``.  Runs that several experiments share run once.  Methods whose
model has no U-Net (``fedavg`` by default) ignore ``d`` and ``fusion``; their runs are
named with the defaults so they are not duplicated.  An experiment's ``base`` overrides the
study's base for its runs (a segmentation experiment names its dataset there); a run two
experiments share must then have the same ``base`` in both.
"""

from __future__ import annotations

import collections
import copy
import functools
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from fedunet import config as run_config_schema
from fedunet import methods, models
from fedunet.segmentation.runconfig import task as task_of

AXES = ("architectures", "methods", "d", "fusion", "alpha")
# Figures that summarize one experiment (besides its accuracy-vs-round curves).
SUMMARY_FIGURES = {
    "bottleneck": "bottleneck_tradeoff",
    "noniid": "noniid_alpha",
    "fusion": "fusion",
    "heterogeneous": "per_architecture",
    "readings": "readings_diagnostics",
}


# canvases with their ground-truth and predicted masks, when a study has a segmentation experiment
SEGMENTATION_FIGURE = "segmentation_examples"

# every paired difference FedUNet - X of a study's classification runs in one figure (one that has
# none says so)
COMPARISONS_FIGURE = "comparisons"


def _digest(partition_config: dict) -> str:
    """Eight hex digits of a partition's settings (its name left out)."""
    import hashlib
    import json

    cfg = {k: v for k, v in partition_config.items() if k != "name"}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8]


class StudyError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid study configuration:\n  - " + "\n  - ".join(problems))


# The workflow's schema of a study config; Snakemake checks it too (workflow/Snakefile).
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def schema() -> dict:
    """The study schema, with architectures and methods taken from their registries, as the run
    schema's are (:func:`fedunet.config.schema`); do not mutate."""
    from fedunet.segmodel import SEG_BACKBONES

    return _schema(tuple(models.available()) + SEG_BACKBONES, tuple(methods.available()))


@functools.lru_cache(maxsize=4)
def _schema(architectures: tuple[str, ...], method_names: tuple[str, ...]) -> dict:
    s = run_config_schema.load_yaml(SCHEMA_FILE.read_text())
    s["$defs"]["architecture"]["enum"] = list(architectures)
    s["$defs"]["method"]["enum"] = list(method_names)
    return s


def check(cfg: dict) -> None:
    """Check a study config against :func:`schema`; each problem names the field and what is allowed."""
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    # a key whose value is invalid also counts as "unevaluated" in its object: report the value only
    below = [list(e.absolute_path) for e in errors if e.validator != "unevaluatedProperties"]
    problems = [
        run_config_schema.describe(e)
        for e in errors
        if e.validator != "unevaluatedProperties" or not any(p[: len(e.absolute_path)] == list(e.absolute_path) for p in below)
    ]
    if problems:
        raise StudyError(problems)


@dataclass(frozen=True, order=True)
class RunKey:
    """One grid point; its ``path`` is the run directory below ``runs/``."""

    archset: str
    method: str
    d: int
    fusion: str
    alpha: str  # "a0.5" or "iid"
    seed: int

    @property
    def path(self) -> str:
        return f"{self.archset}/{self.method}/d{self.d}-{self.fusion}-{self.alpha}/seed{self.seed}"

    @property
    def partition(self) -> str:
        return f"{self.alpha}-s{self.seed}"

    def as_dict(self) -> dict:
        return {
            "archset": self.archset,
            "method": self.method,
            "d": self.d,
            "fusion": self.fusion,
            "alpha": self.alpha,
            "seed": self.seed,
        }


def fusion_settings(label: str) -> dict:
    """The ``model`` settings a fusion label stands for: ``add`` / ``concat`` set the mode only;
    ``<mode>-<source>-<head>`` (e.g. ``add-bottleneck-linear``) sets the whole reading."""
    mode, *rest = label.split("-")
    if not rest:
        return {"fusion": mode}
    source, head = rest
    return {"fusion": mode, "fusion_source": source, "fusion_head": head}


def alpha_label(alpha) -> str:
    return "iid" if alpha == "iid" else f"a{float(alpha):g}"


def alpha_value(label: str) -> float | None:
    return None if label == "iid" else float(label[1:])


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def finished_so_far(runs: int, planned: int) -> str:
    """What a table's or figure's footer adds when it holds fewer runs than the study plans."""
    return f" (the runs finished so far, of {planned} planned)" if planned > runs else ""


class Study:
    def __init__(self, cfg: dict):
        check(cfg)
        self.cfg = cfg
        self.name: str = cfg["study"]
        self.out: str = f"{cfg.get('results', 'results')}/{self.name}"
        self.runs: dict[RunKey, list[str]] = {}
        self.bases: dict[RunKey, dict] = {}  # the experiment's base of each run (over the study's)
        problems: list[str] = []
        defaults = cfg["defaults"]
        archsets = cfg["architecture_sets"]
        for exp_name, exp in cfg["experiments"].items():
            exp_base = exp.get("base", {})
            base = deep_merge(cfg.get("base", {}), exp_base)
            base_attach = base.get("model", {}).get("unet", {}).get("attach", "auto")
            grid = {axis: exp.get(axis, defaults[axis]) for axis in AXES}
            missing = [a for a in grid["architectures"] if a not in archsets]
            if missing:
                problems.append(
                    f"experiments.{exp_name}.architectures: unknown set(s) {missing}; "
                    f"defined in architecture_sets: {', '.join(archsets)}"
                )
                continue
            for archset in grid["architectures"]:
                for method in grid["methods"]:
                    attach = methods.attaches_unet(method, base_attach)
                    ds, fusions = (grid["d"], grid["fusion"]) if attach else ([defaults["d"][0]], [defaults["fusion"][0]])
                    for d in ds:
                        for fusion in fusions:
                            for alpha in grid["alpha"]:
                                for seed in exp.get("seeds", cfg["seeds"]):
                                    label = self._canonical_fusion(fusion)
                                    key = RunKey(archset, method, int(d), label, alpha_label(alpha), int(seed))
                                    exps = self.runs.setdefault(key, [])
                                    if self.bases.setdefault(key, exp_base) != exp_base:
                                        problems.append(
                                            f"experiments.{exp_name}.base: run {key.path} is also in experiment "
                                            f"{exps[0]} with another base; give the experiments different architecture sets"
                                        )
                                    if exp_name not in exps:
                                        exps.append(exp_name)
        if problems:
            raise StudyError(problems)
        # runs the config asks for, per task (the tables of each task count their own)
        self._planned = dict(collections.Counter(self.task(key) for key in self.runs))
        self._planned_by_experiment = {e: sum(e in exps for exps in self.runs.values()) for e in cfg["experiments"]}
        self._check_runs()

    def finished_only(self, finished) -> Study:
        """This study restricted to the runs for which ``finished(key)`` holds, and to the experiments
        that have any of them: the tables of a long study made so far. ``planned`` keeps the count
        of every run the config asks for."""
        kept = {k: exps for k, exps in self.runs.items() if finished(k)}
        if not kept:
            raise StudyError([f"finished_only: no run of study {self.name} has finished yet (no summary.json under {self.out}/runs)"])
        out = copy.copy(self)
        out.runs = kept
        out.bases = {k: self.bases[k] for k in kept}
        experiments = {e for exps in kept.values() for e in exps}
        out.cfg = {**self.cfg, "experiments": {e: v for e, v in self.cfg["experiments"].items() if e in experiments}}
        return out

    def summaries_of(self, spec: str) -> list[str]:
        """The summary files (snakemake targets) of one experiment's runs, ``spec`` being its name, or
        ``name:method,method`` for the runs of those methods only (to train the comparison that
        matters first, e.g. ``readings:fedunet,local``). An unknown experiment or method is an error
        naming the allowed values."""
        name, _, listed = spec.partition(":")
        experiments = self.cfg["experiments"]
        if name not in experiments:
            raise StudyError([f"experiment {name!r} is not in study {self.name}; allowed: {', '.join(experiments)}"])
        keys = [k for k, exps in sorted(self.runs.items()) if name in exps]
        if listed:
            wanted = listed.split(",")
            allowed = sorted({k.method for k in keys})
            unknown = [m for m in wanted if m not in allowed]
            if unknown:
                raise StudyError([f"experiment {name!r} has no method {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"])
            keys = [k for k in keys if k.method in wanted]
        return [f"{self.out}/runs/{k.path}/summary.json" for k in keys]

    @property
    def planned(self) -> int:
        """How many runs the config asks for (restricted or not)."""
        return sum(self._planned.values())

    @property
    def planned_by_task(self) -> dict[str, int]:
        """How many runs of each task (classification, segmentation) the config asks for."""
        return dict(self._planned)

    @property
    def planned_by_experiment(self) -> dict[str, int]:
        """How many runs each experiment of the config asks for, in the config's order."""
        return dict(self._planned_by_experiment)

    def _canonical_fusion(self, label: str) -> str:
        """A full reading that equals the base config's is named by its mode alone, so that the
        same run is never trained twice under two names."""
        settings = fusion_settings(label)
        model = self.cfg.get("base", {}).get("model", {})
        base = {"fusion_source": model.get("fusion_source", "decoder"), "fusion_head": model.get("fusion_head", "linear")}
        if len(settings) == 3 and all(settings[k] == base[k] for k in base):
            return settings["fusion"]
        return label

    def _check_runs(self) -> None:
        """Validate every run config with the library's own schema before any job starts."""
        problems, seen = [], set()
        for key, exps in sorted(self.runs.items()):
            try:
                run_config_schema.validate(self.run_config(key))
            except run_config_schema.ConfigError as e:
                for p in e.problems:
                    msg = f"experiment {exps[0]} ({key.archset}, {key.method}, d={key.d}, {key.alpha}): {p}"
                    if msg not in seen:
                        seen.add(msg)
                        problems.append(msg)
        if problems:
            raise StudyError(problems)

    def stale(self, key: RunKey) -> bool:
        """Whether the finished run of ``key`` was trained with another config than the study now asks
        for: its ``run.yaml`` (the config it was trained with, written by the train rule) differs from
        :meth:`run_config`. File times never retrain a committed run, so this is what keeps a changed
        config from silently leaving old runs in the tables. A run without both files is not stale."""
        run = Path(self.out) / "runs" / key.path
        if not ((run / "summary.json").exists() and (run / "run.yaml").exists()):
            return False
        return yaml.safe_load((run / "run.yaml").read_text()) != self.run_config(key)

    def run_config(self, key: RunKey) -> dict:
        """The run's configuration (base settings plus its grid point), as given to ``fedunet train``."""
        alpha = alpha_value(key.alpha)
        # an alpha is drawn with the base config's Dirichlet scheme (dirichlet, or htfl: HtFLlib's)
        skew = self.cfg.get("base", {}).get("partition", {}).get("scheme", "dirichlet")
        skew = "dirichlet" if skew == "iid" else skew
        point = {
            "name": f"{self.name}/{key.path}",
            "seed": key.seed,
            "method": key.method,
            "partition": {"scheme": "iid" if alpha is None else skew, **({} if alpha is None else {"alpha": alpha})},
            "model": {
                "architectures": list(self.cfg["architecture_sets"][key.archset]),
                **fusion_settings(key.fusion),
                "unet": {"d": key.d},
            },
        }
        base = deep_merge(self.cfg.get("base", {}), self.bases.get(key, {}))
        return deep_merge(base, point)

    def task(self, key: RunKey) -> str:
        """``classification`` or ``segmentation``: what the run's dataset asks for."""
        return task_of(self.run_config(key))

    def experiments_of_task(self, task: str) -> list[str]:
        """The experiments with runs of ``task``, sorted."""
        return sorted({e for k, exps in self.runs.items() if self.task(k) == task for e in exps})

    def experiments_with_baselines(self, task: str) -> list[str]:
        """The experiments of ``task`` with a run of a baseline (``Method.baseline``), sorted: those
        the methods table shows."""
        runs = [(k, exps) for k, exps in self.runs.items() if methods.get(k.method).baseline and self.task(k) == task]
        return sorted({e for _, exps in runs for e in exps})

    def _partition_config_of(self, key: RunKey) -> dict:
        full = self.run_config(key)
        return {
            "name": f"{self.name}/partitions/{key.partition}",
            "seed": full["seed"],
            **{k: full[k] for k in ("dataset", "partition") if k in full},
        }

    def partition_config(self, label: str, digest: str | None = None) -> dict:
        """What the partition of the runs with this alpha and seed (``<alpha>-s<seed>``) depends on,
        and nothing else (so that changing, say, the learning rate does not remake partitions).
        Runs on another dataset (a segmentation experiment's) have another partition of the same
        label: ``digest`` picks the one whose settings have it."""
        for key in sorted(k for k in self.runs if k.partition == label):
            cfg = self._partition_config_of(key)
            if digest is None or _digest(cfg) == digest:
                return cfg
        raise StudyError([f"no partition {label}-{digest} in study {self.name}"])

    def partition_file(self, key: RunKey) -> str:
        """Name of the partition file a run uses: alpha, seed, and a digest of every setting the
        partition depends on, so that a change of those settings makes a new file (and reruns
        the runs that use it) instead of silently reusing the old one."""
        return f"{key.partition}-{_digest(self._partition_config_of(key))}"

    def partition_digest(self, label: str) -> str:
        return _digest(self.partition_config(label))

    @property
    def partitions(self) -> list[str]:
        return sorted({self.partition_file(k) for k in self.runs})

    def experiments_of(self, key: RunKey) -> list[str]:
        return self.runs[key]

    def figure_names(self) -> list[str]:
        """Names (without extension) of the figures the workflow makes for this study."""
        experiments = sorted(self.cfg["experiments"])
        names = [f"curves_{e}" for e in experiments]
        names += [SUMMARY_FIGURES[e] for e in experiments if e in SUMMARY_FIGURES]
        if self.experiments_of_task("classification"):
            names.append(COMPARISONS_FIGURE)
        if self.experiments_of_task("segmentation"):
            names.append(SEGMENTATION_FIGURE)
        return names + [f"partition_{p}" for p in self.partitions]

    def run_table(self) -> list[dict]:
        """One row per (run, experiment) pair: what aggregation groups by."""
        return [
            {
                "run": key.path,
                "experiment": exp,
                **key.as_dict(),
                "architectures": " ".join(self.cfg["architecture_sets"][key.archset]),
            }
            for key, exps in sorted(self.runs.items())
            for exp in exps
        ]
