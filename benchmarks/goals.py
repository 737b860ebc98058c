"""Goals that are not timings (e.g. equal accuracy), recorded by the benchmarks that measure them
and reported beside the timing ratios (see conftest.py)."""

CHECKS: list[dict] = []


def record_check(goal: str, case: str, value: float, limit: float, met: bool) -> None:
    CHECKS.append({"goal": goal, "case": case, "ratio": value, "minimum": limit, "met": met, "slow": "", "fast": ""})
