"""Footprint conventions: the model-card (TDP) convention against the Llama 2 paper's Table 2,
and measured vs TDP on a hand-computed job."""

from __future__ import annotations

from fractions import Fraction

import pytest

from api.accounting.conventions import (
    Footprint,
    FootprintInput,
    footprint,
    format_tco2e,
    model_card_markdown,
)

# Llama 2 paper (arXiv 2307.09288), Table 2 "CO2 emissions during pretraining", A100-80GB.
# (model, GPU-hours, power W, published tCO2eq); total 3,311,616 GPU-hours, 539.00 tCO2eq.
LLAMA2_TABLE2 = [
    ("7B", 184_320, 400, "31.22"),
    ("13B", 368_640, 400, "62.44"),
    ("34B", 1_038_336, 350, "153.90"),
    ("70B", 1_720_320, 400, "291.42"),
]
LLAMA2_TOTAL_GPU_HOURS = 3_311_616
LLAMA2_TOTAL_T = "539.00"

# One intensity for every row. The paper's "power" is already PUE-adjusted, so PUE = 1.0.
LLAMA2_INTENSITY = 423.5  # gCO2e per kWh of GPU-hours × power


def _llama2_rows() -> list[Footprint]:
    return [
        footprint(
            FootprintInput(
                gpu_model="A100-80GB",
                gpu_hours=hours,
                measured_energy_kwh=0.0,  # not published; the TDP convention does not use it
                tdp_w=power,
                pue=1.0,
                intensity_g_per_kwh=LLAMA2_INTENSITY,
                market_g_per_kwh=0.0,  # 100 % offset by Meta's sustainability program
                embodied_kg=0.0,  # not reported in the paper
            ),
            "tdp",
        )
        for _, hours, power, _ in LLAMA2_TABLE2
    ]


def _interval(width_below: Fraction, width_above: Fraction) -> tuple[Fraction, Fraction]:
    """The intensities (g/kWh) for which every published row t satisfies
    t - width_below <= kWh × I / 1e6 < t + width_above."""
    lo, hi = Fraction(0), Fraction(10**9)
    for _, hours, power, published in LLAMA2_TABLE2:
        kwh = Fraction(hours * power, 1000)
        t = Fraction(published)
        lo = max(lo, (t - width_below) * 10**6 / kwh)
        hi = min(hi, (t + width_above) * 10**6 / kwh)
    return lo, hi


def test_llama2_table2_is_one_intensity_truncated_to_two_decimals():
    """Reproduces every row and the total of Llama 2's Table 2 with ONE intensity.

    GPU energy per row (GPU-hours × power / 1000, PUE 1.0 because the power is already
    PUE-adjusted): 7B 73,728 kWh; 13B 147,456; 34B 363,417.6; 70B 688,128; sum 1,272,729.6.

    Rounded to nearest (half-up or banker's alike), each row bounds the intensity I:
        7B  [423.3805, 423.5162)    13B [423.4144, 423.4823)
        34B [423.4660, 423.4935)    70B [423.4895, 423.5041)
    13B needs I < 423.4823 and 70B needs I >= 423.4895: the intervals do not meet, so no
    single intensity reproduces the table under any round-to-nearest rule. The tie rule is
    irrelevant, no product lands on a half cent; rounding up (ceiling) fails the same way.

    Truncated to 2 decimals (t <= kWh × I / 1e6 < t + 0.01), the rows bound I to
    [423.4968, 423.5073) (70B from below, 34B from above), and the published total 539.00,
    truncated or rounded, to [423.4992, 423.5071). 423.5 g/kWh lies in all of them:
        7B  73,728 × 423.5      =  31,223,808 g ->  31.223808 t ->  31.22
        13B 147,456 × 423.5     =  62,447,616 g ->  62.447616 t ->  62.44  (rounding: 62.45)
        34B 363,417.6 × 423.5   = 153,907,353.6 g -> 153.9073536 t -> 153.90 (rounding: 153.91)
        70B 688,128 × 423.5     = 291,422,208 g -> 291.422208 t -> 291.42
        sum 1,272,729.6 × 423.5 = 539,000,985.6 g -> 539.0009856 t -> 539.00
    The total is not the sum of the printed rows (31.22 + 62.44 + 153.90 + 291.42 = 538.98);
    it is the unrounded sum (total GPU energy × intensity), then cut to 2 decimals.

    So Table 2 is consistent with tCO2eq = GPU-hours × power × 423.5 / 1e9, truncated to two
    decimals. 423.5 is the round value inside the window [423.4992, 423.5071); the paper
    does not state the intensity, so any value there reproduces the table equally well.
    """
    rows = _llama2_rows()
    for (model, hours, power, published), row in zip(LLAMA2_TABLE2, rows, strict=True):
        assert row.power_w == power and row.pue == 1.0
        assert row.energy_kwh == pytest.approx(hours * power / 1000)
        assert format_tco2e(row.location_tco2e, "truncate") == published, model
        assert row.market_tco2e == 0.0

    assert sum(row.gpu_hours for row in rows) == LLAMA2_TOTAL_GPU_HOURS
    total = sum(row.location_tco2e for row in rows)
    assert format_tco2e(total, "truncate") == LLAMA2_TOTAL_T
    assert format_tco2e(total) == LLAMA2_TOTAL_T
    # The published total is not the sum of the published (cut) rows.
    assert sum(Fraction(published) for *_, published in LLAMA2_TABLE2) == Fraction("538.98")

    # Rounding half up instead gets two rows wrong by one cent.
    assert [format_tco2e(row.location_tco2e) for row in rows] == ["31.22", "62.45", "153.91", "291.42"]


