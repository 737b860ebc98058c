"""The profiler script runs and cuts both loops' rounds into phases (CI runs it at the small size)."""

import json

from profile_engine import PHASES, main


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
