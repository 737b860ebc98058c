"""A run directory's lifecycle: who may train into it, what it already holds, whether it may be resumed.

Before a process trains into a directory it takes :func:`run_lock`, removes the temporary
files a killed process left (:func:`remove_torn_files`), and :func:`check_existing` decides
what the directory's contents mean: a finished or started run is refused unless resuming;
outputs of another config are refused, or discarded with ``restart_stale``.  A resumed run
continues from :func:`resumable_checkpoint`, and only with the runtime settings it was trained
with (:func:`check_runtime`) unless allowed; each process records the rounds it trained and
its runtime as a segment (:func:`segment`, ``summary.json`` -> ``provenance.runtime_segments``).
What a checkpoint holds, and how a simulation is brought back to it, is :func:`checkpoint_state`
and :func:`restore`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fedunet import checkpoint, provenance
from fedunet.metrics import LossReference
from fedunet.runtime import RunError, Runtime

if TYPE_CHECKING:
    from fedunet.federated import Simulation

log = logging.getLogger("fedunet")

# Config sections a resumption may change freely.  The runtime is compared separately, on its
# resolved values (``auto`` decided on the machine): the settings that change a run's numbers
# (Runtime.result_settings: device type, bf16, channels_last, compile, deterministic, CPU threads)
# are refused unless allowed (``--allow-runtime-change``); the rest (progress, checkpoints) is free.
RESUMABLE_KEYS = ("name", "runtime")


@contextlib.contextmanager
def run_lock(directory: Path):
    """Hold an exclusive lock on ``directory`` so that two processes never train into it at once.

    The lock is released by the kernel when the process dies, so a killed run never
    leaves a stale lock behind.
    """
    import fcntl  # POSIX only: imported where used, so that the module imports anywhere

    with open(directory / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunError(f"another process (pid {f.read().strip() or '?'}) is training in {directory}") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_torn_files(directory: Path) -> None:
    """Delete the temporary files (``.*.tmp``) of a process killed mid-write."""
    for torn in directory.glob(".*.tmp"):
        torn.unlink()


def config_changes(saved: dict, cfg: dict) -> list[str]:
    """Fields (dotted) in which ``saved`` differs from ``cfg``, ignoring :data:`RESUMABLE_KEYS`."""
    return sorted(_diff_keys(_resume_view(saved), _resume_view(cfg)))


def is_stale(directory: Path, saved_config: dict, cfg: dict, what: str, restart_stale: bool) -> bool:
    """True when ``saved_config`` (of the ``what`` in ``directory``) differs from ``cfg`` and may be
    discarded; raises :class:`RunError` when it may not."""
    changes = config_changes(saved_config, cfg)
    if not changes:
        return False
    if not restart_stale:
        raise RunError(
            f"the {what} in {directory} was made with a different config ({', '.join(changes)}); "
            f"use a new output directory (or --restart-stale to discard it)"
        )
    log.warning("discarding the %s in %s: config changed (%s)", what, directory, ", ".join(changes))
    return True


def check_existing(directory: Path, cfg: dict, resume: bool, restart_stale: bool) -> dict | None:
    """Decide what ``directory``'s earlier outputs mean for a run of ``cfg``.

    Without ``resume`` a started or finished run is refused.  With it, a finished run of the
    same config is returned (nothing to do); one of another config is discarded
    (``restart_stale``) or refused.  ``None``: train (from a checkpoint, if any).
    """
    summary_path = directory / "summary.json"
    if checkpoint.exists(directory) and not resume:
        raise RunError(f"{directory} already holds a run (checkpoint.json); pass --resume to continue it or use a new directory")
    if summary_path.exists() and not checkpoint.exists(directory) and not resume:
        raise RunError(f"{directory} already holds a finished run (summary.json); use a new directory")
    if resume and summary_path.exists():
        done = json.loads(summary_path.read_text())
        if not is_stale(directory, done["config"], cfg, "finished run", restart_stale):
            log.info("%s is already complete; nothing to do", directory)
            return done
        summary_path.unlink()
    return None


def resumable_checkpoint(directory: Path, cfg: dict, restart_stale: bool) -> dict | None:
    """The newest valid checkpoint of ``directory`` made with ``cfg`` (one of another config is
    removed with ``restart_stale``, refused without); ``None`` when there is none."""
    state = checkpoint.load_latest(directory)
    if state is not None and is_stale(directory, json.loads(state["config"]), cfg, "checkpoint", restart_stale):
        checkpoint.remove(directory)
        return None
    return state


# result settings added after runs were first recorded, with the value a segment that lacks them
# was trained with (Runtime.result_settings)
SETTINGS_ADDED_LATER = {"compile_mode": "default"}


def runtime_changes(segments: list[dict], rt: Runtime) -> list[str]:
    """Result-changing runtime settings (``Runtime.result_settings``) in which ``rt`` differs from
    the last recorded segment of the run, as ``name: before -> now``."""
    last = next((seg for seg in reversed(segments) if seg.get("recorded", True)), None)
    if last is None:
        return []
    before, now = {**SETTINGS_ADDED_LATER, **last}, rt.result_settings()
    return [f"{k}: {before.get(k)!r} -> {v!r}" for k, v in now.items() if before.get(k) != v]


def check_runtime(directory: Path, segments: list[dict], rt: Runtime, allow_runtime_change: bool) -> None:
    """Refuse to resume with other result-changing runtime settings than the run's last segment,
    unless allowed (then warn)."""
    changes = runtime_changes(segments, rt)
    if changes and not allow_runtime_change:
        raise RunError(
            f"the checkpoint in {directory} was trained with another runtime ({', '.join(changes)}); "
            "resuming would not give the numbers of an uninterrupted run: resume with the same runtime "
            "settings, or pass --allow-runtime-change to continue anyway (summary.json then lists each segment)"
        )
    if changes:
        log.warning("resuming %s with another runtime (%s), as allowed", directory, ", ".join(changes))


def segment(started: str, last_round: int, rt: Runtime) -> dict:
    """This process's stretch of rounds (none yet: it starts after ``last_round``) and the runtime it
    trains them with."""
    return {
        "started": started,
        "rounds": [last_round + 1, last_round],
        **rt.result_settings(),
        "device_name": provenance.device_description(rt.device)["name"],
    }


# ------------------------------------------------------------------ what a checkpoint holds


def checkpoint_state(sim: Simulation) -> dict:
    """Everything a resumed ``sim`` needs to continue after its round ``sim.round`` exactly as an
    uninterrupted run would: every client's model, optimizer, generator and method state, the
    method's server state, the random generators, and the rows, events and records so far."""
    refs = sim.loss_references
    return {
        "round": sim.round,
        "config": json.dumps(sim.cfg, sort_keys=True),
        "clients": [
            {
                "model": c.model.state_dict(),
                "optimizer": c.optimizer.state_dict(),
                "generator": c.generator.get_state(),
                "state": c.state,
                "aux": {name: m.state_dict() for name, m in c.aux.items()},
            }
            for c in sim.clients
        ],
        "method": sim.method.state_dict(),
        "server_generator": sim.server_generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if sim.rt.device.type == "cuda" else [],
        "rows": json.dumps(sim.rows),
        "client_rows": json.dumps(sim.client_rows),
        "events": json.dumps(sim.events),
        "first_loss": json.dumps({i: ref.value for i, ref in refs.items() if ref.value is not None}),
        "losses_seen": json.dumps({i: ref.seen for i, ref in refs.items() if ref.seen}),
        "last_upload": json.dumps(sim.last_upload),
        "elapsed": sim.elapsed,
        "initial_sync_bytes": sim.initial_sync_bytes,
        "runtime_segments": json.dumps(sim.segments),
    }


