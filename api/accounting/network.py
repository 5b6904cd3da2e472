"""A job's network report: totals, per-node throughput and a plain-language congestion verdict.

Verdict thresholds (per node-second of the job, and per GB the job sent):
- ``heavy``: ≥ 1,000 CNPs handled per node-second, or ≥ 10 RoCE retransmissions per GB;
- ``moderate``: ≥ 50 CNPs handled per node-second, or ≥ 1 retransmission per GB;
- ``none``: below both; ``unknown``: the NICs report no congestion counters (e.g. bnxt_re).
A few CNPs are the normal working of DCQCN congestion control; sustained hundreds per second
mean senders are being throttled, and retransmissions mean packets were lost.
"""

from __future__ import annotations

from typing import Any

HEAVY_CNP_PER_S, MODERATE_CNP_PER_S = 1000.0, 50.0
HEAVY_RETRANS_PER_GB, MODERATE_RETRANS_PER_GB = 10.0, 1.0
COUNTERS = ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets", "cnp_sent", "cnp_handled",
            "ecn_marked_packets", "retransmits", "out_of_sequence", "timeouts")
# The counters a saturated 32-bit PMA counter can make unknown: null where a span was unknown.
UNKNOWABLE = ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets")


def known(row: dict[str, Any]) -> dict[str, Any]:
    """A per-node (or per-hour) sum with its byte and packet counts null when part of its span
    was unknown (``unknown_seconds`` > 0): a lower bound is not reported as the amount."""
    if not row.get("unknown_seconds"):
        return row
    return row | dict.fromkeys(UNKNOWABLE)


def _sum(rows: list[dict[str, Any]], name: str) -> float | None:
    values = [row[name] for row in rows if row[name] is not None]
    return sum(values) if values else None


def _gbps(nbytes: float | None, seconds: float) -> float | None:
    return None if nbytes is None or seconds <= 0 else nbytes * 8 / seconds / 1e9


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def verdict(cnp_per_s: float | None, retrans_per_gb: float | None) -> tuple[str, str]:
    if cnp_per_s is None and retrans_per_gb is None:
        return "unknown", "the NICs report no congestion counters"
    cnp, retrans = cnp_per_s or 0.0, retrans_per_gb or 0.0
    for level, cnp_limit, retrans_limit in (("heavy", HEAVY_CNP_PER_S, HEAVY_RETRANS_PER_GB),
                                            ("moderate", MODERATE_CNP_PER_S, MODERATE_RETRANS_PER_GB)):
        if cnp >= cnp_limit:
            return level, f"{cnp:,.0f} CNPs handled per node-second (>= {cnp_limit:,.0f})"
        if retrans >= retrans_limit:
            return level, f"{retrans:,.2f} retransmissions per GB sent (>= {retrans_limit:g})"
    return "none", f"{cnp:,.1f} CNPs per node-second and {retrans:,.3f} retransmissions per GB"


def network_report(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """From per-node sums (``reads.network``); ``None`` when the job has no network data."""
    if not rows:
        return None
    rows = [known(row) for row in rows]
    node_seconds = sum(row["seconds"] for row in rows)
    totals = {name: _sum(rows, name) for name in COUNTERS}
    unknown_s = sum(row.get("unknown_seconds") or 0.0 for row in rows)
    if unknown_s:
        totals.update(dict.fromkeys(UNKNOWABLE))
    cnp_per_s = _ratio(totals["cnp_handled"], node_seconds)
    sent_gb = None if totals["tx_bytes"] is None else totals["tx_bytes"] / 1e9
    retrans_per_gb = _ratio(totals["retransmits"], sent_gb)
    level, reason = verdict(cnp_per_s, retrans_per_gb)
    moved = (totals["tx_bytes"] or 0) + (totals["rx_bytes"] or 0)
    utils = [row["peak_link_util_pct"] for row in rows if row["peak_link_util_pct"] is not None]
    return {
        **totals,
        "node_seconds": node_seconds,
        "apportioned_fraction": _ratio(_sum(rows, "apportioned_bytes"), moved),
        "peak_link_utilization_pct": max(utils) if utils else None,
        "cnp_handled_per_s": cnp_per_s,
        "cnp_sent_per_s": _ratio(totals["cnp_sent"], node_seconds),
        "retransmits_per_gb": retrans_per_gb,
        "link_down_port_seconds": sum(row["link_down_port_seconds"] for row in rows),
        "unknown_seconds": unknown_s,
        "congestion": level,
        "congestion_reason": reason,
        "per_node": [
            {"node": row["node"], "ports": row["ports"], "seconds": row["seconds"],
             "mean_tx_gbps": _gbps(row["tx_bytes"], row["seconds"]), "mean_rx_gbps": _gbps(row["rx_bytes"], row["seconds"]),
             "peak_tx_gbps": row["peak_tx_gbps"], "peak_rx_gbps": row["peak_rx_gbps"],
             "peak_link_utilization_pct": row["peak_link_util_pct"]}
            for row in rows
        ],
    }


def congestion(rows: list[dict[str, Any]]) -> str | None:
    """Only the verdict of ``network_report(rows)``; ``None`` when the job has no network data."""
    report = network_report(rows)
    return None if report is None else report["congestion"]
