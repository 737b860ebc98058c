"""``summary.json``: what a finished run reports, built here and read back here.

:func:`build` makes a run's summary from its simulation (config, per-round rows, events,
clients, the last payload encoded, provenance).  The readers below return one part of a
summary as the study tables need it, so that no other module knows its nested keys; they
accept summaries written by earlier versions (missing keys have their old defaults).
"""

from __future__ import annotations

import math
import os
import socket
import sys
from typing import TYPE_CHECKING

from fedunet import costs, metrics
from fedunet.methods.base import SERVER_PREFIX
from fedunet.model import count_parameters, state_nbytes
from fedunet.provenance import device_description, git_state, package_versions, utc_now

if TYPE_CHECKING:
    from fedunet.federated import Simulation


def build(sim: Simulation, started: str) -> dict:
    """The summary of a run that has trained every round (``started``: when this process began)."""
    cfg, rows, clients = sim.cfg, sim.rows, sim.clients
    final = rows[-1]
    task = getattr(sim, "task", "classification")
    diverged_events = [e for e in sim.events if e["event"] == "diverged"]
    upload = sim.last_upload  # the last payload a client encoded (FedKD's size changes every round)
    mean_train_s = sum(r["time_train_s"] for r in rows) / len(rows)
    return {
        "name": cfg["name"],
        "status": "complete",
        "method": cfg["method"],
        "seed": cfg["seed"],
        "dataset": cfg["dataset"]["name"],
        "num_classes": sim.data.num_classes,  # background included for segmentation
        "architectures": [c.architecture for c in clients],
        # what each client trains: the U-Net beside the backbone, and extra models of the method
        "model": {"unet": clients[0].model.unet is not None, "aux_models": sorted(clients[0].aux)},
        "rounds": cfg["federated"]["rounds"],
        # the last round's results: neither wall-clock times nor the server's numbers (metrics.csv only)
        "final": {k: v for k, v in final.items() if k not in metrics.TIMING_COLUMNS and not k.startswith(SERVER_PREFIX)},
        "best": best_of(rows, task),
        "diverged": {
            "any": bool(diverged_events),
            "client_rounds": len(diverged_events),
            "first_round": min((e["round"] for e in diverged_events), default=None),
        },
        "communication": {
            "payload_bytes_up_per_client": upload["bytes"],
            "shared_tensor_bytes": upload["tensor_bytes"],
            "shared_tensors": upload["tensors"],
            "initial_sync_bytes": sim.initial_sync_bytes,
            "total_bytes_up": sum(r["bytes_up"] for r in rows),
            "total_bytes_down": sum(r["bytes_down"] for r in rows),
            # what a reader compares: every byte of the run (incl. the initial sync) per round
            "mb_per_round": (sum(r["bytes_up"] + r["bytes_down"] for r in rows) + sim.initial_sync_bytes) / len(rows) / 1e6,
            "payload_dtype": cfg["federated"]["payload_dtype"],
        },
        "clients": [
            {
                "index": c.index,
                "architecture": c.architecture,
                "n_train": c.num_train,
                "n_test": c.num_test,
                "parameters": count_parameters(c.model),
                "state_bytes": state_nbytes(c.model),
                "backbone_parameters": count_parameters(c.model.backbone),
            }
            for c in clients
        ],
        "partition": {
            "sha256": sim.partition.content_hash(),
            "settings": sim.partition.settings,
            "class_counts": sim.class_counts,
        },
        "events": sim.events,
        **({"segmentation": _segmentation(sim)} if task == "segmentation" else {}),
        "timing": {
            "wall_s": sim.elapsed,
            "mean_round_s": sum(r["time_round_s"] for r in rows) / len(rows),
            "mean_train_s": mean_train_s,
            "mean_eval_s": sum(r["time_eval_s"] for r in rows) / len(rows),
            "train_samples_per_s": sum(c.num_train for c in clients)
            * cfg["federated"]["local_epochs"]
            * cfg["federated"]["participation"]
            / mean_train_s,
        },
        "config": cfg,
        "provenance": {
            "git": git_state(),
            "packages": package_versions(),
            "device": device_description(sim.rt.device),
            "runtime": {"bf16": sim.rt.bf16, "channels_last": sim.rt.channels_last, "compile": sim.rt.compile},
            # every process that trained part of the run (a resumed run has several), with its runtime
            "runtime_segments": sim.segments,
            **({"compile": sim.compiler.stats()} if sim.compiler is not None else {}),
            "started": started,
            "finished": utc_now(),
            "command": " ".join(sys.argv),
            "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        },
    }


# What the best round is chosen on (a validation split, never a test set) and what is read there.
SELECTION = {
    "classification": ("val_acc", ("val_acc", "pers_acc", "global_acc")),
    "segmentation": ("val_miou", ("val_miou", "val_pixel_acc", "pers_miou", "pers_pixel_acc", "global_miou", "global_pixel_acc")),
}


def best_of(rows: list[dict], task: str = "classification") -> dict:
    """The best round, chosen on the clients' validation splits (``val_acc``; segmentation:
    ``val_miou``), with both test protocols read at that round (never chosen on themselves);
    ``{}`` when no round has a validation score."""
    key, read = SELECTION[task]
    chosen = metrics.best_round(rows, key)
    if chosen is None:
        return {}
    return {"selected_by": key, "round": chosen["round"], **{k: chosen[k] for k in read if k in chosen}}


def _segmentation(sim: Simulation) -> dict:
    """What a segmentation run's summary adds: the classes, the ignored mask value, the examples file."""
    from fedunet.segmentation import run as segmentation_run
    from fedunet.segmentation.dataset import IGNORE_INDEX

    return {
        "classes": list(sim.data.class_names),
        "ignore_index": IGNORE_INDEX,
        "canvas_size": sim.data.input_size,
        "examples": segmentation_run.EXAMPLES_FILE,
    }


# ------------------------------------------------------------------ readers


def task(s: dict) -> str:
    """``segmentation`` or ``classification``, by the run's dataset (summaries of every version)."""
    from fedunet.segmentation.runconfig import SEGMENTATION_DATASETS

    return "segmentation" if s["dataset"] in SEGMENTATION_DATASETS else "classification"


def final(s: dict) -> dict:
    """The last round's row (without timing): accuracies, losses, traffic, diagnostics."""
    return s["final"]


def final_accuracy(s: dict) -> dict:
    """Both protocols at the last round (``None`` where the run did not evaluate one)."""
    f = s["final"]
    return {"pers_acc": f.get("pers_acc"), "pers_acc_client_std": f.get("pers_acc_std"), "global_acc": f.get("global_acc")}


def final_segmentation(s: dict) -> dict:
    """A segmentation run's last round: mIoU and pixel accuracy under both protocols, and the
    spread of per-client mIoU (``None`` where the run did not evaluate one)."""
    f = s["final"]
    keys = ("pers_miou", "pers_miou_std", "pers_pixel_acc", "global_miou", "global_miou_std", "global_pixel_acc")
    return {k: f.get(k) for k in keys}


def best(s: dict) -> dict:
    """The validation-best round and both protocols read there (classification: ``val_acc``,
    ``pers_acc``, ``global_acc``; segmentation: ``val_miou`` and mIoU and pixel accuracy); every
    value ``None`` when the summary chose its best round otherwise (on a test split, before
    validation splits existed)."""
    b = s["best"]
    key, read = SELECTION[task(s)]
    fair = b.get("selected_by") == key
    return {k: b.get(k) if fair else None for k in ("round", *read)}


def architecture_accuracies(s: dict) -> dict[str, float]:
    """Final global accuracy of each architecture, ``{architecture: accuracy}``."""
    prefix = "global_acc_"
    return {k[len(prefix) :]: v for k, v in s["final"].items() if k.startswith(prefix) and k != "global_acc_std"}


def communication(s: dict) -> dict:
    """Bytes of one client's payload and of its tensors, and of the initial sync (0 before it was recorded)."""
    c = s["communication"]
    return {
        "payload_bytes": c["payload_bytes_up_per_client"],
        "shared_tensor_bytes": c["shared_tensor_bytes"],
        "initial_sync_bytes": c.get("initial_sync_bytes", 0),
    }


def diverged(s: dict) -> bool:
    """Whether the engine flagged a diverged client in any round."""
    return bool(s.get("diverged", {}).get("any") or any(e["event"] == "diverged" for e in s["events"]))


def chance_loss(s: dict) -> float:
    """ln C, the loss of a uniform guess, the least reference divergence is judged against.  A
    summary written before it recorded ``num_classes`` has C from its config's dataset."""
    return math.log(s.get("num_classes") or costs.geometry(s["config"])[2])


def divergence_factor(s: dict) -> float:
    """The run's divergence factor (``federated.divergence_factor``; 10 before it was configurable)."""
    return s["config"]["federated"].get("divergence_factor", 10)


def rejected_payloads(s: dict) -> int:
    return sum(1 for e in s["events"] if e["event"] == "payload_rejected")


def timing(s: dict) -> dict:
    t = s["timing"]
    return {"wall_s": t["wall_s"], "mean_round_s": t["mean_round_s"], "train_samples_per_s": t.get("train_samples_per_s")}


def provenance(s: dict) -> dict:
    """Where and with what a run was made: commit (12 characters), dirty flag, device, CPU
    instruction set, torch version, when it finished."""
    p = s["provenance"]
    return {
        "commit": (p["git"]["commit"] or "")[:12],
        "dirty": p["git"]["dirty"],
        "device": p["device"]["name"],
        "cpu_capability": p["device"].get("cpu_capability", ""),
        "torch": p["packages"]["torch"],
        "finished": p["finished"],
    }


def trained_models(s: dict) -> dict:
    """What each client trained: ``{"unet": bool, "aux_models": [names]}``."""
    return s["model"]
