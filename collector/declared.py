"""Declared usage: GPU time (and optionally energy) that no agent measured, imported from a
CSV or JSON-lines file (`gpuledger import FILE`) or posted by an admin
(`POST /v1/usage/declared`): history from before gpuledger was installed, fine-tuning run
elsewhere, a published training run to restate.

Columns (CSV header, or JSON keys; times ISO 8601 with a time zone):

| column | required | meaning |
|---|---|---|
| `cluster`, `job` | yes | the job id is `<cluster>/<job>`, as for measured jobs |
| `gpu_model` | yes | as NVML names it (`NVIDIA A100-SXM4-80GB`); picks TDP, price, embodied factor |
| `start`, `end` | yes | when the GPUs ran; the usage is spread evenly over the hours between |
| `gpu_hours` or `gpus` | one of them | GPU-hours, or a GPU count held from start to end |
| `energy_kwh` | no | the GPUs' energy, declared; without it, GPU-hours × TDP (`[tdp_w]`) estimates it |
| `power_w` | no | per-GPU power for that estimate instead of the TDP (a power cap; Llama 2's 34B: 350 W) |
| `datacenter` | no (`default`) | picks PUE, grid region and market factor, as an agent's `--datacenter` |
| `name`, `user`, `account`, `release` | no | job metadata; `release` groups jobs into a model card |

A row is identified by (cluster, job, datacenter, gpu_model, start, end): importing it again
replaces it, so a re-import of the same file changes nothing and a corrected row replaces the
old one. Declared and TDP-estimated energy are marked as such in every report.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from collector.schemas import ClusterLabel, Label, Text

COLUMNS = ("cluster", "job", "name", "user", "account", "release", "gpu_model", "gpu_hours", "gpus",
           "start", "end", "energy_kwh", "power_w", "datacenter")
NUMBERS = {"gpu_hours": float, "gpus": int, "energy_kwh": float, "power_w": float}
MAX_POWER_W = 10_000.0
MAX_SPAN_S = 5 * 366 * 86400.0  # five years in one row: split longer history


class DeclaredRow(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    cluster: ClusterLabel
    job: Label
    gpu_model: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    start: Annotated[AwareDatetime, Field(strict=False)]
    end: Annotated[AwareDatetime, Field(strict=False)]
    gpu_hours: Annotated[float, Field(gt=0, le=1e10)] | None = None
    gpus: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    energy_kwh: Annotated[float, Field(ge=0)] | None = None
    power_w: Annotated[float, Field(gt=0, le=MAX_POWER_W)] | None = None
    datacenter: Label = "default"
    name: Text | None = None
    user: Text | None = None
    account: Text | None = None
    release: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DeclaredRow:
        span_s = (self.end - self.start).total_seconds()
        if self.start.timestamp() < 0:
            raise ValueError(f"start = {self.start.isoformat()}: expected 1970 or later")
        if span_s <= 0:
            raise ValueError(f"end = {self.end.isoformat()} is not after start = {self.start.isoformat()}")
        if span_s > MAX_SPAN_S:
            raise ValueError(f"end - start = {span_s / 86400:.0f} days: expected at most 5 years in one row; split it")
        if (self.gpu_hours is None) == (self.gpus is None):
            raise ValueError("give exactly one of gpu_hours or gpus (with start and end)")
        if self.energy_kwh is not None and self.power_w is not None:
            raise ValueError("give energy_kwh (declared) or power_w (for the estimate), not both")
        if self.energy_kwh is not None and self.energy_kwh * 1000 > MAX_POWER_W * self.gpu_seconds / 3600 * (1 + 1e-9):
            raise ValueError(f"energy_kwh = {self.energy_kwh}: more than {MAX_POWER_W:g} W per GPU over "
                             f"{self.gpu_seconds / 3600:g} GPU-hours")
        return self

    @property
    def job_id(self) -> str:
        return f"{self.cluster}/{self.job}"

    @property
    def gpu_seconds(self) -> float:
        if self.gpu_hours is not None:
            return self.gpu_hours * 3600.0
        return float(self.gpus or 0) * (self.end - self.start).total_seconds()

    @property
    def key(self) -> str:
        """The row's identity: a re-import replaces the row with the same key."""
        ident = "\x1f".join((self.cluster, self.job, self.datacenter, self.gpu_model,
                             repr(self.start.timestamp()), repr(self.end.timestamp())))
        return hashlib.sha256(ident.encode()).hexdigest()[:40]


