"""``torch.compile`` for the clients: one compiled region per distinct model, checked for fallbacks.

Dynamo caches compiled code per *code object*.  Compiling every client separately puts all of
them (each architecture, train and eval mode, every batch-size class, the diagnostic passes) on
the one cache of ``ClientModel.forward``, whose recompile limit (8) a run with four VGG clients
exceeds within its first round: Dynamo then runs that code eagerly for the rest of the process
and says so in one log warning only.

Here a :class:`Compiler` holds one compiled region per distinct model (its ``ModelSpec``: the
same architecture, width, U-Net and fusion) and entry point (``forward`` or ``features``), each
with its own recompile budget (``isolate_recompiles``; a torch without that option, such as the
2.11 of a GPU image, gets the same from a private copy of the entry's code object); clients of the
same architecture share their region's graphs (parameters are graph inputs, so a second VGG16
client compiles nothing).
The batch dimension is marked dynamic, so the last partial batch and the evaluation batches
reuse the graph.  Anything Dynamo still gives up on (a recompile limit hit) is counted from its
own counters and reported by :meth:`Compiler.new_fallbacks`; the engine records it in
``events.jsonl``.

Compiled artifacts (Inductor's FX graph cache and AOTAutograd's cache; on GPU the Triton
kernels) persist in ``TORCHINDUCTOR_CACHE_DIR``, which defaults here to
``~/.cache/fedunet/torchinductor`` instead of torch's ``/tmp/torchinductor_<user>``: a home
directory is shared by the jobs of a study, also across the nodes of a cluster, and survives
reboots.  Set ``FEDUNET_COMPILE_CACHE`` (or ``TORCHINDUCTOR_CACHE_DIR`` itself) to move it, e.g.
to a project directory on a cluster's shared file system.  Dynamo's tracing is not cached
across processes (torch caches what it generates, not the trace), so every job still traces
each region once: seconds per region.
"""

from __future__ import annotations

import inspect
import os
import types
from collections.abc import Callable, Hashable
from pathlib import Path

import torch
from torch import Tensor, nn

BACKENDS = ("inductor", "aot_eager", "eager")
# inductor's modes; reduce-overhead replays each graph's kernel launches as one CUDA graph (what a
# launch-bound step needs: benchmarks/missed_goals.md); the others take no mode
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Graphs one region may hold: train and eval mode x diagnostics (norms, two ablations) x the
# batch-size classes a backend specializes on (on CPU a convolution picks its kernel by batch
# size: >= 16 or not; a batch of one is its own class) stays below 20.
RECOMPILE_LIMIT = 64
FALLBACK_MARK = "recompile limit"  # in the key of Dynamo's counters["unimplemented"] when it gives up
# torch.compile takes a region's own recompile budget as options in newer torch (our pinned one);
# older ones (2.11 on the GPU image where scripts/device-check.sh first ran) do not
ISOLATES_RECOMPILES = {"isolate_recompiles", "recompile_limit"} <= set(inspect.signature(torch.compile).parameters)


def _forward(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def _features(model: nn.Module, x: Tensor) -> Tensor:
    return model.features(x)


ENTRIES: dict[str, Callable[[nn.Module, Tensor], Tensor]] = {"forward": _forward, "features": _features}


def compile_region(fn: Callable, backend: str, recompile_limit: int, mode: str = "default") -> Callable:
    """``torch.compile(fn)`` with a recompile cache and budget of its own (``mode``: inductor's).

    Without the ``isolate_recompiles`` option, the cache is isolated the way Dynamo keys it: by code
    object, so the region compiles a private copy of ``fn``'s code; the budget is then Dynamo's
    per-code-object limit, set process-wide."""
    modal = {"mode": mode} if mode != "default" else {}
    if ISOLATES_RECOMPILES:
        return torch.compile(fn, backend=backend, isolate_recompiles=True, recompile_limit=recompile_limit, **modal)
    private = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    dynamo_config = torch._dynamo.config
    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, name, recompile_limit)
    return torch.compile(private, backend=backend, **modal)


def cache_dir() -> Path:
    """Where compiled artifacts are kept (set for torch when compile is first used)."""
    explicit = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.environ.get("FEDUNET_COMPILE_CACHE")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fedunet" / "torchinductor"


def use_persistent_cache() -> Path:
    """Point Inductor's caches at :func:`cache_dir` (unless the user already did) and make sure the
    FX graph and AOTAutograd caches are on (torch's defaults, made explicit)."""
    path = cache_dir()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path))
    try:
        import torch._functorch.config as functorch_config
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        functorch_config.enable_autograd_cache = True
    except (ImportError, AttributeError):  # an older torch: its defaults apply
        pass
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def fallback_count() -> int:
    """How many times Dynamo gave up on a frame at its recompile limit in this process."""
    from torch._dynamo.utils import counters

    return sum(n for key, n in counters["unimplemented"].items() if FALLBACK_MARK in key.lower())


def graph_count() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def graph_break_count() -> int:
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


def region_key(model: nn.Module) -> Hashable | None:
    """Models with equal keys share compiled graphs: a ``ClientModel``'s spec (architecture, width,
    U-Net, fusion...).  Other modules are not compiled (``None``)."""
    spec = getattr(model, "spec", None)
    if spec is None:
        return None
    return (type(model).__module__, type(model).__qualname__, spec)


class Compiler:
    """Compiled regions shared by every client of a run (see the module docstring)."""

    def __init__(self, backend: str = "inductor", recompile_limit: int | None = None, mode: str = "default"):
        if backend not in BACKENDS:
            raise ValueError(f"runtime.compile_backend: {backend!r} is not allowed; allowed values: {', '.join(BACKENDS)}")
        if mode not in MODES or (mode != "default" and backend != "inductor"):
            allowed = ", ".join(MODES) if backend == "inductor" else "default (the other modes are inductor's)"
            raise ValueError(f"runtime.compile_mode: {mode!r} is not allowed with backend {backend}; allowed values: {allowed}")
        self.backend, self.mode = backend, mode
        self.recompile_limit = recompile_limit or RECOMPILE_LIMIT
        self.regions: dict[tuple, Callable] = {}
        self.cache = use_persistent_cache() if backend == "inductor" else None
        self._fallbacks_seen = self._fallbacks_at_start = fallback_count()
        self._graphs_at_start = graph_count()
        self._breaks_at_start = graph_break_count()

    def __call__(self, model: nn.Module, entry: str, x: Tensor) -> Tensor:
        key = region_key(model)
        if key is None:
            return ENTRIES[entry](model, x)
        fn = self.regions.get((key, entry))
        if fn is None:
            fn = compile_region(ENTRIES[entry], self.backend, self.recompile_limit, self.mode)
            self.regions[(key, entry)] = fn
        if x.dim() > 0 and x.shape[0] > 1:
            torch._dynamo.maybe_mark_dynamic(x, 0)
        return fn(model, x)

    def new_fallbacks(self) -> int:
        """Recompile-limit fallbacks to eager since the last call (process-wide: Dynamo counts them so)."""
        now = fallback_count()
        new, self._fallbacks_seen = now - self._fallbacks_seen, now
        return new

    def stats(self) -> dict:
        """What compiling did in this process since the compiler was made (for the run's summary)."""
        return {
            "backend": self.backend,
            "regions": len(self.regions),
            "graphs": graph_count() - self._graphs_at_start,
            "graph_breaks": graph_break_count() - self._breaks_at_start,
            "fallbacks": fallback_count() - self._fallbacks_at_start,
            "cache_dir": str(self.cache) if self.cache else None,
        }
