"""What one training step costs under each runtime switch: which knob a slow step on this device
answers to.

    .venv/bin/python benchmarks/step_variants.py --out benchmarks/results     # on a GPU machine
    .venv/bin/python benchmarks/step_variants.py --dry --out /tmp/x           # tiny, any machine

The first GPU runs (H100, H200) measured about 27 ms per batch of 64 for a narrow VGG16 + U-Net, in
the engine and in a bare loop alike: far more than the arithmetic of such a model. This script times
one client's local epoch, the engine's own ``Client.train``, with the runtime defaults of the device
and with one switch changed at a time: deterministic kernels off, bf16 autocast instead of fp32,
NCHW instead of channels_last, ``torch.compile`` (inductor on CUDA, ``aot_eager`` with ``--dry``;
as resolved, and forced to channels_last), and the backbone alone (FedAvg's model, no U-Net), for
two models: the benchmarks' narrow one (width 1/8, d = 64 at the full size, as ``bench_engine.py``)
and the paper's full width (d = 128). Each variant: one warm-up epoch (compiling, if any), then the
median of ``--epochs`` timed epochs, synchronized.

Writes ``step-variants-<device>-<stamp>.json`` into ``--out`` after every variant, so a time limit
keeps what finished; ``render.py`` puts it into ``benchmarks/results/README.md``. A variant that
raises is recorded with its error and the others still run (exit code 1 at the end, unless it is a
``PROBES`` variant: there a failure is a finding about the installed torch); ``-k TEXT``
runs only the variants whose name contains TEXT (repeatable; the defaults always run first).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import settings, simulation  # noqa: E402
from device_report import start_report  # noqa: E402
from render import variant_label  # noqa: E402

from fedunet.io import atomic_write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# name -> (runtime switches, other config sections); compile last: it is the slowest to start
VARIANTS = {
    "device defaults": ({}, {}),
    "deterministic off": ({"deterministic": False}, {}),
    # the default was bf16 autocast on CUDA until this script measured it slower than fp32 (H200)
    "bf16 autocast": ({"bf16": True}, {}),
    "NCHW (no channels_last)": ({"channels_last": False}, {}),
    # FedAvg's model: the VGG16 alone (FedAvg needs one architecture; the timed client is a VGG16)
    "backbone alone (no U-Net)": ({}, {"method": "fedavg", "model": {"architectures": ["vgg16"]}}),
    # CUDA graphs: each compiled graph's launches replayed as one (a launch-bound step's remedy: 0.42x of
    # the defaults on an H200); before plain compile, which has been slower than eager on every GPU run
    "compiled, reduce-overhead": ({"compile": True, "compile_mode": "reduce-overhead"}, {}),
    "compiled": ({"compile": True}, {}),
    # inductor on CUDA compiles NCHW by default: torch 2.11's failed channels_last conv weight gradients
    # on an H200; this says whether the installed torch still does
    "compiled, channels_last": ({"compile": True, "channels_last": True}, {}),
}
# may fail on a torch with the bug they probe, or with the mode they try: recorded, not a failed check
PROBES = {"compiled, channels_last", "compiled, reduce-overhead"}
MODELS = {  # name -> model section over bench_engine.settings (narrow: its own, width 1/8)
    "narrow": {},
    "full width": {"width": 1.0, "unet": {"d": 128}},
}


def time_epochs(dry: bool, device: str, model: dict, runtime: dict, sections: dict, epochs: int) -> dict:
    note = ""  # what the variant could not apply here, said beside its numbers
    if runtime.get("compile"):
        runtime = {**runtime, "compile_backend": "inductor" if device.startswith("cuda") else "aot_eager"}
        if runtime["compile_backend"] != "inductor" and "compile_mode" in runtime:  # modes are inductor's
            mode = runtime.pop("compile_mode")
            note = f"compile_mode {mode} not applied: inductor's, {runtime['compile_backend']} here"
    rt = {"device": device, "progress": False, "checkpoint_every": 0, **runtime}
    if dry:
        rt["threads"] = 1
    sections = dict(sections)
    model = {**model, **sections.pop("model", {})}
    cfg = settings("small" if dry else "full", runtime=rt, **({"model": model} if model else {}), **sections)
    with tempfile.TemporaryDirectory(prefix="fedunet-step-variants-") as tmp:
        sim = simulation(Path(tmp), cfg)
        client = sim.clients[2 % len(sim.clients)]  # a VGG16 client, as bench_engine's throughput test

        def epoch() -> float:
            start = time.perf_counter()
            client.train(1, sim.method.loss)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - start

        warmup = epoch()
        times = [epoch() for _ in range(epochs)]
    steps = math.ceil(client.num_train / cfg["training"]["batch_size"])
    median = statistics.median(times)
    return {
        "architecture": client.architecture,
        "method": cfg["method"],
        "width": cfg["model"]["width"],
        "d": cfg["model"]["unet"]["d"],
        "samples": client.num_train,
        "steps": steps,
        "warmup_s": warmup,
        "epoch_s": times,
        "ms_per_step": 1e3 * median / steps,
        "images_per_s": client.num_train / median,
        "runtime": sim.rt.result_settings(),  # as resolved on this device
        **({"note": note} if note else {}),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="tiny sizes on CPU, one timed epoch (CI)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=None, help="timed epochs per variant (default 3; --dry 1)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("-k", dest="select", action="append", default=[], metavar="TEXT",
                    help="only the variants whose name contains TEXT (repeatable), besides the defaults")
    args = ap.parse_args(argv)
    variants = {name: v for i, (name, v) in enumerate(VARIANTS.items())
                if i == 0 or not args.select or any(text in name for text in args.select)}
    if len(variants) == 1 and args.select:
        ap.error(f"-k {args.select}: no variant matches; allowed: {', '.join(list(VARIANTS)[1:])}")
    epochs = args.epochs or (1 if args.dry else 3)
    path, report = start_report("step-variants", args.out, args.device, args.dry, epochs=epochs, results=[])
    models = dict(list(MODELS.items())[:1]) if args.dry else MODELS  # --dry: the full width checks no code
    baseline = {}
    failed = 0
    for variant, (runtime, sections) in variants.items():  # variant by variant: compiling, the slowest, last
        for model_name, model in models.items():
            try:
                r = time_epochs(args.dry, args.device, model, runtime, sections, epochs)
            except Exception as err:  # one broken switch (a compiler's bug) must not hide the others' numbers
                failed += variant not in PROBES
                first = (str(err).strip().splitlines() or [""])[0]
                error = f"{type(err).__name__}: {first}"
                report["results"].append({"model": model_name, "variant": variant, "error": error, "probe": variant in PROBES})
                atomic_write_json(path, report)
                traceback.print_exc()
                print(f"[step-variants] {model_name} | {variant}: FAILED ({type(err).__name__})", flush=True)
                continue
            if variant == "device defaults":
                baseline[model_name] = r["ms_per_step"]
            ratio = r["ms_per_step"] / baseline[model_name] if model_name in baseline else None  # defaults failed: none
            r.update(model=model_name, variant=variant, ratio_to_defaults=ratio)
            report["results"].append(r)
            atomic_write_json(path, report)  # after every variant: a time limit keeps what finished
            print(
                f"[step-variants] {model_name} (width {r['width']:g}, d {r['d']}) | {variant_label(r)}: {r['ms_per_step']:.2f} ms/step "
                f"({r['images_per_s']:,.0f} img/s, x{r['ratio_to_defaults'] or float('nan'):.2f} of the defaults)",
                flush=True,
            )
    print(f"[step-variants] {path}" + (f" ({failed} variant(s) failed)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
