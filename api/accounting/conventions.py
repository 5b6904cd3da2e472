"""A job's footprint stated in the conventions the field publishes, from the same measurements.

Two conventions:

- ``"tdp"``, the model-card convention of the Llama 2 paper (Table 2) and the Llama 3 cards:
  every allocated GPU-hour is charged at the GPU's TDP (peak power),
  ``tCO2eq = gpu_hours × power_w × PUE × intensity / 1e9``. Meta's "power" column is the
  peak power "adjusted for power usage efficiency", so reproducing their tables takes PUE = 1.
  Their market-based figure is 0 because their electricity use is 100 % matched/offset.
- ``"measured"``: the GPU board energy gpuledger measured, with its mean power
  ``measured_energy_kwh × 1000 / gpu_hours`` in the power column.

Both apply the same PUE, location-based grid intensity, optional contractual (market-based)
factor and embodied CO2e, so the two rows differ only in the GPU energy.

Pure functions: no database, no web framework.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

MEASURED = "measured"
TDP = "tdp"
CONVENTIONS = (MEASURED, TDP)

HALF_UP = "half_up"
TRUNCATE = "truncate"  # what reproduces the Llama 2 paper's Table 2 (see tests/test_conventions.py)
ROUNDINGS = (HALF_UP, TRUNCATE)

_G_PER_T = 1e6  # kWh × g/kWh = g; 1 t = 1e6 g
_KG_PER_T = 1e3

_HEADER = (
    "GPU type",
    "GPU-hours",
    "Power (W)",
    "PUE",
    "Intensity (gCO2e/kWh)",
    "Location-based (tCO2eq)",
    "Market-based (tCO2eq)",
    "Embodied (tCO2eq)",
)

_NOTES = {
    TDP: (
        "Power is the GPU's TDP (peak power); location-based tCO2eq = "
        "GPU-hours × power × PUE × intensity / 1e9 (model-card convention)."
    ),
    MEASURED: (
        "Power is the measured mean GPU board power (measured kWh × 1000 / GPU-hours); "
        "location-based tCO2eq = measured kWh × PUE × intensity / 1e6."
    ),
}


@dataclass(frozen=True, slots=True)
class FootprintInput:
    gpu_model: str
    gpu_hours: float
    measured_energy_kwh: float  # GPU board energy measured by gpuledger
    tdp_w: float  # the GPU's TDP / peak power
    pue: float
    intensity_g_per_kwh: float  # location-based grid intensity applied
    market_g_per_kwh: float | None  # contractual factor (None = not configured)
    embodied_kg: float  # embodied CO2e already computed by the caller

    def __post_init__(self) -> None:
        for name in ("gpu_hours", "measured_energy_kwh", "tdp_w", "intensity_g_per_kwh", "embodied_kg"):
            _check_non_negative(name, getattr(self, name))
        if self.market_g_per_kwh is not None:
            _check_non_negative("market_g_per_kwh", self.market_g_per_kwh)
        _check_non_negative("pue", self.pue)
        if self.pue < 1.0:
            raise ValueError(f"pue must be >= 1.0, got {self.pue!r}")


@dataclass(frozen=True, slots=True)
class Footprint:
    convention: str  # "measured" or "tdp"
    gpu_model: str
    gpu_hours: float
    power_w: float  # TDP, or measured mean power (kWh*1000/gpu_hours)
    pue: float
    energy_kwh: float  # GPU energy in the estimate (gpu_hours*power_w/1000)
    facility_energy_kwh: float  # energy_kwh * pue
    intensity_g_per_kwh: float
    location_tco2e: float
    market_tco2e: float | None
    embodied_tco2e: float


def _check_non_negative(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def footprint(inp: FootprintInput, convention: str) -> Footprint:
    """The job's footprint under ``convention`` ("measured" or "tdp")."""
    if convention == TDP:
        power_w = float(inp.tdp_w)
        energy_kwh = inp.gpu_hours * power_w / 1000.0
    elif convention == MEASURED:
        if inp.gpu_hours == 0:
            if inp.measured_energy_kwh != 0:
                raise ValueError(
                    f"measured_energy_kwh is {inp.measured_energy_kwh!r} with gpu_hours 0: "
                    "mean power is undefined"
                )
            power_w = 0.0
        else:
            power_w = inp.measured_energy_kwh * 1000.0 / inp.gpu_hours
        energy_kwh = float(inp.measured_energy_kwh)
    else:
        raise ValueError(f"unknown convention {convention!r}; expected one of {', '.join(map(repr, CONVENTIONS))}")

    facility_kwh = energy_kwh * inp.pue
    market = None if inp.market_g_per_kwh is None else facility_kwh * inp.market_g_per_kwh / _G_PER_T
    return Footprint(
        convention=convention,
        gpu_model=inp.gpu_model,
        gpu_hours=float(inp.gpu_hours),
        power_w=power_w,
        pue=float(inp.pue),
        energy_kwh=energy_kwh,
        facility_energy_kwh=facility_kwh,
        intensity_g_per_kwh=float(inp.intensity_g_per_kwh),
        location_tco2e=facility_kwh * inp.intensity_g_per_kwh / _G_PER_T,
        market_tco2e=market,
        embodied_tco2e=inp.embodied_kg / _KG_PER_T,
    )


