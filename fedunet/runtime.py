"""The runtime a run trains with (device, CPU threads, precision, compile, determinism), resolved on
this machine, the seeds derived for each purpose, and the error a run raises when it cannot start."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch


class RunError(RuntimeError):
    """The run cannot start or continue (no CUDA for a CUDA run, existing outputs, mismatched checkpoint...)."""


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed for one purpose (model init, client data...), the same on every machine."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class Runtime:
    """The runtime a run trains with, resolved ("auto" decided) on this machine."""

    device: torch.device
    bf16: bool
    channels_last: bool
    compile: bool
    deterministic: bool = True
    compile_backend: str = "inductor"
    threads: int = 1
    compile_mode: str = "default"

    def result_settings(self) -> dict:
        """The settings that change a run's numbers (measured: each of them does on CPU), as
        recorded per segment of a run and compared on resume.  CPU threads count only on CPU;
        the compile backend only with compile on, and its mode is "default" without it."""
        return {
            "device": self.device.type,
            "bf16": self.bf16,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "compile_backend": self.compile_backend if self.compile else None,
            "deterministic": self.deterministic,
            "threads": self.threads if self.device.type == "cpu" else None,
            "compile_mode": self.compile_mode if self.compile else "default",
        }


# cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2); read when its handle is
# created, so it must be set before the first CUDA matmul of the process.
CUBLAS_WORKSPACE = ":4096:8"


def precision_and_layout(rt: dict, device_type: str) -> tuple[bool, bool]:
    """(bf16 autocast, channels_last) of a config's ``runtime`` section on a device type, "auto" decided."""
    # auto = fp32: on an H200 one client's epoch ran in 0.71x (narrow VGG16 + U-Net) and 0.77x (full
    # width) of its bf16-autocast time, the steps being launch-bound at these sizes (step_variants.py)
    bf16 = False if rt["bf16"] == "auto" else bool(rt["bf16"])
    inductor_on_cuda = rt["compile"] and rt.get("compile_backend", "inductor") == "inductor" and device_type == "cuda"
    # auto = channels_last, except under inductor on CUDA: torch 2.11's generated backward asserted the
    # wrong strides for channels_last conv weight gradients on an H200 (NCHW compiled; inductor picks
    # its own conv layouts anyway)
    channels_last = not inductor_on_cuda if rt["channels_last"] == "auto" else bool(rt["channels_last"])
    return bf16, channels_last


def resolve_runtime(cfg: dict) -> Runtime:
    rt = cfg["runtime"]
    name = rt["device"]
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"runtime.device: {name!r} requested but CUDA is not available; allowed here: auto, cpu")
    device = torch.device(name)
    if rt["deterministic"] and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    if rt["threads"] is not None:
        torch.set_num_threads(rt["threads"])
    else:
        torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    if rt["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
    bf16, channels_last = precision_and_layout(rt, device.type)
    return Runtime(
        device,
        bf16,
        channels_last,
        rt["compile"],
        deterministic=rt["deterministic"],
        compile_backend=rt.get("compile_backend", "inductor"),
        threads=torch.get_num_threads(),
        compile_mode=rt.get("compile_mode", "default"),
    )