class DeclaredError(ValueError):
    """A declared row that does not validate; the message names the line, the column and the value."""


FUTURE_TOLERANCE_S = 900.0
MAX_HOURS_PER_IMPORT = 1_000_000  # hourly rollup rows one import may write; `gpuledger import` sends less


def hours_of(row: DeclaredRow) -> int:
    """How many hourly rollups the row touches."""
    return int(row.end.timestamp() // 3600 - row.start.timestamp() // 3600) + 1


def check_rows(rows: list[DeclaredRow], now_s: float, template: str = "rows[{n}]", first: int = 0) -> None:
    """What validates only against the clock and as a whole: nothing after now, a bounded size."""
    for n, row in enumerate(rows, start=first):
        if row.end.timestamp() > now_s + FUTURE_TOLERANCE_S:
            raise DeclaredError(f"{template.format(n=n)}: end = {row.end.isoformat()} is in the future: "
                                "declared usage is usage that happened")
    total = sum(hours_of(row) for row in rows)
    if total > MAX_HOURS_PER_IMPORT:
        raise DeclaredError(f"the rows span {total:,} hours in all: expected at most {MAX_HOURS_PER_IMPORT:,} "
                            "per request; send fewer rows at a time")


def describe(exc: ValidationError, where: str) -> str:
    first = exc.errors()[0]
    column = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if column:
        return f"{where}: {column} = {first.get('input')!r}: {message}"
    return f"{where}: {message}"


def validate(rows: list[dict[str, Any]], template: str = "rows[{n}]", first: int = 0) -> list[DeclaredRow]:
    """Each row validated; an error names the row (``template``), the column and the value."""
    out = []
    for n, data in enumerate(rows, start=first):
        try:
            out.append(DeclaredRow.model_validate(data))
        except ValidationError as exc:
            raise DeclaredError(describe(exc, template.format(n=n))) from None
    return out


def _typed(raw: dict[str, str | None], line: int) -> dict[str, Any]:
    """A CSV record with its empty cells dropped and its numbers parsed."""
    out: dict[str, Any] = {}
    for column, value in raw.items():
        if column is None:
            raise DeclaredError(f"line {line}: more cells than the header has columns")
        text = (value or "").strip()
        if not text:
            continue
        if column in NUMBERS:
            try:
                out[column] = NUMBERS[column](text)
            except ValueError:
                kind = "an integer" if NUMBERS[column] is int else "a number"
                raise DeclaredError(f"line {line}: {column} = {text!r}: expected {kind}") from None
        else:
            out[column] = text
    return out


def parse_csv(text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in COLUMNS]
    if not header or unknown:
        raise DeclaredError(f"line 1: unknown column(s) {', '.join(map(repr, unknown)) or '(no header)'}; "
                            f"expected a header of {', '.join(COLUMNS)}")
    reader.fieldnames = header
    return [(reader.line_num, _typed(record, reader.line_num)) for record in reader]


def parse_jsonl(text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DeclaredError(f"line {n}: not JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise DeclaredError(f"line {n}: expected a JSON object, got {type(value).__name__}")
        rows.append((n, value))
    return rows


def parse(text: str, fmt: str) -> list[DeclaredRow]:
    """The rows of a CSV ("csv") or JSON-lines ("jsonl") file, each validated; an error names
    the line, the column and the value."""
    if fmt not in ("csv", "jsonl"):
        raise DeclaredError(f"format {fmt!r}: expected csv or jsonl")
    numbered = parse_csv(text) if fmt == "csv" else parse_jsonl(text)
    if not numbered:
        raise DeclaredError("no rows: expected a header line and at least one row" if fmt == "csv" else "no rows")
    out = []
    for line, data in numbered:
        out.extend(validate([data], "line {n}", line))
    return out


def to_json(row: DeclaredRow) -> dict[str, Any]:
    return row.model_dump(mode="json", exclude_none=True)
