import pytest

from agent.energy import COUNTER, NONE, POWER_INSTANT, POWER_INTEGRATED, energy_step
from agent.gpu import GpuSample


def sample(t: float, energy_mj: int | None, power_mw: int | None) -> GpuSample:
    return GpuSample(0, t, energy_mj, power_mw, 50, 0, ())


def test_counter_delta_is_exact_in_joules():
    step = energy_step(sample(10.0, 1_000_000, 300_000), sample(12.0, 1_801_234, 999_000))
    assert (step.seconds, step.energy_j, step.method, step.counter_reset) == (2.0, 801.234, COUNTER, False)


def test_counter_that_goes_down_is_a_reset_and_falls_back_to_power():
    step = energy_step(sample(0.0, 9_000_000, 400_000), sample(1.0, 120, 600_000))
    assert step.counter_reset
    assert step.method == POWER_INTEGRATED
    assert step.energy_j == pytest.approx(500.0)  # trapezoid of 400 W and 600 W over 1 s


def test_without_counter_power_is_integrated():
    step = energy_step(sample(0.0, None, 100_000), sample(4.0, None, 300_000))
    assert (step.method, step.energy_j) == (POWER_INTEGRATED, pytest.approx(800.0))


def test_one_power_reading_gives_instant_power_times_time():
    step = energy_step(sample(0.0, None, None), sample(2.5, None, 200_000))
    assert (step.method, step.energy_j) == (POWER_INSTANT, pytest.approx(500.0))


def test_no_reading_at_all_counts_time_but_no_energy():
    step = energy_step(sample(0.0, None, None), sample(1.0, None, None))
    assert (step.seconds, step.energy_j, step.method) == (1.0, 0.0, NONE)
