"""Accounting: stored physics and rates in, dollars and CO2e out (rates, pricing, conventions,
forecasts, network verdicts). Pure: imports nothing from HTTP, SQL or the layers above."""
