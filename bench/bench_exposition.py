"""What the agent's opt-in /metrics costs: RSS and scrape time, against the same agent without it.

Runs a real agent (simulated plugin, 8 GPUs, 1 s interval, no collector: it only collects and
spools) twice, once without ``prometheus.listen`` (the baseline) and once with it, scraped once a
second. Prints figures and ratios measured in the same run; nothing is asserted.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.services import free_port

RUN_S = 20.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run(listen: bool) -> tuple[int, list[float], int]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cfg = {"node": "bench", "collectors": [f"127.0.0.1:{free_port()}"], "data_dir": tmp,
               "plugins": {"simulated": {"interval": 1, "gpus": 8}}}
        if listen:
            cfg["prometheus"] = {"listen": f"127.0.0.1:{port}", "names": "fleetmon"}
        Path(tmp, "agent.yml").write_text(yaml.safe_dump(cfg))
        proc = subprocess.Popen([sys.executable, "-m", "fleetmon", "agent", "--config", f"{tmp}/agent.yml"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        scrape_ms: list[float] = []
        size = 0
        try:
            end = time.monotonic() + RUN_S
            while time.monotonic() < end:
                time.sleep(1.0)
                if listen:
                    t0 = time.perf_counter()
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                            size = len(resp.read())
                        scrape_ms.append((time.perf_counter() - t0) * 1e3)
                    except OSError:
                        pass
            return rss_kib(proc.pid), scrape_ms, size
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    base, _, _ = run(listen=False)
    with_rss, scrapes, size = run(listen=True)
    print(f"agent RSS without /metrics: {base / 1024:.1f} MiB")
    print(f"agent RSS with /metrics, scraped every 1 s: {with_rss / 1024:.1f} MiB "
          f"(+{(with_rss - base) / 1024:.1f} MiB, ratio {with_rss / base:.3f})")
    if scrapes:
        print(f"scrape: {size / 1024:.0f} KiB body, median {statistics.median(scrapes):.1f} ms, "
              f"max {max(scrapes):.1f} ms over {len(scrapes)} scrapes")


if __name__ == "__main__":
    main()
