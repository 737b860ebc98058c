"""The JSON report a device benchmark script writes (paper_setting.py, step_variants.py): its file
name from the device and the time, and the provenance block every result in ``results/`` carries."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import torch

from fedunet import provenance


def start_report(kind: str, out: str | Path, device: str, dry: bool, **fields) -> tuple[Path, dict]:
    """(path ``<out>/<kind>-<device label>-<UTC stamp>.json``, the report to fill and write there)."""
    dev = torch.device(device)
    desc = provenance.device_description(dev)
    label = desc["name"].replace(" ", "-") if dev.type == "cuda" else "cpu"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "kind": kind,
        "dry": dry,
        "device": desc,
        **fields,
        "provenance": {
            "git": provenance.git_state(),
            "packages": provenance.package_versions(),
            "date": provenance.utc_now(),
            "command": " ".join(sys.argv),
        },
    }
    return out / f"{kind}-{label}-{stamp}.json", report
