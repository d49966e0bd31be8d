"""When a difference between A/B variants is real: the report's verdict and `autoSelect`'s pick.

Pure arithmetic on counts (sends and successes per variant), no database, no Prefect. The
decisions and the simulations that hold them to their error rates are in `docs/experiments.md`:

- `compare_variants` is the report's fixed-horizon verdict: the best variant against each other,
  two-sided, a pooled two-proportion z-test or Fisher's exact test when a cell's expected count
  is under 5, Bonferroni over the comparisons; a winner beats every other variant. Without one,
  it says how many more sends per variant would show a `min_lift` at `power`.
- `auto_select` may act at every delivery run, so it uses an always-valid test (a mixture
  sequential probability ratio test) whose false-winner rate stays under `level` however many
  times, and whenever, it looks.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import fisher_exact

POSITIVE_REPLY_RATE = "positive-reply rate"
REPLY_RATE = "reply rate"
METRICS = (POSITIVE_REPLY_RATE, REPLY_RATE)

# Cochran's rule: below this expected count in any cell, the normal approximation is off.
MIN_EXPECTED_FOR_Z = 5.0


@dataclass(frozen=True)
class VariantCounts:
    """One variant's sends and successes (replies or positive replies, per the metric)."""

    key: str
    sends: int
    successes: int


@dataclass(frozen=True)
class VariantResult:
    """One variant's rate, interval and comparison with the best variant."""

    key: str
    sends: int
    successes: int
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    beats: bool
    # p_value times the number of comparisons (Bonferroni), capped at 1: what `level` is held to.
    adjusted_p_value: float | None = None


@dataclass(frozen=True)
class ExperimentVerdict:
    """The report's verdict on one step's variants."""

    metric: str
    level: float
    winner: str | None
    variants: tuple[VariantResult, ...]
    sends_needed_per_variant: int | None
    sentence: str


@dataclass(frozen=True)
class AutoSelection:
    """The variant every later lead gets, and the figures to record with the choice."""

    winner: str
    metric: str
    level: float
    p_value: float  # always-valid, adjusted: the largest over the winner's comparisons
    variants: tuple[VariantResult, ...]
    sentence: str

    def figures(self) -> dict[str, Any]:
        """The choice as a JSON-ready record."""
        return {
            "winner": self.winner,
            "metric": self.metric,
            "level": self.level,
            "pValue": self.p_value,
            "test": "mSPRT (always-valid), Bonferroni over the winner's comparisons",
            "sentence": self.sentence,
            "variants": [
                {"key": v.key, "sends": v.sends, "successes": v.successes, "rate": v.rate}
                for v in self.variants
            ],
        }


def compare_variants(
    counts: Sequence[VariantCounts],
    *,
    metric: str,
    level: float = 0.05,
    power: float = 0.8,
    min_lift: float = 0.01,
) -> ExperimentVerdict:
    """The best variant against each other: a winner, or how many more sends would tell."""
    _check(counts, metric=metric, level=level, power=power, min_lift=min_lift)
    best = _best(counts)
    comparisons = max(len(counts) - 1, 1)
    p_values = {
        v.key: _p_value(best, v) for v in counts if best is not None and v is not best and v.sends
    }
    adjusted = {key: min(1.0, p * comparisons) for key, p in p_values.items()}
    won = (
        best is not None
        and len(counts) > 1
        and len(adjusted) == len(counts) - 1
        and all(p <= level for p in adjusted.values())
    )
    results = tuple(
        _result(v, level, p_values.get(v.key), adjusted.get(v.key), beats=won and v is not best)
        for v in counts
    )
    if won:
        assert best is not None
        decisive = max(adjusted.values())
        losers = _join([v.key for v in counts if v is not best])
        sentence = f"{best.key} beats {losers} on {metric} ({_p_text(decisive)})"
        return ExperimentVerdict(metric, level, best.key, results, None, sentence)
    needed = _sends_still_needed(counts, level=level, power=power, min_lift=min_lift)
    sentence = _no_winner_sentence(counts, needed, adjusted, min_lift=min_lift, metric=metric)
    return ExperimentVerdict(metric, level, None, results, needed, sentence)


