"""The server's settings: command-line options, or GPULEDGER_* environment variables."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from collector.db import DEFAULT_DB_URL


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPULEDGER_")
    db: str = DEFAULT_DB_URL
    config: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
