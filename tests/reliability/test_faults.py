"""Faults a federated study meets: hostile payloads, kill -9 at random points, torn checkpoints,
diverging clients, full disks and unwritable directories."""

import io
import json
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import time
from contextlib import redirect_stderr
from pathlib import Path

import pytest
import torch
import yaml

from fedunet import cli, config, serialization
from fedunet.federated import Simulation, train
from fedunet.methods.aggregate import weighted_mean
from fedunet.methods.base import Upload

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from helpers import tiny_raw, wrap_client_train  # noqa: E402
from test_federated import read_metrics  # noqa: E402


def tiny(**sections):
    return config.validate(tiny_raw(**sections))


# ------------------------------------------------------------------ payload attacks


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/fedunet-pwned",))


def _header(blob):
    n = struct.unpack("<Q", bytes(blob[8:16]))[0]
    return json.loads(bytes(blob[16 : 16 + n])), bytes(blob[16 + n :])


def _with_header(header, data):
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return serialization.MAGIC + struct.pack("<Q", len(raw)) + raw + data


def attack(kind: str, blob: bytes, honest: dict) -> bytes:
    if kind == "truncated":
        return bytes(blob[: len(blob) // 2])
    if kind == "oversized":
        return bytes(blob) + b"\0" * (4 * len(blob) + 2_000_000)
    if kind == "pickle":
        return pickle.dumps(Evil())
    if kind == "pickle_behind_header":
        return serialization.MAGIC + struct.pack("<Q", 0) + pickle.dumps(Evil())
    if kind == "garbage":
        return os.urandom(len(blob))
    bad = {k: v.clone() for k, v in honest.items()}
    name = next(k for k, v in bad.items() if v.is_floating_point() and v.ndim > 1)
    if kind == "wrong_name":
        bad["unet.bottleneck.evil"] = bad.pop(name)
    elif kind == "wrong_shape":
        bad[name] = bad[name][:1]
    elif kind == "wrong_dtype":
        bad[name] = bad[name].double()
    elif kind == "nan":
        bad[name].view(-1)[0] = float("nan")
    elif kind == "inf":
        bad[name].view(-1)[-1] = float("-inf")
    elif kind == "missing_tensor":
        bad.pop(name)
    elif kind == "lying_header":
        header, data = _header(serialization.encode(bad))
        header["tensors"][0]["shape"] = [10**6]
        return _with_header(header, data)
    return bytes(serialization.encode(bad))


ATTACKS = [
    "truncated",
    "oversized",
    "pickle",
    "pickle_behind_header",
    "garbage",
    "wrong_name",
    "wrong_shape",
    "wrong_dtype",
    "nan",
    "inf",
    "missing_tensor",
    "lying_header",
]


@pytest.mark.parametrize("kind", ATTACKS)
def test_hostile_payload_is_rejected_and_the_round_goes_on(tmp_path, counts, kind):
    honest: dict[int, dict] = {}

    def tamper(r, client, blob):
        tensors, _ = serialization.decode(bytes(blob))
        honest[client.index] = {k: v.clone() for k, v in tensors.items()}
        return attack(kind, blob, honest[client.index]) if client.index == 1 else blob

    sim = Simulation(tiny(federated={"rounds": 1}), tmp_path, tamper=tamper)
    summary = sim.run()
    counts["hostile payloads sent"] += 1
    assert summary["status"] == "complete" and summary["final"]["rejected"] == 1
    event = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[0])
    assert event["client"] == 1 and event["event"] == "payload_rejected" and event["detail"]
    expected = weighted_mean([Upload(c, honest[c.index], float(c.num_train)) for c in sim.clients if c.index != 1])
    for name, t in expected.items():
        assert torch.equal(sim.method.global_state[name], t), name
    assert not Path("/tmp/fedunet-pwned").exists()
    counts["hostile payloads rejected"] += 1


# ------------------------------------------------------------------ kill -9 and resume


def _train_cmd(cfg_path, out):
    return [sys.executable, "-m", "fedunet", "train", "--config", str(cfg_path), "--out", str(out), "--resume", "--quiet"]


def _checkpoint_round(out: Path) -> int:
    """The round of the newest checkpoint the manifest lists (what a resume starts from)."""
    try:
        return max(e["round"] for e in json.loads((out / "checkpoint.json").read_text())["checkpoints"])
    except (OSError, ValueError, KeyError):
        return 0


# Where a kill lands, each observed on disk rather than guessed from the clock: inside the
# write of the next round's metrics, inside the write of its checkpoint, or just after that
# checkpoint is complete (the only point that moves the resume point forward).
KILL_POINTS = ("in_metrics_write", "in_checkpoint_write", "after_checkpoint")


def _reached(point: str, out: Path, resume_round: int) -> bool:
    if point == "in_metrics_write":
        return any(out.glob(".metrics.csv.*.tmp"))
    if point == "in_checkpoint_write":
        return any(out.glob(".ckpt-*.tmp"))
    return _checkpoint_round(out) > resume_round


def test_kill_9_at_random_points_never_changes_the_result(tmp_path, counts):
    """Kill the training process at random progress points (inside rounds' metric and checkpoint
    writes, which a fault hook holds open, and between rounds) until it finishes; the metrics
    equal an uninterrupted run's.  Kills are triggered by what the run has written, never by
    wall-clock time, so a slow machine changes only how long the test takes; the number of
    attempts is bounded by progress (every attempt that makes none is followed by one that does)."""
    rounds = 6
    raw = tiny_raw(federated={"rounds": rounds})
    raw["runtime"]["threads"] = 1
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    reference = tmp_path / "reference"
    assert subprocess.run(_train_cmd(cfg_path, reference), capture_output=True).returncode == 0

    out = tmp_path / "killed"
    rng = random.Random(0)
    env = {**os.environ, "FEDUNET_FAULT_WRITE_DELAY": "0.3"}
    kills = in_write = 0
    previous_made_progress = True
    finished = False
    for _ in range(2 * rounds + 2):
        resume_round = _checkpoint_round(out)
        point = rng.choice(KILL_POINTS) if previous_made_progress else "after_checkpoint"
        proc = subprocess.Popen(_train_cmd(cfg_path, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while proc.poll() is None and not _reached(point, out, resume_round):
            time.sleep(0.01)
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read().decode()
            finished = True
            break
        in_write += any(out.glob(".*.tmp"))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        kills += 1
        previous_made_progress = _checkpoint_round(out) > resume_round
    assert finished, f"the run did not finish after {kills} kills"
    assert (out / "summary.json").exists()
    counts["training processes killed with SIGKILL"] += kills
    counts["kills during an atomic write"] += in_write
    assert kills >= rounds - 1, "every round but the last should have been interrupted at least once"
    assert in_write >= 2, "no kill landed inside a write"
    assert read_metrics(out) == read_metrics(reference)
    assert not list(out.glob(".*.tmp")), "temporary files of killed writes were left behind"
    final = json.loads((out / "summary.json").read_text())["final"]
    assert final == {k: v for k, v in json.loads((reference / "summary.json").read_text())["final"].items()}


def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path, counts):
    cfg = tiny(federated={"rounds": 4})
    train(cfg, tmp_path / "reference")
    train(cfg, tmp_path / "run", stop_after=3)
    newest = tmp_path / "run" / "ckpt-000003.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the middle: same length, wrong content
    newest.write_bytes(bytes(data))
    counts["checkpoints corrupted"] += 1
    with (
        pytest.warns(UserWarning, match="fails its checksum"),
        pytest.warns(UserWarning, match=r"resuming from the older checkpoint .*ckpt-000002\.pt \(round 2\)"),
    ):
        train(cfg, tmp_path / "run", resume=True)
    assert read_metrics(tmp_path / "run") == read_metrics(tmp_path / "reference")


# ------------------------------------------------------------------ divergence


def test_client_with_exploding_learning_rate_is_excluded_and_reported(tmp_path, counts):
    sim = Simulation(tiny(federated={"rounds": 3}), tmp_path)
    sim.build()

    def train_with_huge_lr(train, epochs, loss_fn):
        for group in victim.optimizer.param_groups:
            group["lr"] = 1e12  # injected: the schedule set 0.01
        return train(epochs, loss_fn)

    victim = wrap_client_train(sim, 3, train_with_huge_lr)
    rows = [sim.run_round(r) for r in (1, 2, 3)]
    counts["diverging clients injected"] += 1
    assert sum(r["diverged"] for r in rows) >= 1 and sum(r["rejected"] for r in rows) >= 1
    assert all(torch.isfinite(t).all() for t in sim.method.global_state.values() if t.is_floating_point())
    kinds = {e["event"] for e in sim.events if e["client"] == 3}
    assert {"diverged", "payload_rejected"} <= kinds
    for r in rows:  # metrics still computed over every client: the sample-weighted mean of the clients' own
        clients = [c for c in sim.client_rows if c["round"] == r["round"]]
        assert len(clients) == 4 and all(0 <= c["pers_acc"] <= 1 for c in clients)
        weighted = sum(c["pers_acc"] * c["n_test"] for c in clients) / sum(c["n_test"] for c in clients)
        assert r["pers_acc"] == pytest.approx(weighted)


# ------------------------------------------------------------------ disks


def test_full_disk_is_a_clear_error_with_no_partial_file(tmp_path, counts, monkeypatch):
    import fedunet.io as fio

    real_fdopen = os.fdopen
    state = {"writes": 0}

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            state["writes"] += 1
            if state["writes"] > 3:  # the first few files fit, then the disk is full
                raise OSError(28, "No space left on device", str(tmp_path / "run"))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(fio.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw(federated={"rounds": 3})))
    err = io.StringIO()
    with redirect_stderr(err):
        code = cli.main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    counts["disk-full faults injected"] += 1
    assert code == 5 and "No space left on device" in err.getvalue() and "Traceback" not in err.getvalue()
    leftovers = [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers
    assert not (tmp_path / "run" / "summary.json").exists()
    for csv_file in (tmp_path / "run").glob("*.csv"):  # whatever was written is whole
        assert csv_file.read_text().endswith("\n")


def test_unwritable_output_directory_is_a_clear_error(tmp_path, counts):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw()))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    err = io.StringIO()
    with redirect_stderr(err):
        code = cli.main(["train", "--config", str(cfg), "--out", str(blocker / "run")])
    counts["unwritable output directories tried"] += 1
    assert code == 5 and str(blocker) in err.getvalue() and "Traceback" not in err.getvalue()
