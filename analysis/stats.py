"""Means with Student-t confidence intervals, for tables over seeds.

With ``n`` seeds the interval is ``mean ± t(1 - (1 - level) / 2, n - 1) · s / √n``, where ``s`` is the sample
standard deviation (Bessel-corrected). The t quantile is computed here, from the closed-form CDF of Student's t
with integer degrees of freedom (Abramowitz & Stegun 1964, 26.7.3-4), so no SciPy is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def student_t_two_sided_probability(t: float, dof: int) -> float:
    """Return ``P(|T| <= t)`` for Student's t with ``dof`` degrees of freedom.

    Args:
        t: A non-negative value.
        dof: Degrees of freedom, a positive integer.

    Raises:
        ValueError: If ``dof`` is not a positive integer or ``t`` is negative.
    """
    if dof < 1 or int(dof) != dof:
        raise ValueError(f"dof must be a positive integer, got {dof!r}")
    if t < 0:
        raise ValueError(f"t must be >= 0, got {t}")
    theta = math.atan(t / math.sqrt(dof))
    cos2 = math.cos(theta) ** 2
    if dof % 2 == 1:
        # A(t|ν) = 2/π (θ + sinθ cosθ (1 + 2/3 cos²θ + (2·4)/(3·5) cos⁴θ + ... ))  for odd ν
        series, term = 0.0, 1.0
        if dof > 1:
            series = 1.0
            for k in range(1, (dof - 3) // 2 + 1):
                term *= (2 * k) / (2 * k + 1) * cos2
                series += term
        return (2 / math.pi) * (theta + math.sin(theta) * math.cos(theta) * series)
    # A(t|ν) = sinθ (1 + 1/2 cos²θ + (1·3)/(2·4) cos⁴θ + ... )  for even ν
    series, term = 1.0, 1.0
    for k in range(1, (dof - 2) // 2 + 1):
        term *= (2 * k - 1) / (2 * k) * cos2
        series += term
    return math.sin(theta) * series


def student_t_critical(level: float, dof: int) -> float:
    """Return the two-sided critical value ``t`` with ``P(|T| <= t) = level`` (e.g. 12.706 for 95% and 1 dof).

    Args:
        level: Confidence level in (0, 1).
        dof: Degrees of freedom, a positive integer.

    Raises:
        ValueError: If ``level`` is not in (0, 1) or ``dof`` is not a positive integer.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    low, high = 0.0, 1.0
    while student_t_two_sided_probability(high, dof) < level:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if student_t_two_sided_probability(middle, dof) < level:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


@dataclass(frozen=True)
class MeanCI:
    """A sample mean with its confidence interval.

    Attributes:
        mean: The sample mean.
        half_width: Half the interval's width; ``nan`` with fewer than two samples.
        std: The Bessel-corrected sample standard deviation; ``nan`` with fewer than two samples.
        n: The number of samples.
        level: The confidence level.
    """

    mean: float
    half_width: float
    std: float
    n: int
    level: float = 0.95

    @property
    def low(self) -> float:
        """Lower end of the interval."""
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        """Upper end of the interval."""
        return self.mean + self.half_width

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """Format as ``mean ± half_width`` (just ``mean`` with one sample), values multiplied by ``scale``."""
        if self.n < 2:
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.half_width * scale:.{digits}f}"


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Return the mean of ``values`` with its Student-t confidence interval.

    Args:
        values: Samples, e.g. the test accuracy of each seed.
        level: Confidence level.

    Raises:
        ValueError: If ``values`` is empty or holds a non-finite number.
    """
    samples = [float(value) for value in values]
    if not samples:
        raise ValueError("mean_ci needs at least one value, got none")
    if not all(math.isfinite(value) for value in samples):
        raise ValueError(f"mean_ci needs finite values, got {samples}")
    n = len(samples)
    mean = math.fsum(samples) / n
    if n < 2:
        return MeanCI(mean=mean, half_width=math.nan, std=math.nan, n=n, level=level)
    std = math.sqrt(math.fsum((value - mean) ** 2 for value in samples) / (n - 1))
    half_width = student_t_critical(level, n - 1) * std / math.sqrt(n)
    return MeanCI(mean=mean, half_width=half_width, std=std, n=n, level=level)
