"""Rate tables applied at read time: prices, PUE, grid intensity, embodied factors.

Defaults, each a starting point to replace with the site's own figures:
- USD per GPU-hour: ~$4 for an A100, the figure used for the Llama 2 effort; H100/H200/B200
  scaled from typical 2025 on-demand cloud list prices. Internal chargeback rates differ.
- PUE 1.56: the industry-wide average of the Uptime Institute Global Data Center Survey 2024.
- grid intensity 475 gCO2e/kWh: the common world-average default (IEA); set the region's.
- embodied 0.0103 kgCO2e per GPU-hour: the BLOOM paper (Luccioni et al., 2022), 11.2 t of
  embodied emissions (servers and A100 GPUs) over 1,082,990 GPU-hours.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PositiveRate = Annotated[float, Field(ge=0, allow_inf_nan=False)]
DEFAULT_PRICES = {"default": 4.0, "A100": 4.0, "H100": 6.0, "H200": 7.0, "B200": 9.0}
DEFAULT_PUE = 1.56
DEFAULT_INTENSITY_G_PER_KWH = 475.0
DEFAULT_EMBODIED_KG_PER_GPU_HOUR = 0.0103


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the field and the value."""


class Datacenter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str = "default"
    pue: float = Field(default=DEFAULT_PUE, ge=1.0, le=5.0, allow_inf_nan=False)


class JobsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    silence_s: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    sweep_interval_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)


class RetentionSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    raw_days: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    prune_interval_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)


class LedgerConfig(BaseModel):
    """The server's TOML configuration (``gpuledger server --config FILE``)."""

    model_config = ConfigDict(extra="forbid")
    jobs: JobsSection = JobsSection()
    retention: RetentionSection = RetentionSection()
    usd_per_gpu_hour: dict[str, PositiveRate] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    embodied_kg_per_gpu_hour: dict[str, PositiveRate] = Field(
        default_factory=lambda: {"default": DEFAULT_EMBODIED_KG_PER_GPU_HOUR}
    )
    datacenters: dict[str, Datacenter] = Field(default_factory=dict)
    intensity_g_per_kwh: dict[str, PositiveRate] = Field(
        default_factory=lambda: {"default": DEFAULT_INTENSITY_G_PER_KWH}
    )

    def price_usd_per_gpu_hour(self, gpu_model: str) -> float:
        return _by_model(self.usd_per_gpu_hour, gpu_model, DEFAULT_PRICES["default"])

    def embodied(self, gpu_model: str) -> float:
        return _by_model(self.embodied_kg_per_gpu_hour, gpu_model, DEFAULT_EMBODIED_KG_PER_GPU_HOUR)

    def datacenter(self, name: str) -> Datacenter:
        return self.datacenters.get(name) or self.datacenters.get("default") or Datacenter()

    def intensity(self, region: str) -> float:
        table = self.intensity_g_per_kwh
        return table.get(region, table.get("default", DEFAULT_INTENSITY_G_PER_KWH))


def _by_model(table: dict[str, float], gpu_model: str, fallback: float) -> float:
    """The entry whose key is the longest case-insensitive substring of the NVML name."""
    name = gpu_model.lower()
    matches = [key for key in table if key != "default" and key.lower() in name]
    if matches:
        return table[max(matches, key=len)]
    return table.get("default", fallback)


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
        raise ConfigError(f"{path}: {field} = {first.get('input')!r}: {first['msg']}") from exc
