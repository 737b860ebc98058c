"""The GPU path, exercised on every CPU run: compile (one region per architecture, no silent
fallback), bf16 autocast + channels_last + compile together, no host sync per training step,
the resume rule for runtime changes, and the deterministic-CUDA replacements.

Tests marked ``cuda`` need a CUDA device (skipped without one); ``scripts/device-check.sh`` runs
them on the first GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import tiny_raw
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fedunet import compile as fcompile
from fedunet import config, methods
from fedunet.determinism import DeterministicAdaptiveAvgPool, replace_nondeterministic
from fedunet.federated import Simulation, train
from fedunet.model import ClientModel, ModelSpec
from fedunet.runtime import CUBLAS_WORKSPACE, RunError, derive_seed, resolve_runtime

CUDA = torch.cuda.is_available()
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (scripts/device-check.sh)")
VGGS = ["vgg11", "vgg13", "vgg16", "vgg19"]


def cfg_of(**sections) -> dict:
    raw = tiny_raw(**{k: v for k, v in sections.items() if k != "runtime"})
    raw["runtime"] = {**raw["runtime"], **sections.get("runtime", {})}
    return config.validate(raw)


def metrics_without_time(out) -> list[dict]:
    import csv

    with open(out / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if not k.startswith("time_") and k != "elapsed_s"} for row in csv.DictReader(f)]


# ------------------------------------------------------------------ compile


@pytest.mark.parametrize("isolation", ["option", "code copy"])
def test_four_architectures_compile_once_each_never_fall_back_and_give_the_eager_numbers(
    tmp_path, monkeypatch, request, isolation
):
    """Clients VGG11/13/16/19, trained and evaluated (personalized, validation, global).  Before,
    every client was compiled on the one code cache of ClientModel.forward and Dynamo hit its
    recompile limit (8) in round 1 (4 architectures x train/eval x batch-size classes), silently
    running eagerly from then on.  Now: one region per architecture, no fallback.  Dynamo's tracing
    and guards decide this, not the backend: ``eager`` (the traced graphs run op by op) keeps the
    test cheap and gives the eager numbers bit for bit: the compiled path does the same work.
    (The diagnostic passes add three graphs per architecture; the budget is 64.)
    ``code copy``: a torch without ``isolate_recompiles`` (2.11 on a GPU image) isolates the regions
    by private code objects instead, with the same outcome."""
    if isolation == "code copy":
        monkeypatch.setattr(fcompile, "ISOLATES_RECOMPILES", False)
        limit = torch._dynamo.config.recompile_limit  # set process-wide by that path (monkeypatch would hide it)
        request.addfinalizer(lambda: setattr(torch._dynamo.config, "recompile_limit", limit))
    base = dict(
        model={"architectures": VGGS, "width": 0.125, "unet": {"d": 16}},
        partition={"num_clients": 4, "alpha": 1.0, "min_samples": 10},
        federated={"rounds": 1},
        eval={"batch_size": 64, "diagnostics": False},
    )
    train(cfg_of(**base), tmp_path / "eager")
    sim = Simulation(cfg_of(**base, runtime={"compile": True, "compile_backend": "eager"}), tmp_path / "compiled")
    summary = sim.run()
    stats = summary["provenance"]["compile"]
    assert stats["fallbacks"] == 0, stats
    assert not [e for e in summary["events"] if e["event"] == "compile_fallback"]
    assert stats["regions"] == 4, "one compiled region per architecture"
    assert 8 <= stats["graphs"] <= 4 * 8 and stats["graph_breaks"] == 0, stats  # the old shared limit was 8
    assert metrics_without_time(tmp_path / "compiled") == metrics_without_time(tmp_path / "eager")


@pytest.mark.parametrize("isolation", ["option", "code copy"])
def test_each_region_has_its_own_recompile_budget(monkeypatch, request, isolation):
    """Two regions of one entry, each allowed one graph, each fed another model: neither falls back.
    Sharing one cache (the entry's code object) would put both graphs on one budget of one."""
    if isolation == "code copy":
        monkeypatch.setattr(fcompile, "ISOLATES_RECOMPILES", False)
        limit = torch._dynamo.config.recompile_limit
        request.addfinalizer(lambda: setattr(torch._dynamo.config, "recompile_limit", limit))
    torch._dynamo.reset()
    before = fcompile.fallback_count()
    for width in (3, 5):
        region = fcompile.compile_region(fcompile.ENTRIES["forward"], "eager", 1)
        model = nn.Sequential(nn.Linear(width, 2), nn.ReLU())
        region(model, torch.randn(4, width))
    assert fcompile.fallback_count() == before


def test_compile_mode_reaches_torch_compile_and_is_inductors_only(monkeypatch, request):
    """runtime.compile_mode: reduce-overhead (CUDA graphs) is passed to torch.compile; another
    backend with a mode is refused naming the field and the allowed values."""
    dynamo = torch._dynamo.config
    name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    limit = getattr(dynamo, name)  # the code-copy path sets it process-wide
    request.addfinalizer(lambda: setattr(dynamo, name, limit))
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: seen.append(kwargs) or fn)
    model = ClientModel(ModelSpec("cnn", 3, 16, 3, width=0.25, unet_d=16))
    for isolates in (True, False):
        monkeypatch.setattr(fcompile, "ISOLATES_RECOMPILES", isolates)
        fcompile.Compiler("inductor", mode="reduce-overhead")(model, "forward", torch.randn(2, 3, 16, 16))
        fcompile.Compiler("inductor")(model, "forward", torch.randn(2, 3, 16, 16))
    assert [k.get("mode") for k in seen] == ["reduce-overhead", None, "reduce-overhead", None]
    refused = r"runtime.compile_mode: 'reduce-overhead' is not allowed with backend aot_eager; allowed values: default"
    with pytest.raises(ValueError, match=refused):
        fcompile.Compiler("aot_eager", mode="reduce-overhead")
    with pytest.raises(ValueError, match=r"allowed values: default, reduce-overhead"):
        fcompile.Compiler("inductor", mode="fast")


