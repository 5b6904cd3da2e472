"""Reports assembled from queries and priced by accounting: a job's report, its series, the
per-job Prometheus metrics, and their text/CSV rendering. Imports queries and accounting only."""
