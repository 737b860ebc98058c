import math

import pytest

from fedunet.stats import flattened, holm, mean_interval, paired_difference, t975, t_two_sided_p


def test_paired_difference_matches_a_hand_computed_example():
    # differences 0.05, 0.02, 0.04: mean 0.036667, sample sd 0.0152753, se 0.0088192,
    # t(0.975, 2) = 4.303 -> half-width 0.037949 -> [-0.001282, 0.074616]: includes zero
    a = {0: 0.80, 1: 0.82, 2: 0.78, 7: 0.5}  # seed 7 has no partner: left out
    b = {0: 0.75, 1: 0.80, 2: 0.74}
    d = paired_difference(a, b)
    assert d.n == 3
    assert d.mean == pytest.approx(0.0366667, abs=1e-6)
    assert d.low == pytest.approx(-0.001282, abs=1e-6) and d.high == pytest.approx(0.074616, abs=1e-6)
    assert not d.excludes_zero
    # t = 0.036667 / 0.0088192 = 4.1576; with 2 df, P(|T| >= t) = 1 - t / sqrt(2 + t^2) = 0.05327
    assert d.se == pytest.approx(0.0088192, abs=1e-6) and d.p_value == pytest.approx(0.05327, abs=1e-5)


def test_unmeasured_values_are_not_paired():
    """A study without the global protocol has no global accuracy: nothing to pair, no error."""
    assert paired_difference({0: None, 1: None}, {0: None, 1: None}).n == 0
    d = paired_difference({0: 0.8, 1: float("nan"), 2: 0.7}, {0: 0.7, 1: 0.6, 2: None})
    assert (d.n, d.mean) == (1, pytest.approx(0.1))


def test_a_consistent_difference_excludes_zero():
    # differences 0.05, 0.04, 0.045: mean 0.045, sd 0.005, half-width 4.303 * 0.005 / sqrt(3) = 0.012422
    d = paired_difference({0: 0.95, 1: 0.94, 2: 0.945}, {0: 0.90, 1: 0.90, 2: 0.90})
    assert d.low == pytest.approx(0.032578, abs=1e-6) and d.high == pytest.approx(0.057422, abs=1e-6)
    assert d.excludes_zero
    assert paired_difference({0: 0.9}, {0: 0.8}).excludes_zero is False  # one seed proves nothing


def test_t_quantiles_follow_the_table_and_tend_to_the_normal():
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(30) == 2.042
    assert 2.021 > t975(50) > 2.000
    assert t975(1000) == 1.960
    with pytest.raises(ValueError):
        t975(0)


def test_mean_interval_of_one_value_is_unbounded():
    i = mean_interval([0.7])
    assert i.mean == 0.7 and math.isinf(i.half_width)


def test_flattened_compares_the_last_window_with_the_one_before():
    rising = [0.5 + 0.01 * r for r in range(20)]  # +5 points per 5 rounds
    ok, delta = flattened(rising)
    assert not ok and delta == pytest.approx(0.05)
    flat = [0.8] * 10 + [0.80, 0.81, 0.80, 0.81, 0.80]
    ok, delta = flattened(flat)
    assert ok and delta == pytest.approx(0.004)
    assert flattened([0.8] * 9) == (False, pytest.approx(math.nan, nan_ok=True))


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 20, 30, 60, 120])
def test_t_p_value_is_five_percent_at_the_tabulated_quantile(df):
    assert t_two_sided_p(t975(df), df) == pytest.approx(0.05, abs=1e-4)  # the table has three decimals
    assert t_two_sided_p(-t975(df), df) == t_two_sided_p(t975(df), df) and t_two_sided_p(0.0, df) == pytest.approx(1.0)


def test_t_p_value_matches_the_closed_forms_of_one_and_two_df():
    for t in (0.3, 1.0, 2.5, 12.0, 80.0):
        assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), rel=1e-9)  # Cauchy
        assert t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert t_two_sided_p(math.inf, 3) == 0.0 and math.isnan(t_two_sided_p(math.nan, 3))


def test_holm_steps_down_keeps_order_and_skips_nan():
    # sorted 0.01, 0.03, 0.04, 0.5 of a family of 4: 0.04, 0.09, max(0.08, 0.09), 0.5
    adjusted = holm([0.01, 0.04, 0.03, math.nan, 0.5])
    assert adjusted[:3] == pytest.approx([0.04, 0.09, 0.09]) and math.isnan(adjusted[3]) and adjusted[4] == 0.5
    assert holm([0.3, 0.6]) == [0.6, 0.6] and holm([0.9, 0.9, 0.9]) == [1.0, 1.0, 1.0] and holm([]) == []


def test_p_value_of_intervals_without_spread_or_partner():
    assert mean_interval([1.0, 1.0, 1.0]).p_value == 0.0 and mean_interval([0.0, 0.0]).p_value == 1.0
    assert math.isnan(mean_interval([0.2]).p_value) and math.isnan(mean_interval([]).p_value)
