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

import csv
import io
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

_TCO2E_COLUMNS = ("Location-based", "Market-based", "Embodied", "Embodied GPUs", "Embodied servers")
_HEADER = ("GPU type", "GPU-hours", "Power (W)", "PUE", "Intensity (gCO2e/kWh)")

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
    embodied_gpu_kg: float | None = None  # its GPUs' part, where a source states the split
    embodied_server_kg: float | None = None  # its servers' part

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
    embodied_gpu_tco2e: float | None = None
    embodied_server_tco2e: float | None = None
    label: str = ""  # what the row is (a job id in a release's card); empty: the GPU type says it


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
        embodied_gpu_tco2e=None if inp.embodied_gpu_kg is None else inp.embodied_gpu_kg / _KG_PER_T,
        embodied_server_tco2e=None if inp.embodied_server_kg is None else inp.embodied_server_kg / _KG_PER_T,
    )


def _sum_or_none(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else math.fsum(v for v in values if v is not None)


def _weighted(values: list[float], weights: list[float], floor: float = 0.0) -> float:
    """One value when all agree (exactly), else their weighted mean, never below ``floor``."""
    if len(set(values)) == 1:
        return values[0]
    total = math.fsum(weights)
    if not total:
        return max(floor, math.fsum(values) / len(values))
    return max(floor, math.fsum(v * w for v, w in zip(values, weights, strict=True)) / total)


def combine(parts: list[Footprint], gpu_model: str, label: str = "") -> Footprint:
    """Several footprints of one convention (a job's datacenters and GPU models) as one row:
    quantities summed; power, PUE and intensity their effective values (the configured
    figure itself where all parts share it, so a PUE of 1.0 stays 1.0)."""
    if not parts:
        raise ValueError("combine needs at least one footprint")
    (convention,) = {p.convention for p in parts}
    gpu_hours = math.fsum(p.gpu_hours for p in parts)
    energy = math.fsum(p.energy_kwh for p in parts)
    facility = math.fsum(p.facility_energy_kwh for p in parts)
    return Footprint(
        convention=convention, gpu_model=gpu_model, gpu_hours=gpu_hours,
        power_w=energy * 1000.0 / gpu_hours if gpu_hours else 0.0,
        pue=_weighted([p.pue for p in parts], [p.energy_kwh for p in parts], floor=1.0),
        energy_kwh=energy, facility_energy_kwh=facility,
        intensity_g_per_kwh=_weighted([p.intensity_g_per_kwh for p in parts], [p.facility_energy_kwh for p in parts]),
        location_tco2e=math.fsum(p.location_tco2e for p in parts),
        market_tco2e=_sum_or_none([p.market_tco2e for p in parts]),
        embodied_tco2e=math.fsum(p.embodied_tco2e for p in parts),
        embodied_gpu_tco2e=_sum_or_none([p.embodied_gpu_tco2e for p in parts]),
        embodied_server_tco2e=_sum_or_none([p.embodied_server_tco2e for p in parts]),
        label=label,
    )


def total(rows: list[Footprint]) -> Footprint:
    """The total row of a card: GPU-hours and CO2e summed before any rounding."""
    return combine(rows, "Total", "Total")


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


def card_unit(rows: list[Footprint]) -> str:
    """"t" (tCO2eq), or "kg" when every figure of the card is below a tonne."""
    figures = [abs(v) for row in rows for v in _tco2e_values(row) if v is not None]
    return "kg" if figures and max(figures) < 1.0 else "t"


def _tco2e_values(row: Footprint) -> tuple[float | None, ...]:
    return (row.location_tco2e, row.market_tco2e, row.embodied_tco2e, row.embodied_gpu_tco2e, row.embodied_server_tco2e)


def _check_rows(rows: list[Footprint]) -> str:
    if not rows:
        raise ValueError("a model card needs at least one row")
    conventions = sorted({row.convention for row in rows})
    if len(conventions) > 1:
        raise ValueError(f"rows mix conventions {conventions!r}; state each convention in its own table")
    if conventions[0] not in CONVENTIONS:
        raise ValueError(f"unknown convention {conventions[0]!r}; expected one of {', '.join(map(repr, CONVENTIONS))}")
    return conventions[0]


def card_table(rows: list[Footprint], *, rounding: str = HALF_UP, unit: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and formatted lines of a model card: one per row, then a total when there are
    several (GPU-hours and CO2e summed before rounding, as the Llama 2 total is; power, PUE
    and intensity blank). CO2e in ``unit`` ("t" or "kg"; default: kg when all below a tonne).
    A market-based or embodied-split cell is "-" where a row has no such figure. Rows of
    different conventions are refused: their sum would add two different estimates."""
    _check_rows(rows)
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; expected one of {', '.join(map(repr, ROUNDINGS))}")
    unit = unit or card_unit(rows + ([total(rows)] if len(rows) > 1 else []))
    scale = 1.0 if unit == "t" else _KG_PER_T
    labelled = any(row.label for row in rows)
    header = (["Job"] if labelled else []) + list(_HEADER) + [f"{name} ({unit}CO2eq)" for name in _TCO2E_COLUMNS]

    def co2(row: Footprint) -> list[str]:
        return ["-" if v is None else format_tco2e(v * scale, rounding) for v in _tco2e_values(row)]

    lines = [
        ([_cell(row.label)] if labelled else []) + [
            _cell(row.gpu_model), _format_number(row.gpu_hours), _format_number(row.power_w),
            f"{_quantize(row.pue, 2, HALF_UP):.2f}", _format_number(row.intensity_g_per_kwh), *co2(row)]
        for row in rows
    ]
    if len(rows) > 1:
        whole = total(rows)
        lines.append((["Total", ""] if labelled else ["Total"]) + [_format_number(whole.gpu_hours), "", "", ""] + co2(whole))
    return header, lines


def model_card_markdown(rows: list[Footprint], title: str, *, rounding: str = HALF_UP, unit: str | None = None) -> str:
    """A Markdown table in the style of the Llama model cards (see ``card_table``)."""
    convention = _check_rows(rows)
    header, lines = card_table(rows, rounding=rounding, unit=unit)
    out = [f"**{title}**", "", _line(header), _line(["---"] * len(header)), *(_line(cells) for cells in lines)]
    return "\n".join([*out, "", _NOTES[convention], ""])


def model_card_csv(rows: list[Footprint], *, rounding: str = HALF_UP, unit: str | None = None) -> str:
    """The same table as CSV, with a convention column first."""
    convention = _check_rows(rows)
    header, lines = card_table(rows, rounding=rounding, unit=unit)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Convention", *header])
    for cells in lines:
        writer.writerow([convention, *(c.replace(",", "") if c[:1].isdigit() else c for c in cells)])
    return out.getvalue()