def test_llama2_arithmetic_round_to_nearest_has_no_single_intensity_truncation_does():
    half_cent = Fraction(1, 200)
    lo, hi = _interval(half_cent, half_cent)  # round to nearest, any tie rule
    assert lo > hi
    assert (round(float(hi), 4), round(float(lo), 4)) == (423.4823, 423.4895)

    lo, hi = _interval(Fraction(1, 100), Fraction(0))  # ceiling
    assert lo > hi

    lo, hi = _interval(Fraction(0), Fraction(1, 100))  # truncation
    total_kwh = sum(Fraction(h * p, 1000) for _, h, p, _ in LLAMA2_TABLE2)
    total_lo = Fraction(LLAMA2_TOTAL_T) * 10**6 / total_kwh
    total_hi = (Fraction(LLAMA2_TOTAL_T) + Fraction(1, 100)) * 10**6 / total_kwh
    lo, hi = max(lo, total_lo), min(hi, total_hi)
    assert lo < hi
    assert (round(float(lo), 4), round(float(hi), 4)) == (423.4992, 423.5071)
    assert lo <= Fraction(str(LLAMA2_INTENSITY)) < hi


def test_llama2_model_card_markdown():
    text = model_card_markdown(_llama2_rows(), "CO2 emissions during pretraining", rounding="truncate")
    lines = text.splitlines()
    assert lines[0] == "**CO2 emissions during pretraining**"
    assert lines[2] == (
        "| GPU type | GPU-hours | Power (W) | PUE | Intensity (gCO2e/kWh) | Location-based (tCO2eq) "
        "| Market-based (tCO2eq) | Embodied (tCO2eq) | Embodied GPUs (tCO2eq) | Embodied servers (tCO2eq) |"
    )
    assert lines[3] == "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    assert "| A100-80GB | 1,038,336 | 350 | 1.00 | 423.5 | 153.90 | 0.00 | 0.00 | - | - |" in lines
    assert lines[8] == "| Total | 3,311,616 |  |  |  | 539.00 | 0.00 | 0.00 | - | - |"
    assert len([line for line in lines if line.startswith("| A100-80GB |")]) == 4
    assert "TDP" in text

    # Default rounding is half up.
    rounded = model_card_markdown(_llama2_rows(), "x").splitlines()
    assert rounded[5] == "| A100-80GB | 368,640 | 400 | 1.00 | 423.5 | 62.45 | 0.00 | 0.00 | - | - |"
    assert rounded[8] == "| Total | 3,311,616 |  |  |  | 539.00 | 0.00 | 0.00 | - | - |"


JOB = FootprintInput(
    gpu_model="H100",
    gpu_hours=1_000.0,
    measured_energy_kwh=450.0,
    tdp_w=700.0,
    pue=1.2,
    intensity_g_per_kwh=400.0,
    market_g_per_kwh=0.0,
    embodied_kg=10.3,  # 1,000 GPU-h × 0.0103 kg/GPU-h
)


