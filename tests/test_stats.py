"""Confidence intervals: the t quantile against the published table, and the CI of known samples by hand."""

from __future__ import annotations

import math

import pytest

from analysis.stats import mean_ci, student_t_critical, student_t_two_sided_probability

# Two-sided 95% (and one 99%) critical values of Student's t, from the standard table.
T_TABLE = [(0.95, 1, 12.706), (0.95, 2, 4.303), (0.95, 3, 3.182), (0.95, 4, 2.776), (0.95, 9, 2.262),
           (0.95, 29, 2.045), (0.95, 120, 1.980), (0.99, 5, 4.032)]  # fmt: skip


@pytest.mark.parametrize(("level", "dof", "expected"), T_TABLE)
def test_t_critical_matches_the_table(level, dof, expected):
    assert student_t_critical(level, dof) == pytest.approx(expected, abs=5e-4)


def test_t_cdf_closed_forms():
    # dof 1 is the Cauchy distribution: P(|T| <= 1) = 2 atan(1) / pi = 0.5; dof 2: t / sqrt(2 + t^2).
    assert student_t_two_sided_probability(1.0, 1) == pytest.approx(0.5)
    assert student_t_two_sided_probability(2.0, 2) == pytest.approx(2 / math.sqrt(6))
    assert student_t_two_sided_probability(0.0, 7) == 0.0


def test_mean_ci_of_known_samples():
    # 1..5: mean 3, s = sqrt(10 / 4) = 1.5811, s / sqrt(5) = 0.70711, t(0.975, 4) = 2.77645 -> 1.96324
    ci = mean_ci([1, 2, 3, 4, 5])
    assert ci.mean == 3 and ci.n == 5
    assert ci.std == pytest.approx(math.sqrt(2.5))
    assert ci.half_width == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert (ci.low, ci.high) == pytest.approx((3 - 1.963243, 3 + 1.963243), rel=1e-6)
    assert ci.format(digits=2) == "3.00 ± 1.96"
    # Three seeds at 93.1 / 93.5 / 92.9 %: s = 0.30551, t(0.975, 2) = 4.30265 -> half-width 0.75893
    seeds = mean_ci([0.931, 0.935, 0.929])
    assert seeds.format(scale=100) == "93.17 ± 0.76"


def test_mean_ci_edge_cases():
    single = mean_ci([0.9])
    assert single.mean == 0.9 and math.isnan(single.half_width) and single.format(scale=100) == "90.00"
    assert mean_ci([2.0, 2.0, 2.0]).half_width == 0.0
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci([])
    with pytest.raises(ValueError, match="finite"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="level must be in"):
        student_t_critical(1.5, 3)
    with pytest.raises(ValueError, match="dof must be a positive integer"):
        student_t_critical(0.95, 0)
