"""The SQL reads: jobs and their hourly rollups, a job's raw intervals for its series.
Imports ``collector`` (the schema) and ``api.accounting``; nothing from HTTP."""