def test_a_compile_fallback_is_recorded_in_the_events(tmp_path, monkeypatch):
    """Forced: a region allowed one graph needs a second one for evaluation (inference mode) and
    Dynamo falls back; the run goes on and events.jsonl says so."""
    monkeypatch.setattr(fcompile, "RECOMPILE_LIMIT", 1)
    cfg = cfg_of(
        model={"architectures": ["cnn"], "width": 0.25, "unet": {"d": 16}},
        partition={"num_clients": 2, "alpha": 1.0, "min_samples": 10},
        federated={"rounds": 1},
        eval={"diagnostics": False, "validation_fraction": 0.0},
        runtime={"compile": True, "compile_backend": "eager"},
    )
    summary = Simulation(cfg, tmp_path).run()
    fallbacks = [e for e in summary["events"] if e["event"] == "compile_fallback"]
    assert fallbacks and "recompile limit" in fallbacks[0]["detail"]
    assert summary["provenance"]["compile"]["fallbacks"] >= 1
    assert "compile_fallback" in (tmp_path / "events.jsonl").read_text()


def test_gpu_settings_on_cpu_bf16_channels_last_compile_learn_and_send_the_same_bytes(tmp_path):
    """The GPU runtime (bf16 autocast, channels_last, torch.compile) on CPU: the same code path, only
    the device differs.  aot_eager traces forward and backward as inductor does, without generating
    kernels (inductor on CPU needs ~100 s to compile here).  It learns, never falls back, and every
    payload has the bytes of the eager fp32 run's."""
    base = dict(
        model={"architectures": ["cnn", "vgg11"], "width": 0.125, "unet": {"d": 16}},
        federated={"rounds": 3},
        training={"batch_size": 16},
        eval={"diagnostics": False},
    )
    gpu_like = {"bf16": True, "channels_last": True, "compile": True, "compile_backend": "aot_eager"}
    eager = train(cfg_of(**base, runtime={"bf16": False, "channels_last": False}), tmp_path / "eager")
    fast = train(cfg_of(**base, runtime=gpu_like), tmp_path / "gpu-like")
    rows = metrics_without_time(tmp_path / "gpu-like")
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0], losses
    assert fast["final"]["pers_acc"] > 0.5, "3 balanced classes: chance is 1/3"
    assert fast["provenance"]["runtime"] == {"bf16": True, "channels_last": True, "compile": True}
    # four clients on two architectures: two regions, each shared by two clients
    assert fast["provenance"]["compile"]["fallbacks"] == 0 and fast["provenance"]["compile"]["regions"] == 2
    assert not [e for e in fast["events"] if e["event"] == "compile_fallback"]
    for key in ("payload_bytes_up_per_client", "total_bytes_up", "total_bytes_down", "initial_sync_bytes"):
        assert fast["communication"][key] == eager["communication"][key], key
    assert [r["bytes_up"] for r in rows] == [r["bytes_up"] for r in metrics_without_time(tmp_path / "eager")]


