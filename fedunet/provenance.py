"""Where a number came from: the git commit, package versions, device (CPU instruction set, GPU model)
and time, recorded with every run, table and benchmark."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch


def git_state() -> dict:
    """Commit and dirty flag of the checkout that holds this package (or of the cwd).

    ``dirty`` means tracked code or configuration differs from the commit; result files
    (``results/``, ``runs/``), which a study rewrites as it goes, do not count. A checkout copied to
    another machine (a GPU node, a cluster's staging area) names its commit in the environment
    variable ``FEDUNET_GIT_COMMIT``, which wins over git: the ``.git`` that travels with such a copy,
    if any, may be an older snapshot. Its dirty flag is then unknown (``None``).
    """
    if os.environ.get("FEDUNET_GIT_COMMIT"):
        return {"commit": os.environ["FEDUNET_GIT_COMMIT"], "dirty": None}
    here = Path(__file__).resolve().parent
    out = {"commit": None, "dirty": None}
    for cwd in (here, Path.cwd()):
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            status = subprocess.run(
                [
                    "git",
                    "status",
                    "--porcelain",
                    "--untracked-files=no",
                    "--",
                    ":/",
                    ":(top,exclude)results",
                    ":(top,exclude)runs",
                ],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            return {"commit": commit, "dirty": bool(status.strip())}
        except (OSError, subprocess.SubprocessError):
            continue
    return out


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for pkg in ("fedunet-bench", "torch", "torchvision", "numpy", "pyyaml", "jsonschema"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


def device_description(device: torch.device) -> dict:
    info = {
        "type": device.type,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        # the vector instruction set torch's CPU kernels dispatch to (AVX2, AVX512...): results are
        # bit-identical on one machine, not across instruction sets
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_name": _cpu_name(),
    }
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = _cpu_name()
        info["cpu_count"] = os.cpu_count()
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