def sends_per_variant_for_lift(
    rate: float, *, level: float = 0.05, power: float = 0.8, min_lift: float = 0.01
) -> int:
    """Sends per variant for a two-sided test at `level` to see `rate` vs `rate + min_lift`.

    The standard two-proportion formula (Fleiss; no continuity correction), with p1 = rate and
    p2 = rate + min_lift (or rate - min_lift, p2 = rate, when the lift would pass 100%):
    n = (z(1 - level/2) * sqrt(2 p(1 - p)) + z(power) * sqrt(p1(1 - p1) + p2(1 - p2)))^2
        / min_lift^2, with p = (p1 + p2) / 2, rounded up.
    """
    p1 = min(max(rate, 0.0), 1.0 - min_lift)
    p2 = p1 + min_lift
    mean = (p1 + p2) / 2
    z_level = float(ndtri(1 - level / 2))
    z_power = float(ndtri(power))
    root = z_level * math.sqrt(2 * mean * (1 - mean)) + z_power * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    # Round off float noise before the ceiling, so an exact 2,212.0000000001 is not 2,213.
    return math.ceil(round(root * root / (min_lift * min_lift), 6))


def auto_select(
    counts: Sequence[VariantCounts],
    *,
    level: float,
    min_sends_per_variant: int,
    metric: str = REPLY_RATE,
    min_lift: float = 0.01,
) -> AutoSelection | None:
    """The winner once every variant has its minimum sends and an always-valid test says so.

    Safe to call at every run on the running counts: the false-winner rate stays under `level`
    over any number of looks. `min_lift` is the lift the test is tuned to see soonest (the
    mixing scale of the mSPRT).
    """
    _check(counts, metric=metric, level=level, min_lift=min_lift)
    if min_sends_per_variant < 1:
        raise ValueError(f"min_sends_per_variant must be at least 1, not {min_sends_per_variant}")
    if len(counts) < 2 or any(v.sends < min_sends_per_variant for v in counts):
        return None
    best = _best(counts)
    assert best is not None  # every variant has sends
    comparisons = len(counts) - 1
    p_values: dict[str, float] = {}
    for v in counts:
        if v is best:
            continue
        # Ville's inequality: P(the ratio ever reaches 1/a) <= a, so 1/ratio is a p-value at
        # any look; a winner must beat each of the others, hence the Bonferroni factor.
        p_values[v.key] = min(1.0, 1 / _mixture_likelihood_ratio(best, v, min_lift))
        if p_values[v.key] * comparisons > level:
            return None
    adjusted = {key: min(1.0, p * comparisons) for key, p in p_values.items()}
    decisive = max(adjusted.values())
    results = tuple(
        _result(v, level, p_values.get(v.key), adjusted.get(v.key), beats=v is not best)
        for v in counts
    )
    losers = _join([v.key for v in counts if v is not best])
    sends = _thousands(min(v.sends for v in counts))
    sentence = (
        f"{best.key} beats {losers} on {metric} (always-valid {_p_text(decisive)}, "
        f"at least {sends} sends per variant): later leads all get {best.key}"
    )
    return AutoSelection(best.key, metric, level, decisive, results, sentence)


def wilson_interval(successes: int, sends: int, *, level: float) -> tuple[float, float]:
    """The Wilson score interval of a rate at confidence 1 - `level` (good near 0 and 1)."""
    z = float(ndtri(1 - level / 2))
    rate = successes / sends
    denominator = 1 + z * z / sends
    centre = (rate + z * z / (2 * sends)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / sends + z * z / (4 * sends * sends)) / denominator
    # At 0% or 100% the bound is exactly the rate; the arithmetic would leave float noise.
    low = 0.0 if successes == 0 else centre - half
    high = 1.0 if successes == sends else centre + half
    return low, high