def test_measured_vs_tdp_hand_computed():
    # TDP: 1,000 h × 700 W = 700 kWh; × 1.2 = 840 kWh; × 400 g/kWh = 336,000 g = 0.336 t.
    tdp = footprint(JOB, "tdp")
    assert tdp.convention == "tdp" and tdp.gpu_model == "H100" and tdp.gpu_hours == 1_000.0
    assert tdp.power_w == 700.0
    assert tdp.energy_kwh == pytest.approx(700.0)
    assert tdp.facility_energy_kwh == pytest.approx(840.0)
    assert tdp.intensity_g_per_kwh == 400.0
    assert tdp.location_tco2e == pytest.approx(0.336)
    assert tdp.market_tco2e == 0.0
    assert tdp.embodied_tco2e == pytest.approx(0.0103)

    # Measured: 450 kWh over 1,000 h = 450 W mean; × 1.2 = 540 kWh; × 400 = 216,000 g = 0.216 t.
    measured = footprint(JOB, "measured")
    assert measured.convention == "measured"
    assert measured.power_w == pytest.approx(450.0)
    assert measured.energy_kwh == 450.0
    assert measured.facility_energy_kwh == pytest.approx(540.0)
    assert measured.location_tco2e == pytest.approx(0.216)
    assert measured.market_tco2e == 0.0
    assert measured.embodied_tco2e == pytest.approx(0.0103)
    # energy_kwh == gpu_hours × power_w / 1000 in both conventions.
    for row in (tdp, measured):
        assert row.energy_kwh == pytest.approx(row.gpu_hours * row.power_w / 1000)

    # Below a tonne the card states kg (it printed 0.34 t and 0.01 t before).
    assert "Location-based (kgCO2eq)" in model_card_markdown([tdp], "t").splitlines()[2]
    assert model_card_markdown([tdp], "t").splitlines()[4] == (
        "| H100 | 1,000 | 700 | 1.20 | 400 | 336.00 | 0.00 | 10.30 | - | - |"
    )
    assert model_card_markdown([measured], "m").splitlines()[4] == (
        "| H100 | 1,000 | 450 | 1.20 | 400 | 216.00 | 0.00 | 10.30 | - | - |"
    )
    assert model_card_markdown([tdp], "t", unit="t").splitlines()[4] == (
        "| H100 | 1,000 | 700 | 1.20 | 400 | 0.34 | 0.00 | 0.01 | - | - |"
    )


def test_market_not_configured_is_none_and_dash():
    job = FootprintInput("H100", 1_000.0, 450.0, 700.0, 1.2, 400.0, None, 10.3)
    rows = [footprint(job, "measured"), footprint(job, "measured")]
    assert rows[0].market_tco2e is None
    lines = model_card_markdown(rows, "two jobs").splitlines()
    assert lines[4] == "| H100 | 1,000 | 450 | 1.20 | 400 | 216.00 | - | 10.30 | - | - |"
    assert lines[6] == "| Total | 2,000 |  |  |  | 432.00 | - | 20.60 | - | - |"


def test_unknown_convention_names_the_value():
    with pytest.raises(ValueError, match="'model-card'"):
        footprint(JOB, "model-card")


def test_markdown_refuses_mixed_conventions_and_empty_rows():
    with pytest.raises(ValueError, match="mix conventions"):
        model_card_markdown([footprint(JOB, "tdp"), footprint(JOB, "measured")], "x")
    with pytest.raises(ValueError, match="at least one row"):
        model_card_markdown([], "x")
    with pytest.raises(ValueError, match="'nearest'"):
        model_card_markdown([footprint(JOB, "tdp")], "x", rounding="nearest")


@pytest.mark.parametrize(
    ("field", "value"),
    [("gpu_hours", -1.0), ("pue", 0.9), ("intensity_g_per_kwh", float("nan")), ("market_g_per_kwh", -5.0)],
)
def test_invalid_input_names_field_and_value(field: str, value: float):
    kwargs = {
        "gpu_model": "H100",
        "gpu_hours": 1.0,
        "measured_energy_kwh": 0.5,
        "tdp_w": 700.0,
        "pue": 1.2,
        "intensity_g_per_kwh": 400.0,
        "market_g_per_kwh": None,
        "embodied_kg": 0.0,
        field: value,
    }
    with pytest.raises(ValueError, match=field) as info:
        FootprintInput(**kwargs)
    assert repr(value) in str(info.value)


def test_measured_energy_without_gpu_hours_is_refused():
    with pytest.raises(ValueError, match="mean power is undefined"):
        footprint(FootprintInput("H100", 0.0, 1.0, 700.0, 1.2, 400.0, None, 0.0), "measured")
    zero = footprint(FootprintInput("H100", 0.0, 0.0, 700.0, 1.2, 400.0, None, 0.0), "measured")
    assert (zero.power_w, zero.location_tco2e) == (0.0, 0.0)