@pytest.mark.parametrize("method", ["fedunet", "fml"])
def test_methods_forward_passes_go_through_the_client_hooks(tmp_path, method):
    """``Client.logits/features/aux_logits/aux_features`` route through the compiler when one is set
    (what a method must call for its forward passes to run compiled)."""
    cfg = cfg_of(method=method, federated={"rounds": 1}, runtime={"compile": True, "compile_backend": "eager"})
    sim = Simulation(cfg, tmp_path)
    sim.build()
    calls = []
    real = sim.compiler.__call__

    def spy(model, entry, x):
        calls.append((type(model).__name__, entry))
        return real(model, entry, x)

    c = sim.clients[0]
    c.compiler = spy
    x = next(iter(c.loader))[0]
    c.logits(x), c.features(x)
    for name in c.aux:
        if isinstance(c.aux[name], ClientModel):
            c.aux_logits(name, x), c.aux_features(name, x)
    assert ("ClientModel", "forward") in calls and ("ClientModel", "features") in calls
    assert len(calls) == 2 + 2 * sum(isinstance(m, ClientModel) for m in c.aux.values())


def test_compiled_artifacts_are_cached_in_a_persistent_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("FEDUNET_COMPILE_CACHE", str(tmp_path / "cache"))
    assert fcompile.use_persistent_cache() == tmp_path / "cache"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache")
    monkeypatch.delenv("FEDUNET_COMPILE_CACHE")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fcompile.cache_dir() == tmp_path / "xdg" / "fedunet" / "torchinductor"


# ------------------------------------------------------------------ host syncs


class HostSyncCounter(TorchDispatchMode):
    """Counts the ops that make the host wait for the device: a tensor read as a Python number
    (``item``, ``bool``, ``float``, ``int``: aten._local_scalar_dense), ops whose output size depends
    on the data (``nonzero``, ``masked_select``, ``unique``), and boolean-mask indexing (a nonzero
    inside).  Device-independent, so it finds on CPU what would sync a GPU."""

    SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive"}

    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.SYNCING:
            self.calls[name] = self.calls.get(name, 0) + 1
        elif name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()) or ()
        ):
            self.calls["boolean mask index"] = self.calls.get("boolean mask index", 0) + 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.calls.values())


@pytest.mark.parametrize("method", methods.available())
def test_training_loop_never_syncs_the_host_per_step(tmp_path, method):
    """One local epoch of several steps, after a round (so that global state has arrived): at most
    one host sync, the loss read once at the end of the round."""
    model = {"architectures": ["vgg11"]} if method == "fedavg" else {}
    cfg = cfg_of(method=method, training={"batch_size": 8}, model={**tiny_raw()["model"], **model})
    stats, syncs = _syncs_in_a_local_epoch_after_round_one(cfg, tmp_path)
    assert stats.steps >= 3
    assert syncs.total <= 1, f"{syncs.calls} in {stats.steps} steps"


def _syncs_in_a_local_epoch_after_round_one(cfg, tmp_path):
    """Client 0's training stats and the host syncs counted during one local epoch, after round 1."""
    sim = Simulation(cfg, tmp_path)
    sim.build()
    sim.run_round(1)
    client = sim.clients[0]
    with HostSyncCounter() as syncs:
        stats = client.train(1, sim.method.loss)
    return stats, syncs


def test_segmentation_training_loop_never_syncs_the_host_per_step(tmp_path):
    """Masks cropped and flipped with their canvases, per-pixel loss over the counted pixels: at most
    one host sync in an epoch of several steps, as in classification."""
    from helpers import seg_tiny_raw

    cfg = config.validate(seg_tiny_raw(training={"batch_size": 8}))
    stats, syncs = _syncs_in_a_local_epoch_after_round_one(cfg, tmp_path)
    assert stats.steps >= 3
    assert syncs.total <= 1, f"{syncs.calls} in {stats.steps} steps"


