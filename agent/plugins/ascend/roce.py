"""The NPUs' RoCE ports through hccn_tool: samples, link-flap bookkeeping and events.

Optical DOM goes out in the shared ``optical_*`` vocabulary (through the optics plugin's own
emitter, so the rule pack's optics rules cover Ascend ports as they cover any transceiver), link
changes as ``net_carrier_changes_total``, error counters as ``ascend_*`` counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.model import Collection, Event, Severity, counter, gauge, info
from agent.plugins.ascend.hccn import LinkStat, OpticalReading
from agent.plugins.optics import metrics as optics_metrics
from agent.plugins.optics.emit import module_samples

OPT_TX_LOS = gauge("optical_tx_los", "1 on transmitter loss of signal")
OPT_MEDIA_SNR = gauge("optical_media_snr_db", "Media-side signal-to-noise ratio per lane", "dB")
OPT_HOST_SNR = gauge("optical_host_snr_db", "Host-side signal-to-noise ratio per lane", "dB")
OPT_PRESENT = gauge("ascend_optical_module_present", "hccn_tool's 'present' line: 1 present, 0 not present")
CARRIER = optics_metrics.NET_CARRIER
CARRIER_CHANGES = optics_metrics.NET_CARRIER_CHANGES
CARRIER_UP = optics_metrics.NET_CARRIER_UP
CARRIER_DOWN = optics_metrics.NET_CARRIER_DOWN
ROCE_RX_ERR = counter("ascend_roce_rx_errors_total", "RoCE packets received with errors (roce_rx_err_pkt_num)")
ROCE_TX_ERR = counter("ascend_roce_tx_errors_total", "RoCE packets that failed to send (roce_tx_err_pkt_num)")
HCCN_STAT = counter("ascend_hccn_stat_total", "Every counter of 'hccn_tool -i N -stat -g', by name (stat)")
FEC_MODE = info("ascend_fec_mode_info", "FEC mode of the NPU port (hccn_tool -fec -g)")
NET_HEALTH = gauge("ascend_net_health_ok", "1 if 'hccn_tool -net_health -g' says Success, else 0")
NET_HEALTH_INFO = info("ascend_net_health_info", "The net health status text of the NPU port")

_NAMED_STATS = {"roce_rx_err_pkt_num": ROCE_RX_ERR, "roce_tx_err_pkt_num": ROCE_TX_ERR}


def port_labels(index: str) -> dict[str, str]:
    """The NPU's RoCE port: ``interface`` like a host NIC (``npu0``) and the NPU's ``gpu`` index."""
    return {"interface": f"npu{index}", "gpu": index}


def optical_samples(col: Collection, index: str, r: OpticalReading) -> None:
    labels = port_labels(index)
    sub = Collection()
    module_samples(sub, labels["interface"], r.module)
    for s in sub.samples:  # the module's series, with the NPU's index added
        col.add(s.metric, s.value, {**s.labels, "gpu": index})
    col.events.extend(sub.events)
    if r.present is not None:
        col.add(OPT_PRESENT, float(r.present), labels)
    for lane, flag in r.tx_los.items():
        col.add(OPT_TX_LOS, float(flag), {**labels, "lane": str(lane)})
    for lane, snr in r.media_snr_db.items():
        col.add(OPT_MEDIA_SNR, snr, {**labels, "lane": str(lane)})
    for lane, snr in r.host_snr_db.items():
        col.add(OPT_HOST_SNR, snr, {**labels, "lane": str(lane)})


def stat_samples(col: Collection, index: str, stats: dict[str, int]) -> None:
    labels = port_labels(index)
    for name, value in stats.items():
        col.add(HCCN_STAT, value, {**labels, "stat": name})
        named = _NAMED_STATS.get(name)
        if named is not None:
            col.add(named, value, labels)


@dataclass
class _Port:
    newest: float
    changes: int
    downs: int


@dataclass
class LinkTracker:
    """Counts link changes across collections from hccn_tool's bounded change history.

    The first reading counts the records the tool lists; later ones add only records newer than
    the newest already seen, so the counter is monotonic although the tool's history is a
    window. A new LINK DOWN record is a ``npu.link_flap`` event.
    """

    ports: dict[str, _Port] = field(default_factory=dict)

    def update(self, col: Collection, index: str, stat: LinkStat) -> None:
        labels = port_labels(index)
        port = self.ports.get(index)
        if port is None:
            new = stat.changes
            port = self.ports[index] = _Port(0.0, 0, 0)
            announce = False
        else:
            new = [c for c in stat.changes if c.ts > port.newest]
            announce = True
        for change in reversed(new):  # oldest first
            port.changes += 1
            if not change.up:
                port.downs += 1
                if announce:
                    col.events.append(Event(
                        kind="npu.link_flap", severity=Severity.WARNING,
                        message=f"Ascend NPU {index} RoCE port went down at {change.text} (hccn_tool link history)",
                        labels=labels, ts=change.ts,
                        action=(f"Check the port's optics ('hccn_tool -i {index} -optical -g': RX power, LOS), "
                                f"the fibre and the switch port; repeated flaps: reseat or replace the module or "
                                f"cable, and check 'hccn_tool -i {index} -net_health -g'"),
                    ))
        if stat.changes:
            port.newest = max(port.newest, *(c.ts for c in stat.changes))
            col.add(CARRIER, float(stat.changes[0].up), labels)  # the newest record is the link's state
        col.add(CARRIER_CHANGES, port.changes, labels)
        col.add(CARRIER_DOWN, port.downs, labels)
        # The tool's own count of link-ups (not windowed): reported as read.
        col.add(CARRIER_UP, stat.up_count, labels)
