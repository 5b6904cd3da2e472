"""Request dependencies: the engine and the configuration the app was created with."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from api.accounting.rates import LedgerConfig


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_config(request: Request) -> LedgerConfig:
    return request.app.state.config


EngineDep = Annotated[Engine, Depends(get_engine)]
ConfigDep = Annotated[LedgerConfig, Depends(get_config)]