def test_the_sync_counter_sees_a_per_step_sync(tmp_path):
    cfg = cfg_of(training={"batch_size": 8})
    sim = Simulation(cfg, tmp_path)
    sim.build()
    client = sim.clients[0]

    def syncing_loss(c, x, y):
        loss = F.cross_entropy(c.logits(x), y)
        if bool(torch.isfinite(loss)) and bool((y == 0).any()):
            _ = x[y == 0]
        return loss

    with HostSyncCounter() as syncs:
        stats = client.train(1, syncing_loss)
    assert syncs.total >= 2 * stats.steps + 1, syncs.calls


@cuda
@needs_cuda
@pytest.mark.parametrize("method", ["fedunet", "fml", "fedkd"])
def test_cuda_training_loop_never_syncs_the_host_per_step(tmp_path, method):
    cfg = cfg_of(method=method, training={"batch_size": 8}, runtime={"device": "cuda"})
    sim = Simulation(cfg, tmp_path)
    sim.build()
    sim.run_round(1)
    client = sim.clients[0]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = client.train(1, sim.method.loss)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert stats.steps >= 3 and len(syncs) <= 1, [str(w.message) for w in syncs]


# ------------------------------------------------------------------ resume rule


def test_resume_refuses_a_result_changing_runtime_unless_allowed(tmp_path):
    rounds = {"federated": {"rounds": 3}}
    train(cfg_of(**rounds), tmp_path, stop_after=1)
    with pytest.raises(RunError, match=r"bf16: False -> True.*--allow-runtime-change"):
        train(cfg_of(**rounds, runtime={"bf16": True}), tmp_path, resume=True)
    with pytest.raises(RunError, match=r"channels_last: True -> False"):
        train(cfg_of(**rounds, runtime={"channels_last": False}), tmp_path, resume=True)
    with pytest.raises(RunError, match=r"compile: False -> True"):
        train(cfg_of(**rounds, runtime={"compile": True, "compile_backend": "eager"}), tmp_path, resume=True)
    with pytest.raises(RunError, match=r"deterministic: True -> False"):
        train(cfg_of(**rounds, runtime={"deterministic": False}), tmp_path, resume=True)
    with pytest.raises(RunError, match=r"threads: 1 -> 2"):
        train(cfg_of(**rounds, runtime={"threads": 2}), tmp_path, resume=True)
    # settings that change no number may change (progress, checkpoints)
    train(cfg_of(**rounds, runtime={"checkpoint_every": 1, "progress": False}), tmp_path, resume=True, stop_after=2)
    summary = train(cfg_of(**rounds, runtime={"bf16": True}), tmp_path, resume=True, allow_runtime_change=True)
    segments = summary["provenance"]["runtime_segments"]
    assert [s["rounds"] for s in segments] == [[1, 1], [2, 2], [3, 3]]
    assert [s["bf16"] for s in segments] == [False, False, True]
    for s in segments:
        assert {"started", "device", "bf16", "channels_last", "compile", "deterministic"} <= set(s)
        assert s["device"] == "cpu" and s["started"]
    assert json.loads((tmp_path / "summary.json").read_text())["provenance"]["runtime_segments"] == segments


def test_an_uninterrupted_run_has_one_segment(tmp_path):
    summary = train(cfg_of(), tmp_path)
    (segment,) = summary["provenance"]["runtime_segments"]
    assert segment["rounds"] == [1, 2] and segment["bf16"] is False and segment["deterministic"] is True


def test_cli_resume_flag(tmp_path):
    raw = tiny_raw(federated={"rounds": 2})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"

    def fedunet(*args):
        cmd = [sys.executable, "-m", "fedunet", "train", "--config", str(path), "--out", str(out), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)

    from fedunet.federated import train as train_in_process

    train_in_process(config.validate(raw), out, stop_after=1)
    r = fedunet("--resume", "--set", "runtime.bf16=true")
    assert r.returncode == 4 and "--allow-runtime-change" in r.stderr and "Traceback" not in r.stderr
    r = fedunet("--resume", "--set", "runtime.bf16=true", "--allow-runtime-change")
    assert r.returncode == 0, r.stderr
    segments = json.loads((out / "summary.json").read_text())["provenance"]["runtime_segments"]
    assert [s["bf16"] for s in segments] == [False, True]