def _check(counts: Sequence[VariantCounts], *, metric: str, **fractions: float) -> None:
    """Refuse bad input by the variant and field: unknown metric, bad counts, odd fractions."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    for name, value in fractions.items():
        if not 0 < value < 1:
            raise ValueError(f"{name} must be between 0 and 1 (exclusive), not {value}")
    seen: set[str] = set()
    for v in counts:
        if v.key in seen:
            raise ValueError(f"variant {v.key!r} appears twice")
        seen.add(v.key)
        if v.sends < 0:
            raise ValueError(f"variant {v.key!r}: sends must not be negative, not {v.sends}")
        if not 0 <= v.successes <= v.sends:
            raise ValueError(
                f"variant {v.key!r}: successes must be between 0 and sends ({v.sends}), "
                f"not {v.successes}"
            )


def _best(counts: Sequence[VariantCounts]) -> VariantCounts | None:
    """The highest rate; on a tie the one with more sends, then the first listed."""
    sent = [v for v in counts if v.sends]
    if not sent:
        return None
    return max(sent, key=lambda v: (v.successes / v.sends, v.sends, -counts.index(v)))


def _p_value(a: VariantCounts, b: VariantCounts) -> float:
    """Two-sided: the pooled z-test, or Fisher's exact test when an expected count is under 5."""
    sends = a.sends + b.sends
    successes = a.successes + b.successes
    pooled = successes / sends
    smallest_expected = min(a.sends, b.sends) * min(pooled, 1 - pooled)
    if smallest_expected < MIN_EXPECTED_FOR_Z:
        table = np.array(
            [[a.successes, a.sends - a.successes], [b.successes, b.sends - b.successes]]
        )
        return float(fisher_exact(table).pvalue)
    diff = a.successes / a.sends - b.successes / b.sends
    se = math.sqrt(pooled * (1 - pooled) * (1 / a.sends + 1 / b.sends))
    return float(min(1.0, 2 * ndtr(-abs(diff) / se)))


def _mixture_likelihood_ratio(a: VariantCounts, b: VariantCounts, tau: float) -> float:
    """The normal mSPRT statistic for rate(a) - rate(b) = 0, mixing N(0, tau^2) over the lift.

    Johari, Pekelis & Walsh, "Always valid inference" (2017), with the variance pooled under
    the null: Lambda = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2))).
    """
    pooled = (a.successes + b.successes) / (a.sends + b.sends)
    variance = pooled * (1 - pooled) * (1 / a.sends + 1 / b.sends)
    if variance == 0:  # nothing or everything succeeded: no evidence either way
        return 1.0
    diff = a.successes / a.sends - b.successes / b.sends
    tau2 = tau * tau
    exponent = diff * diff * tau2 / (2 * variance * (variance + tau2))
    return math.sqrt(variance / (variance + tau2)) * math.exp(min(exponent, 700.0))


def _result(
    v: VariantCounts, level: float, p: float | None, adjusted: float | None, *, beats: bool
) -> VariantResult:
    if not v.sends:
        return VariantResult(v.key, 0, 0, None, None, None, None, False, None)
    low, high = wilson_interval(v.successes, v.sends, level=level)
    return VariantResult(
        v.key, v.sends, v.successes, v.successes / v.sends, low, high, p, beats, adjusted
    )


def _sends_still_needed(
    counts: Sequence[VariantCounts], *, level: float, power: float, min_lift: float
) -> int | None:
    """More sends the variant furthest behind needs; None with no sends to take a rate from."""
    sends = sum(v.sends for v in counts)
    if len(counts) < 2 or not sends:
        return None
    rate = sum(v.successes for v in counts) / sends
    # The Bonferroni level the comparisons are held to, so the plan matches the test.
    total = sends_per_variant_for_lift(
        rate, level=level / (len(counts) - 1), power=power, min_lift=min_lift
    )
    return max(0, total - min(v.sends for v in counts))


def _no_winner_sentence(
    counts: Sequence[VariantCounts],
    needed: int | None,
    adjusted: dict[str, float],
    *,
    min_lift: float,
    metric: str,
) -> str:
    if len(counts) < 2:
        return "no winner: only one variant" if counts else "no winner: no variants"
    lift = f"{min_lift * 100:.3g}-point lift"
    if needed is None:
        return "no winner yet: nothing sent"
    if needed:
        more = _thousands(needed)
        return f"no winner yet: about {more} more sends per variant needed to see a {lift}"
    closest = min(adjusted.values(), default=1.0)
    return (
        f"no winner: enough sends to see a {lift} in {metric}, "
        f"and no variant differs from the best ({_p_text(closest)})"
    )


def _p_text(p: float) -> str:
    """p to 3 significant digits, in decimals: "p = 0.0123", or "p < 0.0001"."""
    return "p < 0.0001" if p < 0.0001 else f"p = {p:.3g}"


def _thousands(n: int) -> str:
    return f"{n:,}"


def _join(keys: list[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    return keys[0] if len(keys) == 1 else f"{', '.join(keys[:-1])} and {keys[-1]}"
