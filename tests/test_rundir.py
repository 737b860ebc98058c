"""The run directory's lifecycle: the lock, torn files, refusing or resuming earlier outputs,
stale configs, runtime segments, and what a checkpoint holds (resumed runs equal straight ones)."""

import json
import warnings

import pytest
from test_federated import read_metrics

from fedunet import checkpoint, rundir
from fedunet.federated import train
from fedunet.runtime import RunError, resolve_runtime

# ------------------------------------------------------------------ the directory


def test_two_processes_never_train_into_one_directory(tiny_cfg, tmp_path):
    with rundir.run_lock(tmp_path):
        with pytest.raises(RunError, match="another process .* is training"):
            train(tiny_cfg(), tmp_path)
    assert train(tiny_cfg(), tmp_path)["status"] == "complete"  # released


def test_torn_temporary_files_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".metrics.csv.tmp").write_text("half a row")
    (tmp_path / "metrics.csv").write_text("round\n1\n")
    rundir.remove_torn_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_config_changes_name_the_dotted_fields_and_ignore_resumable_sections(tiny_cfg):
    a = tiny_cfg()
    b = tiny_cfg(name="renamed", optimizer={"lr": 0.5}, runtime={"device": "cpu", "progress": True, "threads": 2})
    assert rundir.config_changes(a, b) == ["optimizer.lr"]
    assert rundir.config_changes(a, a) == []


