"""Atomic, checksummed checkpoints with fallback to the previous one.

Each checkpoint is a file ``ckpt-<round>.pt`` written atomically; ``checkpoint.json``
(also atomic) lists the newest two with their SHA-256.  Loading verifies the checksum
and falls back to the older checkpoint, with a warning, when the newest is torn or
corrupted.  Checkpoints are our own files and are read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import torch

from fedunet.io import atomic_write_bytes, atomic_write_json

MANIFEST = "checkpoint.json"
KEEP = 2


class CheckpointError(RuntimeError):
    pass


def save(directory: Path, round_: int, state: dict) -> Path:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()
    path = directory / f"ckpt-{round_:06d}.pt"
    atomic_write_bytes(path, data)
    entries = [e for e in _manifest(directory) if e["file"] != path.name]
    entries = [{"file": path.name, "round": round_, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}] + entries
    atomic_write_json(directory / MANIFEST, {"checkpoints": entries[:KEEP]})
    for old in entries[KEEP:]:
        (directory / old["file"]).unlink(missing_ok=True)
    return path


def _manifest(directory: Path) -> list[dict]:
    path = directory / MANIFEST
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text())["checkpoints"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        warnings.warn(f"{path} is unreadable ({e}); ignoring it", stacklevel=2)
        return []


def exists(directory: Path) -> bool:
    return bool(_manifest(directory))


def remove(directory: Path) -> None:
    """Delete every checkpoint of ``directory`` (manifest first, so a crash leaves no half state)."""
    (directory / MANIFEST).unlink(missing_ok=True)
    for path in directory.glob("ckpt-*.pt"):
        path.unlink()


def load_latest(directory: Path, map_location: str | torch.device = "cpu") -> dict | None:
    """The newest checkpoint whose checksum verifies, or ``None`` when there is none."""
    entries = _manifest(directory)
    for i, entry in enumerate(entries):
        path = directory / entry["file"]
        try:
            data = path.read_bytes()
        except OSError as e:
            warnings.warn(f"checkpoint {path} unreadable ({e}); trying an older one", stacklevel=2)
            continue
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            warnings.warn(f"checkpoint {path} fails its checksum (torn or corrupted); trying an older one", stacklevel=2)
            continue
        if i > 0:
            warnings.warn(f"resuming from the older checkpoint {path} (round {entry['round']})", stacklevel=2)
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    if entries:
        raise CheckpointError(f"no checkpoint in {directory} passes its checksum; delete the directory to restart")
    return None