# ------------------------------------------------------------------ deterministic CUDA


def backward_ops(t: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind ``t``."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or type(fn).__name__ in seen:
            continue
        seen.add(type(fn).__name__)
        todo += [next_fn for next_fn, _ in fn.next_functions]
    return seen


def test_global_adaptive_average_pooling_is_the_mean_bit_for_bit_on_cpu():
    """AdaptiveAvgPool2d(1) (VGG, ResNet, the fusion's linear head) is computed by ATen as a mean over
    the spatial dims, forward and backward: nothing to replace, on CPU or CUDA."""
    torch.manual_seed(0)
    for shape in [(64, 512, 1, 1), (64, 64, 2, 2), (500, 32, 16, 16), (7, 3, 28, 28)]:
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(*shape).contiguous(memory_format=fmt)
            a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
            ya, yb = F.adaptive_avg_pool2d(a, 1), b.mean(dim=(2, 3), keepdim=True)
            assert "MeanBackward1" in backward_ops(ya) and not any("AdaptiveAvgPool" in op for op in backward_ops(ya))
            g = torch.randn_like(ya)
            ya.backward(g), yb.backward(g)
            assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)


@pytest.mark.parametrize(
    "dims, shape, size, bitwise",
    [
        (2, (8, 16, 8, 8), 2, True),  # the small CNN at 32x32: avg_pool2d, bit-identical
        (2, (8, 16, 7, 7), 2, False),  # at 28x28: averaging matrices, equal up to rounding
        (1, (8, 1, 64), 512, True),  # FeatureProjection 64 -> 512 (narrow VGG)
        (1, (8, 1, 1024), 512, True),  # concat fusion 1024 -> 512
        (1, (8, 1, 512), 100, False),
    ],
)
def test_deterministic_pooling_equals_adaptive_pooling(dims, shape, size, bitwise):
    torch.manual_seed(0)
    ref = (nn.AdaptiveAvgPool1d if dims == 1 else nn.AdaptiveAvgPool2d)(size)
    ours = DeterministicAdaptiveAvgPool(size, dims)
    x = torch.randn(*shape)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(a), ours(b)
    g = torch.randn_like(ya)
    ya.backward(g), yb.backward(g)
    torch.testing.assert_close(yb, ya, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-6)
    if bitwise:
        assert torch.equal(ya, yb)


def test_deterministic_swaps_keep_the_state_dict_and_the_outputs():
    spec = ModelSpec("cnn", 3, 32, 10, width=0.25, unet_d=32, feature_width=512)
    torch.manual_seed(0)
    model = ClientModel(spec).eval()
    x = torch.randn(4, 3, 32, 32)
    before, keys = model(x), list(model.state_dict())
    swapped = replace_nondeterministic(model)
    assert swapped == ["backbone.features.8", "projection.map"]
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)
    vgg = ClientModel(ModelSpec("vgg11", 3, 32, 10, width=0.25, unet_d=32))
    assert replace_nondeterministic(vgg) == [], "global pooling is already the mean"


