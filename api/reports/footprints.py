"""Footprints as model cards state them, from job reports: per GPU model for one job, or one
row per job for a release (a group of jobs under one label, e.g. ``release=llama-2``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from api.accounting.conventions import (
    CONVENTIONS,
    Footprint,
    FootprintInput,
    card_unit,
    combine,
    footprint,
    model_card_csv,
    model_card_markdown,
    total,
)
from api.accounting.rates import LedgerConfig

ESTIMATED_SHARE = 1 - 1e-9  # a part whose energy is all TDP-estimated states the power the estimate used


def _part(part: dict[str, Any], report: dict[str, Any], config: LedgerConfig, convention: str) -> Footprint:
    dc_name, model = part["datacenter"], part["gpu_model"]
    dc = config.datacenter(dc_name)
    rates = report["rates"]
    # The configured PUE (or, where a schedule changed it over the job, its effective value):
    # never recomputed from summed energy, which can fall a hair below 1.0.
    pue = max(1.0, rates["pue"].get(dc_name) or dc.pue)
    facility = part["facility_energy_kwh"]
    static = rates["grid_intensity_g_per_kwh"].get(dc.region, config.intensity(dc.region))
    intensity = part["co2e_kg"] * 1000 / facility if facility else static
    gpu_kwh, estimated_kwh = part["gpu_energy_kwh"], part.get("energy_estimated_kwh") or 0.0
    tdp_w = config.tdp(model)
    if part["gpu_hours"] and gpu_kwh and estimated_kwh >= gpu_kwh * ESTIMATED_SHARE:
        tdp_w = estimated_kwh * 1000 / part["gpu_hours"]
    return footprint(FootprintInput(
        gpu_model=model, gpu_hours=part["gpu_hours"], measured_energy_kwh=gpu_kwh, tdp_w=tdp_w, pue=pue,
        intensity_g_per_kwh=intensity, market_g_per_kwh=dc.market_g_per_kwh, embodied_kg=part["embodied_co2e_kg"],
        embodied_gpu_kg=part.get("embodied_gpu_co2e_kg"), embodied_server_kg=part.get("embodied_server_co2e_kg"),
    ), convention)


def model_rows(report: dict[str, Any], config: LedgerConfig, convention: str) -> list[Footprint]:
    """One row per GPU model of the job."""
    by_model: dict[str, list[Footprint]] = defaultdict(list)
    for part in report["breakdown"]:
        by_model[part["gpu_model"]].append(_part(part, report, config, convention))
    return [combine(parts, model) for model, parts in sorted(by_model.items())]


def job_row(report: dict[str, Any], config: LedgerConfig, convention: str) -> Footprint | None:
    """The whole job as one row labelled with its id; None for a job without usage."""
    parts = [_part(part, report, config, convention) for part in report["breakdown"]]
    if not parts:
        return None
    models = ", ".join(sorted({p.gpu_model for p in parts}))
    return combine(parts, models, label=report["job_id"])


def tdp_defaults(reports: list[dict[str, Any]], config: LedgerConfig) -> list[str]:
    """The report's built-in defaults plus the TDPs (used by the tdp convention) that are built in."""
    models = sorted({part["gpu_model"] for r in reports for part in r["breakdown"]})
    lines = {line for r in reports for line in r["defaults_used"]}
    lines |= {f"tdp_w[{m}] = {config.tdp(m):g}: built-in default"
              for m in models if config.source("tdp_w", m) == "built-in default"}
    return sorted(lines)


def energy_note(card: dict[str, Any]) -> str:
    """Where the GPU energy of the card comes from, so a "measured" row is never taken for more than it is."""
    shares = [(card.get("energy_measured_fraction"), "measured by the GPUs' energy counters"),
              (card.get("energy_declared_fraction"), "declared with imported usage"),
              (card.get("energy_tdp_estimated_fraction"), "estimated from GPU-hours × TDP")]
    stated = [f"{share * 100:.1f} % {what}" for share, what in shares if share]
    rest = 1 - sum(share or 0.0 for share, _ in shares)
    if rest > 5e-4:
        stated.append(f"{rest * 100:.1f} % estimated from sampled power")
    return f"GPU energy: {', '.join(stated) or 'none recorded'}.\n"


def fields(row: Footprint) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__slots__}


def release_card(reports: list[dict[str, Any]], config: LedgerConfig, release: str, *,
                 rounding: str, unit: str | None) -> dict[str, Any]:
    """Both conventions for a release: rows per job, the total, and the Markdown and CSV tables."""
    card: dict[str, Any] = {"release": release, "jobs": [r["job_id"] for r in reports], "conventions": {}}
    energy_j = sum(r["gpu_energy_kwh"] for r in reports)
    for name, key in (("energy_measured_fraction", "energy_measured_fraction"),
                      ("energy_declared_fraction", "energy_declared_fraction"),
                      ("energy_tdp_estimated_fraction", "energy_tdp_estimated_fraction")):
        parts = sum((r.get(key) or 0.0) * r["gpu_energy_kwh"] for r in reports)
        card[name] = parts / energy_j if energy_j else None
    by_convention = {c: [row for r in reports if (row := job_row(r, config, c)) is not None] for c in CONVENTIONS}
    by_convention = {c: rows for c, rows in by_convention.items() if rows}
    chosen = unit or card_unit([x for rows in by_convention.values() for x in (*rows, total(rows))])
    markdown, csv_parts = [], []
    for convention, rows in by_convention.items():
        card["conventions"][convention] = {"rows": [fields(r) for r in rows], "total": fields(total(rows))}
        title = f"{release}: {convention} ({'GPU-hours × TDP' if convention == 'tdp' else 'measured energy'})"
        markdown.append(model_card_markdown(rows, title, rounding=rounding, unit=chosen))
        csv_parts.append(model_card_csv(rows, rounding=rounding, unit=chosen))
    card["unit"] = chosen
    markdown.append(energy_note(card))
    card["markdown"] = "\n".join(markdown)
    card["csv"] = csv_parts[0] + "".join(part.split("\n", 1)[1] for part in csv_parts[1:]) if csv_parts else ""
    return card