def restore(sim: Simulation, state: dict) -> None:
    """Bring a built ``sim`` to the point where :func:`checkpoint_state` left it (checkpoints of
    earlier versions, without some records, included)."""
    for c, s in zip(sim.clients, state["clients"]):
        c.model.load_state_dict(s["model"])
        c.optimizer.load_state_dict(s["optimizer"])
        c.generator.set_state(s["generator"])
        c.state = {k: v.to(c.device) if isinstance(v, torch.Tensor) else v for k, v in s["state"].items()}
        for name, m in c.aux.items():
            m.load_state_dict(s["aux"][name])
    sim.method.load_state_dict(state["method"])
    sim.server_generator.set_state(state["server_generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    sim.rows = json.loads(state["rows"])
    sim.client_rows = json.loads(state["client_rows"])
    sim.events = json.loads(state["events"])
    first = {int(k): v for k, v in json.loads(state.get("first_loss", "{}")).items()}
    seen = {int(k): v for k, v in json.loads(state.get("losses_seen", "{}")).items()}
    factor = sim.cfg["federated"]["divergence_factor"]
    sim.loss_references = {
        i: LossReference(factor, first.get(i), seen.get(i, 0), sim.chance_loss) for i in sorted(first | seen)
    }
    sim.elapsed = state["elapsed"]
    sim.initial_sync_bytes = state["initial_sync_bytes"]
    sim.round = state["round"]
    if "last_upload" in state:
        sim.last_upload = json.loads(state["last_upload"])
    elif (payload := sim.method.upload(sim.clients[0], sim.round)) is not None:  # not recorded then: measure it
        sim.encode_upload(sim.clients[0], payload)
    # checkpoints written before runtimes were recorded: one segment of unknown runtime
    unknown = {"started": None, "rounds": [1, sim.round], "recorded": False}
    sim.segments = json.loads(state["runtime_segments"]) if "runtime_segments" in state else [unknown]


def _resume_view(cfg: dict) -> dict:
    view = copy.deepcopy(cfg)
    for key in RESUMABLE_KEYS:
        view.pop(key, None)
    return view


def _diff_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