def test_check_existing_refuses_or_returns_earlier_outputs(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    assert rundir.check_existing(tmp_path, cfg, resume=False, restart_stale=False) is None  # empty: train
    done = {"status": "complete", "config": cfg}
    (tmp_path / "summary.json").write_text(json.dumps(done))
    with pytest.raises(RunError, match="already holds a finished run"):
        rundir.check_existing(tmp_path, cfg, resume=False, restart_stale=False)
    assert rundir.check_existing(tmp_path, cfg, resume=True, restart_stale=False) == done  # nothing to do
    other = tiny_cfg(optimizer={"lr": 0.5})
    with pytest.raises(RunError, match="optimizer.lr"):
        rundir.check_existing(tmp_path, other, resume=True, restart_stale=False)
    assert rundir.check_existing(tmp_path, other, resume=True, restart_stale=True) is None
    assert not (tmp_path / "summary.json").exists()  # discarded


def test_runtime_changes_compare_with_the_last_recorded_segment(tiny_cfg):
    rt = resolve_runtime(tiny_cfg())
    same = rundir.segment("then", 0, rt)
    assert same["rounds"] == [1, 0] and rundir.runtime_changes([same], rt) == []
    assert rundir.runtime_changes([{**same, "bf16": True}], rt) == ["bf16: True -> False"]
    unknown = {"started": None, "rounds": [1, 3], "recorded": False}  # checkpoints before segments were recorded
    assert rundir.runtime_changes([unknown], rt) == []
    with pytest.raises(RunError, match="another runtime"):
        rundir.check_runtime(".", [{**same, "bf16": True}], rt, allow_runtime_change=False)
    rundir.check_runtime(".", [{**same, "bf16": True}], rt, allow_runtime_change=True)  # allowed: a warning



def test_a_segment_without_a_later_setting_compares_as_its_default(tiny_cfg):
    """Segments written before runtime.compile_mode existed have no such key and were trained in the
    default mode; a run compiled with reduce-overhead does not resume in the default mode unnoticed,
    nor the reverse.  Without compile the mode has no effect and reads "default"."""
    plain = resolve_runtime(tiny_cfg(runtime={"compile": True}))
    graphs = resolve_runtime(tiny_cfg(runtime={"compile": True, "compile_mode": "reduce-overhead"}))
    eager = resolve_runtime(tiny_cfg(runtime={"compile_mode": "reduce-overhead"}))
    assert plain.result_settings()["compile_mode"] == eager.result_settings()["compile_mode"] == "default"
    assert graphs.result_settings()["compile_mode"] == "reduce-overhead"
    older = {k: v for k, v in rundir.segment("then", 0, plain).items() if k != "compile_mode"}
    assert rundir.runtime_changes([older], plain) == []
    assert rundir.runtime_changes([older], graphs) == ["compile_mode: 'default' -> 'reduce-overhead'"]
    assert "compile_mode: 'reduce-overhead' -> 'default'" in rundir.runtime_changes([rundir.segment("then", 0, graphs)], plain)


def test_existing_run_is_not_overwritten(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    train(cfg, tmp_path)
    assert not list(tmp_path.glob("ckpt-*.pt")), "checkpoints of a finished run are removed by default"
    with pytest.raises(RunError, match="already holds a finished run"):
        train(cfg, tmp_path)
    assert train(cfg, tmp_path, resume=True)["status"] == "complete"  # already done: nothing to do


def test_resume_with_a_different_config_is_refused(tiny_cfg, tmp_path):
    train(tiny_cfg(federated={"rounds": 3}), tmp_path, stop_after=1)
    with pytest.raises(RunError, match="optimizer.lr"):
        train(tiny_cfg(federated={"rounds": 3}, optimizer={"lr": 0.5}), tmp_path, resume=True)


def test_restart_stale_discards_outputs_of_a_changed_config(tiny_cfg, tmp_path):
    train(tiny_cfg(federated={"rounds": 3}), tmp_path, stop_after=1)
    changed = tiny_cfg(federated={"rounds": 3}, optimizer={"lr": 0.05})
    summary = train(changed, tmp_path, resume=True, restart_stale=True)
    assert summary["config"]["optimizer"]["lr"] == 0.05
    fresh = train(changed, tmp_path / "fresh")
    assert read_metrics(tmp_path) == read_metrics(tmp_path / "fresh")
    # a finished run with another config is redone too; with the same config it is kept
    again = train(tiny_cfg(federated={"rounds": 3}), tmp_path, resume=True, restart_stale=True)
    assert again["config"]["optimizer"]["lr"] == 0.01
    assert (
        train(tiny_cfg(federated={"rounds": 3}), tmp_path, resume=True)["provenance"]["finished"]
        == again["provenance"]["finished"]
    )
    assert fresh["final"]["pers_acc"] == summary["final"]["pers_acc"]


# ------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("method", ["fedunet", "fedavg"])
def test_resume_is_bit_identical(tiny_cfg, tmp_path, method):
    extra = {"model": {"architectures": ["cnn"], "width": 0.25}} if method == "fedavg" else {}
    cfg = tiny_cfg(method=method, federated={"rounds": 4, "participation": 0.5}, **extra)
    train(cfg, tmp_path / "straight")
    assert train(cfg, tmp_path / "split", stop_after=2) is None
    assert not (tmp_path / "split" / "summary.json").exists()
    assert len(read_metrics(tmp_path / "split")) == 2
    train(cfg, tmp_path / "split", resume=True)
    assert read_metrics(tmp_path / "split") == read_metrics(tmp_path / "straight")
    straight = json.loads((tmp_path / "straight" / "summary.json").read_text())
    split = json.loads((tmp_path / "split" / "summary.json").read_text())
    assert straight["final"] == split["final"]


def test_a_run_killed_before_its_summary_resumes_to_the_same_summary(tiny_cfg, tmp_path):
    """The last checkpoint holds the records the summary needs (FedKD's payload size changes every
    round, so it is the one recorded when the last upload was encoded, not a new upload's)."""
    cfg = tiny_cfg(method="fedkd", federated={"rounds": 2})
    straight = train(cfg, tmp_path / "straight")
    kept = {**cfg, "runtime": {**cfg["runtime"], "keep_checkpoints": True}}  # the runtime may change on resume
    train(kept, tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()  # as if killed between the last checkpoint and the summary
    resumed = train(kept, tmp_path / "run", resume=True)
    assert resumed["communication"] == straight["communication"] and resumed["final"] == straight["final"]
    assert resumed["communication"]["payload_bytes_up_per_client"] > 0


def test_resume_falls_back_when_the_newest_checkpoint_is_torn(tiny_cfg, tmp_path):
    cfg = tiny_cfg(federated={"rounds": 4})
    train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "run", stop_after=3)
    newest = tmp_path / "run" / "ckpt-000003.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # torn write
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, tmp_path / "run", resume=True)
    assert any("fails its checksum" in str(w.message) for w in caught)
    assert read_metrics(tmp_path / "run") == read_metrics(tmp_path / "straight")


def test_no_valid_checkpoint_is_an_error(tiny_cfg, tmp_path):
    cfg = tiny_cfg(federated={"rounds": 3})
    train(cfg, tmp_path, stop_after=2)
    for p in tmp_path.glob("ckpt-*.pt"):
        p.write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match="passes its checksum"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg, tmp_path, resume=True)
