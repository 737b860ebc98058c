"""Random mutations of valid configs, through the run schema, the CLI and the workflow schema:
each ends in a clear error naming the field (or is valid), never a traceback or a started job."""

import copy
import io
from contextlib import redirect_stderr
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedunet import cli, config
from fedunet.config import ConfigError
from fedunet.study import Study, StudyError

REPO = Path(__file__).resolve().parents[2]
VALID_RUN = config.validate({"dataset": {"name": "synthetic"}, "partition": {"num_clients": 4}, "federated": {"rounds": 2}})
BAD_VALUES = [None, -1, 0, 10**9, -0.5, 1e300, "x", "", [], [1, "a"], {}, {"k": 1}, True, 3.5, "vgg17", "sum"]


def leaf_paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaf_paths(v, prefix + (k,))
    else:
        yield prefix


def parent(cfg, path):
    """The mapping that holds the leaf at ``path``."""
    node = cfg
    for p in path[:-1]:
        node = node[p]
    return node


def mutate(cfg, data, paths, extra_keys):
    cfg = copy.deepcopy(cfg)
    kind = data.draw(st.sampled_from(["value", "unknown_key", "delete"]), label="kind")
    path = data.draw(st.sampled_from(paths), label="path")
    node = parent(cfg, path)
    if kind == "value":
        node[path[-1]] = data.draw(st.sampled_from(BAD_VALUES), label="value")
    elif kind == "unknown_key":
        node[data.draw(st.sampled_from(extra_keys), label="key")] = 1
    else:
        node.pop(path[-1], None)
    return cfg, path, kind


def fuzz_settings(request):
    return settings(
        max_examples=request.config.getoption("--fuzz-examples"),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def fuzz_mutations(request, counts, what, valid, extra_keys, validate, errors, names_the_field):
    """Random mutations of ``valid`` through ``validate``: each passes or raises one of ``errors`` for
    which ``names_the_field(error, path)`` gives (True, _); other exception types propagate and fail
    the test.  ``counts`` gets the mutations tried and rejected under ``what``."""
    paths = list(leaf_paths(valid))

    @fuzz_settings(request)
    @given(st.data())
    def check(data):
        cfg, path, kind = mutate(valid, data, paths, extra_keys)
        counts[f"{what} mutations tried"] += 1
        try:
            validate(cfg)
        except errors as e:
            counts[f"{what} mutations rejected with a named field"] += 1
            named, detail = names_the_field(e, path)
            assert named, f"{kind} at {'.'.join(map(str, path))}: {detail}"

    check()


def problems_name_the_field(e, path):
    """A ConfigError lists a problem naming a part of the mutated path (or the unknown key)."""
    named = [p for p in e.problems if any(str(part) in p for part in path) or "unknown key" in p]
    return bool(named), e.problems


def test_run_config_mutations_fail_clearly(request, counts):
    typos = ["rondos", "lr2", "dataset_name"]
    fuzz_mutations(request, counts, "run config", VALID_RUN, typos, config.validate, ConfigError, problems_name_the_field)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["partition.alpha=-1"], "partition.alpha"),
        (["model.unet.d=100"], "model.unet.d"),
        (["federated.rounds=0"], "federated.rounds"),
        (["partition.num_clients=0"], "partition.num_clients"),
        (["partition.num_clients=100000"], "partition.num_clients"),
        (["model.architectures=[]"], "model.architectures"),
        (["model.fusion=multiply"], "model.fusion"),
        (["method=fedsgd"], "method"),
        (["federated.rounds=ten"], "federated.rounds"),
        (["optimizer.lr=0"], "optimizer.lr"),
        (["modle.width=2"], "modle"),
    ],
)
def test_cli_rejects_before_anything_runs(tmp_path, counts, overrides, field):
    out = tmp_path / "run"
    args = ["train", "--config", str(REPO / "config" / "runs" / "smoke.yaml"), "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    err = io.StringIO()
    with redirect_stderr(err):
        code = cli.main(args)
    counts["CLI bad inputs tried"] += 1
    assert code == 2 and field in err.getvalue() and "Traceback" not in err.getvalue()
    assert not out.exists(), "a job started"


STUDY = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


def validate_study(cfg):
    """What the Snakefile does before building the DAG: the workflow schema, then every run."""
    from snakemake.utils import validate

    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return Study(cfg)


def message_names_the_field(e, path):
    """The error's message names a part of the mutated path (or the unknown property)."""
    text = str(e) + str(getattr(e, "args", ""))
    return any(str(part) in text for part in path) or "Additional properties" in text or "unknown" in text, text[:500]


def test_study_config_mutations_fail_clearly(request, counts):
    import jsonschema
    from snakemake.exceptions import WorkflowError

    errors = (WorkflowError, jsonschema.ValidationError, StudyError)
    typos = ["alphas", "experimnts", "seed"]
    fuzz_mutations(request, counts, "study config", STUDY, typos, validate_study, errors, message_names_the_field)
