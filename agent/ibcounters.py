"""The RDMA port counters the agent reads, their widths, and how one counter's increase is
worked out from two readings. Names only and arithmetic: reading sysfs is ``agent.roce``'s.

Three kinds of counter, three behaviours (FIELD-NOTES.md, "RoCE / InfiniBand counters"):

- PMA port counters (``ports/<n>/counters/``): the InfiniBand PortCounters attribute, each
  field ``width`` bits wide, that *saturate* at 2**width - 1 and never wrap. A counter at its
  maximum has stopped counting: the increase into or out of that value is unknown (``None``),
  never 0 and never a guess. Since Linux 4.5 the data counters (``port_{xmit,rcv}_{data,packets}``)
  show the 64-bit PortCountersExtended value where the HCA has it (every mlx5), so a value past
  2**32 - 1 is simply counting on. A decrease is a clear (subnet manager, ``perfquery -R``, a
  firmware reset): counting starts again from the new value, never a wrap.
- 64-bit counters (``*_64`` files, mlx5 congestion counters, netdev statistics): a decrease is
  a reset, counted from the new value.
- mlx5 q-counters (``hw_counters/``: retransmissions, sequence errors, requests, CQE errors):
  32-bit firmware counters that wrap at 2**32.
"""

from __future__ import annotations

from typing import Final

WRAP_32: Final = 2**32
OCTETS_PER_DATA_UNIT: Final = 4  # port_xmit_data / port_rcv_data count 4-octet words

DATA_COUNTERS: Final = ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets")
ERROR_COUNTERS: Final = (
    "tx_discards", "rx_errors", "symbol_errors", "link_downed", "rx_discards", "link_error_recovery",
    "local_link_integrity_errors", "excessive_buffer_overrun_errors", "vl15_dropped",
)
WAIT_COUNTERS: Final = ("xmit_wait",)
PORT_COUNTERS: Final = DATA_COUNTERS + ERROR_COUNTERS + WAIT_COUNTERS
CONGESTION_COUNTERS: Final = ("np_cnp_sent", "np_ecn_marked_roce_packets", "rp_cnp_handled", "rp_cnp_ignored")
QUEUE_COUNTERS: Final = (
    "out_of_sequence", "packet_seq_err", "local_ack_timeout_err", "roce_adp_retrans", "roce_adp_retrans_to",
    "rx_write_requests", "rx_read_requests", "rx_atomic_requests", "out_of_buffer", "duplicate_request",
    "rnr_nak_retry_err", "req_cqe_error", "resp_cqe_error", "implied_nak_seq_err",
    "roce_slow_restart", "roce_slow_restart_cnps", "roce_slow_restart_trans",
)
HW_COUNTERS: Final = CONGESTION_COUNTERS + QUEUE_COUNTERS
ETH_COUNTERS: Final = ("eth_tx_bytes", "eth_rx_bytes", "eth_tx_packets", "eth_rx_packets")
ALL_COUNTERS: Final = PORT_COUNTERS + HW_COUNTERS + ETH_COUNTERS
FOUR_OCTET_COUNTERS: Final = ("tx_bytes", "rx_bytes")
# What a job's network intervals are made of, read every cycle; the others (errors, requests,
# netdev statistics) only feed /metrics and may be read less often (``RdmaPorts(slow_every=)``).
FAST_COUNTERS: Final = (
    *DATA_COUNTERS, "np_cnp_sent", "rp_cnp_handled", "np_ecn_marked_roce_packets", "roce_adp_retrans", "out_of_sequence",
    "local_ack_timeout_err",
)

# Canonical name -> (file under counters/, PortCounters field width in bits). port_rcv_discards
# is not a PortCounters field (some drivers add it; mlx5 does not): read as 16-bit like its
# transmit twin.
PMA_COUNTERS: Final[dict[str, tuple[str, int]]] = {
    "tx_bytes": ("port_xmit_data", 32),
    "rx_bytes": ("port_rcv_data", 32),
    "tx_packets": ("port_xmit_packets", 32),
    "rx_packets": ("port_rcv_packets", 32),
    "tx_discards": ("port_xmit_discards", 16),
    "rx_errors": ("port_rcv_errors", 16),
    "symbol_errors": ("symbol_error", 16),
    "link_downed": ("link_downed", 8),
    "rx_discards": ("port_rcv_discards", 16),
    "link_error_recovery": ("link_error_recovery", 8),
    "local_link_integrity_errors": ("local_link_integrity_errors", 4),
    "excessive_buffer_overrun_errors": ("excessive_buffer_overrun_errors", 4),
    "vl15_dropped": ("VL15_dropped", 16),
    "xmit_wait": ("port_xmit_wait", 32),
}


def saturation_value(name: str, wide: bool) -> int | None:
    """The value at which a PMA counter read from ``counters/`` stops; None for other counters."""
    if wide or name not in PMA_COUNTERS:
        return None
    return 2 ** PMA_COUNTERS[name][1] - 1


def counter_file(name: str) -> str:
    """The sysfs file a canonical counter name is read from (without directory)."""
    if name in PMA_COUNTERS:
        return PMA_COUNTERS[name][0]
    return name.removeprefix("eth_") if name in ETH_COUNTERS else name


def counter_increase(name: str, before: int, after: int, wide: bool) -> int | None:
    """Raw increase of one counter between two readings; ``None`` when it cannot be known
    (a PMA counter at, or cleared from, its saturation value)."""
    saturated = saturation_value(name, wide)
    if saturated is not None:
        if after == saturated:
            return None  # stopped at its maximum: how much more happened is unknown
        if before == saturated and after < before:
            return None  # cleared after it had stopped: what happened before the clear is lost
    if after >= before:
        return after - before
    if name in QUEUE_COUNTERS and before < WRAP_32:
        return after + WRAP_32 - before
    return after  # a clear or reset: counted from the new value