def test_auto_runtime_is_fp32_and_leaves_channels_last_only_under_inductor_on_cuda(monkeypatch):
    """What step_variants.py measured on an H200: bf16 autocast slower than fp32 at these sizes, and
    torch 2.11's inductor failing channels_last conv weight gradients (NCHW compiled)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    try:
        def resolved(**runtime):
            rt = resolve_runtime(cfg_of(runtime={"device": "cuda", **runtime}))
            return rt.bf16, rt.channels_last

        assert resolved() == (False, True)
        assert resolved(compile=True) == (False, False)
        assert resolved(compile=True, compile_backend="aot_eager") == (False, True)
        assert resolved(compile=True, channels_last=True, bf16=True) == (True, True)  # asked for: given
        assert resolve_runtime(cfg_of(runtime={"device": "cpu", "compile": True})).channels_last
    finally:
        resolve_runtime(cfg_of())  # back to the CPU runtime for the tests that follow


def test_cuda_deterministic_sets_the_cublas_workspace(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    rt = resolve_runtime(cfg_of(runtime={"device": "cuda"}))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE == ":4096:8"
    assert rt.deterministic and rt.result_settings()["threads"] is None
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    resolve_runtime(cfg_of(runtime={"device": "cuda", "deterministic": False}))
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    resolve_runtime(cfg_of())  # back to the CPU runtime for the tests that follow


@cuda
@needs_cuda
@pytest.mark.parametrize("method", ["fedunet", "fedproto", "fd"])
def test_cuda_deterministic_runs_are_bit_identical_and_hit_no_nondeterministic_op(tmp_path, method):
    model = {"architectures": ["vgg11", "cnn"], "width": 0.125, "unet": {"d": 32}}
    cfg = cfg_of(method=method, model=model, federated={"rounds": 3}, runtime={"device": "cuda"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, tmp_path / "a")
        train(cfg, tmp_path / "b", stop_after=1)
        train(cfg, tmp_path / "b", resume=True)
    assert metrics_without_time(tmp_path / "a") == metrics_without_time(tmp_path / "b")
    alerts = {str(w.message).split(" does not have")[0] for w in caught if "deterministic" in str(w.message)}
    assert not alerts, alerts


# one small architecture, two rounds, no diagnostics and no validation split: compiling takes tens of
# seconds per graph on a GPU, so the compiled CUDA tests train as little as shows what they check
SMALL_COMPILED_GPU_RUN = dict(
    model={"architectures": ["cnn"], "width": 0.25, "unet": {"d": 16}},
    federated={"rounds": 2},
    eval={"diagnostics": False, "validation_fraction": 0.0},
)


@cuda
@needs_cuda
def test_cuda_inductor_compile_never_falls_back(tmp_path):
    """Inductor's real kernels on the GPU (compiling takes tens of seconds per graph there: one
    small architecture, training and one evaluation graph)."""
    summary = train(cfg_of(**SMALL_COMPILED_GPU_RUN, runtime={"device": "cuda", "compile": True}), tmp_path)
    assert summary["provenance"]["compile"]["fallbacks"] == 0
    assert not [e for e in summary["events"] if e["event"] == "compile_fallback"]
    assert summary["final"]["pers_acc"] > 0.4  # 3 classes: chance is 1/3


@cuda
@needs_cuda
def test_cuda_graphs_give_the_eager_numbers_and_resume_bit_identically(tmp_path):
    """runtime.compile_mode: reduce-overhead (CUDA graphs) made the launch-bound step 2.4x faster on an
    H200 (step variants, 2026-11-27). Before it can be the GPU default: no fallback, a rerun and a
    resumed run give the same metrics bit for bit, and the numbers are the eager run's up to the
    rounding of fused kernels."""
    graphs = cfg_of(**SMALL_COMPILED_GPU_RUN, runtime={"device": "cuda", "compile": True, "compile_mode": "reduce-overhead"})
    summary = train(graphs, tmp_path / "a")
    assert summary["provenance"]["compile"]["fallbacks"] == 0
    train(graphs, tmp_path / "b", stop_after=1)
    train(graphs, tmp_path / "b", resume=True)
    assert metrics_without_time(tmp_path / "a") == metrics_without_time(tmp_path / "b")
    train(cfg_of(**SMALL_COMPILED_GPU_RUN, runtime={"device": "cuda"}), tmp_path / "eager")
    graphs_rows, eager_rows = metrics_without_time(tmp_path / "a"), metrics_without_time(tmp_path / "eager")
    assert float(graphs_rows[0]["train_loss"]) == pytest.approx(float(eager_rows[0]["train_loss"]), rel=1e-2)
    assert abs(float(graphs_rows[-1]["pers_acc"]) - float(eager_rows[-1]["pers_acc"])) <= 0.1


def test_derived_seeds_are_stable():
    assert derive_seed(0, "model", 1) == derive_seed(0, "model", 1) != derive_seed(0, "model", 2)
    assert derive_seed(0, "model", 1) == 535_332_118_539_220_824  # same on every machine (SHA-256)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_requested_without_cuda_names_the_field(tiny_cfg):
    cfg = tiny_cfg(runtime={"device": "cuda", "threads": 1})
    with pytest.raises(RunError, match=r"runtime.device: 'cuda' requested but CUDA is not available"):
        resolve_runtime(cfg)