def _quantize(value: float, places: int, rounding: str) -> Decimal:
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; expected one of {', '.join(map(repr, ROUNDINGS))}")
    # repr() is the shortest string that round-trips, so 62.447616 is 62.447616, not 62.44761599…
    mode = ROUND_DOWN if rounding == TRUNCATE else ROUND_HALF_UP
    return Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-places), rounding=mode)


def format_tco2e(value: float, rounding: str = HALF_UP) -> str:
    """tCO2eq with 2 decimals and thousands separators ("1,234.57").

    ``rounding="truncate"`` drops the digits past the second decimal, which is how the Llama 2
    paper's Table 2 is stated; the default rounds half up."""
    return f"{_quantize(value, 2, rounding):,.2f}"


def _format_number(value: float, max_places: int = 2) -> str:
    """Thousands separators, at most ``max_places`` decimals, trailing zeros dropped."""
    text = f"{_quantize(value, max_places, HALF_UP):,.{max_places}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def model_card_markdown(rows: list[Footprint], title: str, *, rounding: str = HALF_UP) -> str:
    """A Markdown table in the style of the Llama model cards, one line per row.

    A total row follows when there is more than one row: GPU-hours and tCO2eq are summed
    before rounding (as the Llama 2 total is); power, PUE and intensity are left blank.
    The market-based total is "-" unless every row has a market-based figure. Rows of
    different conventions are refused: their sum would add two different estimates."""
    if not rows:
        raise ValueError("model_card_markdown needs at least one row")
    conventions = sorted({row.convention for row in rows})
    if len(conventions) > 1:
        raise ValueError(f"rows mix conventions {conventions!r}; state each convention in its own table")
    if conventions[0] not in CONVENTIONS:
        raise ValueError(f"unknown convention {conventions[0]!r}; expected one of {', '.join(map(repr, CONVENTIONS))}")

    def t(value: float | None) -> str:
        return "-" if value is None else format_tco2e(value, rounding)

    lines = [f"**{title}**", "", _line([*_HEADER]), _line(["---"] * len(_HEADER))]
    for row in rows:
        lines.append(
            _line(
                [
                    _cell(row.gpu_model),
                    _format_number(row.gpu_hours),
                    _format_number(row.power_w),
                    f"{_quantize(row.pue, 2, HALF_UP):.2f}",
                    _format_number(row.intensity_g_per_kwh),
                    t(row.location_tco2e),
                    t(row.market_tco2e),
                    t(row.embodied_tco2e),
                ]
            )
        )
    if len(rows) > 1:
        markets = [row.market_tco2e for row in rows]
        lines.append(
            _line(
                [
                    "Total",
                    _format_number(math.fsum(row.gpu_hours for row in rows)),
                    "",
                    "",
                    "",
                    t(math.fsum(row.location_tco2e for row in rows)),
                    t(None if any(m is None for m in markets) else math.fsum(markets)),  # type: ignore[arg-type]
                    t(math.fsum(row.embodied_tco2e for row in rows)),
                ]
            )
        )
    lines += ["", _NOTES[conventions[0]], ""]
    return "\n".join(lines)
