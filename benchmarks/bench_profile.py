"""The profiler script runs and cuts both loops' rounds into phases (CI runs it at the small size)."""

import json

from profile_engine import PHASES, main, phases


def test_profile_cuts_each_round_into_phases(tmp_path):
    data = json.loads(main(["--size", "small", "--rounds", "1", "--out", str(tmp_path)]).read_text())
    assert set(data["implementations"]) == {"ours", "reference"}
    for impl, r in data["implementations"].items():
        ms = r["phases_ms"]
        assert list(ms) == PHASES
        assert min(ms.values()) >= 0, impl
        # every step of local training was seen by its annotation
        for phase in ("data", "forward: conv + BatchNorm", "backward: conv + BatchNorm", "optimizer"):
            assert ms[phase] > 0, (impl, phase)
        # the phases add up to the profiled round (the rest is "outside torch ops")
        assert abs(sum(ms.values()) - 1e3 * r["profiled_round_s"]) <= 0.05 * 1e3 * r["profiled_round_s"], impl
    assert data["provenance"]["commit"] and data["provenance"]["torch"]


class _Event:
    def __init__(self, name, us, thread, children=()):
        self.name, self.cpu_time_total, self.thread, self.cpu_parent = name, us, thread, None
        self.cpu_children = list(children)
        for c in self.cpu_children:
            c.cpu_parent = self


class _Profile:
    def __init__(self, *top):
        self._events = []

        def walk(e):
            self._events.append(e)
            for c in e.cpu_children:
                walk(c)

        for e in top:
            walk(e)

    def events(self):
        return self._events


def test_a_backward_on_the_device_thread_is_counted_once():
    """CUDA's autograd runs the backward on a thread of its own while the round's thread waits in
    Tensor.backward: a 100 ms round is 100 ms of phases, with that thread's conv share split out."""
    conv_bw = "autograd::engine::evaluate_function: ConvolutionBackward0"
    prof = _Profile(
        _Event("fedunet.data", 10e3, 1),
        _Event("fedunet.forward", 30e3, 1, [_Event("aten::conv2d", 20e3, 1)]),
        _Event("fedunet.backward", 50e3, 1),
        _Event(conv_bw, 35e3, 2),  # the device thread, during the main thread's backward
        _Event("autograd::engine::evaluate_function: AddmmBackward0", 5e3, 2),
        _Event("Optimizer.step#SGD.step", 10e3, 1),
    )
    ms = phases(prof, 100e3)
    assert abs(sum(ms.values()) - 100) < 1e-9, ms
    assert ms["backward: conv + BatchNorm"] == 35 and ms["backward: other layers"] == 15
    assert ms["forward: conv + BatchNorm"] == 20 and ms["data"] == 10 and ms["optimizer"] == 10
