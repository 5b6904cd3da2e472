"""Rate tables applied at read time: prices, PUE, grid intensity, embodied factors.

Defaults, each a starting point to replace with the site's own figures:
- USD per GPU-hour: ~$4 for an A100, the figure used for the Llama 2 effort; H100/H200/B200
  scaled from typical 2025 on-demand cloud list prices. Internal chargeback rates differ.
- PUE 1.56: the industry-wide average of the Uptime Institute Global Data Center Survey 2024.
- grid intensity 475 gCO2e/kWh: the common world-average default (IEA); set the region's.
- embodied 0.0103 kgCO2e per GPU-hour: the BLOOM paper (Luccioni et al., 2022), 11.2 t of
  embodied emissions (servers and A100 GPUs) over 1,082,990 GPU-hours.
- TDP (for the model-card convention): the vendors' datasheet maxima for the SXM parts,
  A100 400 W, H100 700 W, H200 700 W, B200 1,000 W.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, ValidationError

from api.accounting.country_intensity import ANNUAL_G_PER_KWH_2023

PositiveRate = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Pue = Annotated[float, Field(ge=1.0, le=5.0, allow_inf_nan=False)]
DEFAULT_PRICES = {"default": 4.0, "A100": 4.0, "H100": 6.0, "H200": 7.0, "B200": 9.0}
DEFAULT_TDP_W = {"default": 700.0, "A100": 400.0, "H100": 700.0, "H200": 700.0, "B200": 1000.0}
DEFAULT_PUE = 1.56
DEFAULT_INTENSITY_G_PER_KWH = 475.0
DEFAULT_EMBODIED_KG_PER_GPU_HOUR = 0.0103
HOURS_PER_YEAR = 8760.0
# The BLOOM paper's embodied inputs: 150 kg per A100, 2,500 kg per 8-GPU server. The built-in
# flat default (0.0103 kg per GPU-hour) is split between GPUs and servers in that proportion.
BLOOM_GPU_KG, BLOOM_SERVER_KG_PER_GPU = 150.0, 2500.0 / 8
DEFAULT_EMBODIED_GPU_SHARE = BLOOM_GPU_KG / (BLOOM_GPU_KG + BLOOM_SERVER_KG_PER_GPU)
Datetime = Annotated[AwareDatetime, Strict(False)]  # TOML datetimes, or ISO 8601 strings

# Where a rate came from, as reports state it (`rate_sources`).
CONFIG, HOURLY, COUNTRY, BUILT_IN = "config", "hourly series", "static country figure", "built-in default"


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the field and the value."""


class Section(BaseModel):
    # strict: `tdp_w.A100 = "400"` is a string, not a number, and is refused naming the key.
    model_config = ConfigDict(extra="forbid", strict=True)


class PueFrom(Section):
    start: Datetime = Field(alias="from")
    pue: Pue


class Datacenter(Section):
    region: str = "default"
    pue: Pue = DEFAULT_PUE
    pue_schedule: list[PueFrom] = Field(default_factory=list, description="PUE changes, each from its date.")
    market_g_per_kwh: PositiveRate | None = Field(default=None, description="Contractual factor (market-based).")
    usd_per_kwh: PositiveRate = 0.0
    node_overhead_w: PositiveRate = 0.0
    gpus_per_node: int = Field(default=8, ge=1)

    def pue_at(self, time_s: float) -> float:
        current = self.pue
        for change in sorted(self.pue_schedule, key=lambda c: c.start):
            if change.start.timestamp() <= time_s:
                current = change.pue
        return current


class RateCard(Section):
    model: str
    cluster: str | None = None
    usd_per_gpu_hour: PositiveRate
    valid_from: Datetime


class Tco(Section):
    capex_usd: PositiveRate
    lifetime_years: float = Field(gt=0, allow_inf_nan=False)
    utilization: float = Field(default=1.0, gt=0, le=1)

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.capex_usd / (self.lifetime_years * HOURS_PER_YEAR * self.utilization)


class Embodied(Section):
    manufacturing_kg: PositiveRate
    lifetime_years: float = Field(gt=0, allow_inf_nan=False)
    utilization: float = Field(default=1.0, gt=0, le=1)
    server_kg: PositiveRate = 0.0
    gpus_per_server: int = Field(default=8, ge=1)

    @property
    def kg_per_gpu_hour(self) -> float:
        gpu, server = self.split_kg_per_gpu_hour
        return gpu + server

    @property
    def split_kg_per_gpu_hour(self) -> tuple[float, float]:
        """(the GPU's own, its share of the server's) manufacturing kg per GPU-hour."""
        hours = self.lifetime_years * HOURS_PER_YEAR * self.utilization
        return self.manufacturing_kg / hours, self.server_kg / self.gpus_per_server / hours


class IntensityProvider(Section):
    """A grid-intensity feed, fetched on a schedule into the hourly series of ``region``."""

    kind: Literal["electricitymaps", "watttime", "uk-national-grid"]
    region: str = Field(description="Our region key, as in [datacenters.NAME] region.")
    zone: str = Field(default="", description="The provider's zone or region code (not used by the UK API).")
    token: str | None = None
    username: str | None = None
    password: str | None = None
    base_url: str | None = None
    interval_s: float = Field(default=3600.0, ge=60, allow_inf_nan=False)


class JobsSection(Section):
    silence_s: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    sweep_interval_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)


class RetentionSection(Section):
    raw_days: float = Field(default=2.0, gt=0, allow_inf_nan=False, description="Raw intervals and batch identities.")
    minute_days: float = Field(default=35.0, gt=0, allow_inf_nan=False, description="Per-minute rollups per (job, node).")
    partitions_ahead_days: int = Field(default=2, ge=1, le=60, description="PostgreSQL day partitions created ahead.")
    prune_interval_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)


class PricingSection(Section):
    reprice_history: bool = Field(default=False, description="Apply the newest rate card to all hours.")


class LedgerConfig(Section):
    """The server's TOML configuration (``gpuledger server --config FILE``)."""

    jobs: JobsSection = JobsSection()
    retention: RetentionSection = RetentionSection()
    pricing: PricingSection = PricingSection()
    usd_per_gpu_hour: dict[str, PositiveRate] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    rate_cards: list[RateCard] = Field(default_factory=list)
    tco: dict[str, Tco] = Field(default_factory=dict)
    embodied_kg_per_gpu_hour: dict[str, PositiveRate] = Field(
        default_factory=lambda: {"default": DEFAULT_EMBODIED_KG_PER_GPU_HOUR}
    )
    embodied: dict[str, Embodied] = Field(default_factory=dict)
    tdp_w: dict[str, PositiveRate] = Field(default_factory=lambda: dict(DEFAULT_TDP_W))
    datacenters: dict[str, Datacenter] = Field(default_factory=dict)
    intensity_g_per_kwh: dict[str, PositiveRate] = Field(
        default_factory=lambda: {"default": DEFAULT_INTENSITY_G_PER_KWH}
    )
    intensity_providers: list[IntensityProvider] = Field(default_factory=list)

    def price_usd_per_gpu_hour(self, gpu_model: str, cluster: str = "", hour_s: float | None = None) -> float:
        """Rental or chargeback price: the rate card in force at ``hour_s``, else the list price."""
        cards = [c for c in self.rate_cards if c.cluster in (None, cluster) and c.model.lower() in gpu_model.lower()]
        if hour_s is not None and not self.pricing.reprice_history:
            cards = [c for c in cards if c.valid_from.timestamp() <= hour_s]
        if cards:
            best = max(cards, key=lambda c: (len(c.model), c.cluster is not None, c.valid_from))
            return best.usd_per_gpu_hour
        return by_model(self.usd_per_gpu_hour, gpu_model, DEFAULT_PRICES["default"])

    def tco_for(self, gpu_model: str) -> Tco | None:
        key = best_key(self.tco, gpu_model)
        return None if key is None else self.tco[key]

    def embodied_kg(self, gpu_model: str) -> float:
        key = best_key(self.embodied, gpu_model)
        if key is not None:
            return self.embodied[key].kg_per_gpu_hour
        return by_model(self.embodied_kg_per_gpu_hour, gpu_model, DEFAULT_EMBODIED_KG_PER_GPU_HOUR)

    def tdp(self, gpu_model: str) -> float:
        return by_model(self.tdp_w, gpu_model, DEFAULT_TDP_W["default"])

    def datacenter(self, name: str) -> Datacenter:
        return self.datacenters.get(name) or self.datacenters.get("default") or Datacenter()

    def intensity(self, region: str) -> float:
        """The static (annual) intensity of a region, the fallback for hours without a series:
        the configured figure, else the country's 2023 annual average, else the default."""
        table = self.intensity_g_per_kwh
        if region in table:
            return table[region]
        return ANNUAL_G_PER_KWH_2023.get(region, table.get("default", DEFAULT_INTENSITY_G_PER_KWH))

    def embodied_split(self, gpu_model: str) -> tuple[float, float] | None:
        """(GPU, server) kg per GPU-hour where a source states the split, else None.

        `[embodied.MODEL]` states it; the built-in default is split in the BLOOM paper's
        proportion (150 kg per GPU : 2,500 kg per 8-GPU server); a configured flat
        `[embodied_kg_per_gpu_hour]` figure has no split."""
        key = best_key(self.embodied, gpu_model)
        if key is not None:
            return self.embodied[key].split_kg_per_gpu_hour
        if self.source("embodied_kg_per_gpu_hour", gpu_model) == BUILT_IN:
            total = self.embodied_kg(gpu_model)
            return total * DEFAULT_EMBODIED_GPU_SHARE, total * (1 - DEFAULT_EMBODIED_GPU_SHARE)
        return None

    def known_regions(self) -> list[str]:
        """Regions named in the configuration: static figures, datacenters, intensity feeds."""
        named = {k for k in self.intensity_g_per_kwh if k != "default"}
        named |= {dc.region for dc in self.datacenters.values()} | {p.region for p in self.intensity_providers}
        return sorted(named)

    def source(self, kind: str, key: str) -> str:
        """Where the rate of ``kind`` for ``key`` comes from: config, static country figure or
        built-in default. kind: usd_per_gpu_hour, tdp_w, embodied_kg_per_gpu_hour (key: GPU
        model), pue, market_g_per_kwh, node_overhead_w (key: datacenter), grid_intensity_g_per_kwh
        (key: region; the hourly series is the caller's to add)."""
        if kind in ("usd_per_gpu_hour", "tdp_w"):
            return self._model_source(kind, key)
        if kind == "embodied_kg_per_gpu_hour":
            return CONFIG if best_key(self.embodied, key) else self._model_source(kind, key)
        if kind == "grid_intensity_g_per_kwh":
            return self._region_source(key)
        dc = self.datacenters.get(key) or self.datacenters.get("default")
        field = "pue" if kind == "pue" else kind
        return CONFIG if dc is not None and (field in dc.model_fields_set or kind == "market_g_per_kwh") else BUILT_IN

    def _model_source(self, kind: str, gpu_model: str) -> str:
        if kind == "usd_per_gpu_hour" and (self.tco_for(gpu_model) or self.rate_cards):
            return CONFIG
        if kind not in self.model_fields_set:
            return BUILT_IN
        return CONFIG if best_key(getattr(self, kind), gpu_model) is not None else BUILT_IN

    def _region_source(self, region: str) -> str:
        configured = "intensity_g_per_kwh" in self.model_fields_set
        if configured and region in self.intensity_g_per_kwh:
            return CONFIG
        if region in ANNUAL_G_PER_KWH_2023:
            return COUNTRY
        return CONFIG if configured and "default" in self.intensity_g_per_kwh else BUILT_IN

    def defaults_used(self, gpu_models: list[str] = ()) -> list[str]:  # type: ignore[assignment]
        """One line for each configured region and each GPU model that falls back to a
        built-in default: for the start-up warning and the reports."""
        fed = {p.region for p in self.intensity_providers}
        lines = [
            f"region {region!r} (datacenter {name!r}): no [intensity_g_per_kwh] entry, country figure or feed; "
            f"priced at the built-in default {self.intensity(region):g} gCO2e/kWh"
            for name, dc in sorted(self.datacenters.items())
            for region in [dc.region]
            if region not in fed and self._region_source(region) == BUILT_IN
        ]
        for model in sorted(set(gpu_models)):
            candidates = (("tdp_w", "W", self.tdp(model)), ("usd_per_gpu_hour", "USD", self.price_usd_per_gpu_hour(model)),
                          ("embodied_kg_per_gpu_hour", "kg", self.embodied_kg(model)))
            kinds = [(k, unit, value) for k, unit, value in candidates
                     if (self.source(k, model) if k == "embodied_kg_per_gpu_hour" else self._model_source(k, model)) == BUILT_IN]
            if kinds:
                what = ", ".join(f"{k} = {value:g} {unit}" for k, unit, value in kinds)
                lines.append(f"GPU model {model!r} falls back to built-in defaults: {what}")
        return lines


def best_key(table: Mapping[str, object], gpu_model: str) -> str | None:
    """The key that is the longest case-insensitive substring of the NVML name, else 'default'."""
    name = gpu_model.lower()
    matches = [key for key in table if key != "default" and key.lower() in name]
    if matches:
        return max(matches, key=len)
    return "default" if "default" in table else None


def by_model(table: dict[str, float], gpu_model: str, fallback: float) -> float:
    key = best_key(table, gpu_model)
    return fallback if key is None else table[key]


def load_config(path: str | Path | None) -> LedgerConfig:
    if path is None:
        return LedgerConfig()
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"--config {str(path)!r}: file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {str(path)!r}: not valid TOML: {exc}") from exc
    try:
        return LedgerConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        hint = ""
        if isinstance(first.get("input"), str) and first["type"] in ("float_type", "int_type", "bool_type"):
            hint = f" (a TOML string; write {field} = {first['input']} without quotes)"
        raise ConfigError(f"{path}: {field} = {first.get('input')!r}: {first['msg']}{hint}") from exc


