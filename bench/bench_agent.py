"""What the agent costs a GPU node, beside Debian's node_exporter measured in the same run.

    .venv/bin/python bench/bench_agent.py [--seconds 120] [--repeat 1] [--tree node-exporter] [--threads]

1. **Memory floor**: a fresh interpreter imports, one by one, the libraries the agent cannot run
   without (asyncio, sqlite3, protobuf and the wire schema, h2, the NVML binding, then the
   rest of the standard library the agent's code imports, found by importing that code in
   another interpreter; the fake NVML too, since this benchmark loads it) and prints the RSS
   after each: the floor under any agent written in Python on these libraries. Nothing else is
   imported (not the agent's own code, not the YAML parser it drops after start).
2. **The real agent** (``python -m fleetmon agent``) with the nvidia (fake NVML, 8 H100-style
   GPUs, ``--latency-us`` per driver call), kmsg (``/dev/kmsg``), optics and power plugins at 1 Hz
   on the captured sysfs tree, streaming to a real collector, for ``--seconds`` after a warm-up;
   beside it node_exporter (default collectors, ``--path.sysfs`` on the same tree) scraped once a
   second. CPU is the utime+stime delta of ``/proc/<pid>/stat`` over the same window for both
   processes; RSS and PSS at the end. ``--threads`` adds the agent's CPU per thread. Beside them,
   in the same window, ``bench/driver_floor.py`` replays the NVML calls the agent makes, at its
   cadence, with no agent code: the driver's share of the agent's CPU, a floor no agent that asks
   the same questions goes below; the agent's own cost is what it spends above that. And a
   stream floor (:data:`IN_USE`): the same libraries sending a batch of the agent's size once a
   second to the same collector, storing it in SQLite first and deleting it on its ack, with no
   scheduler, plugins or encoding: what the stream and the WAL cost any agent on them. What the
   agent spends above the driver and the stream is its scheduler, plugins and encoding.
3. **NVIDIA per GPU per cycle** (in this process, same fake and latency): CPU of one collection
   divided by the GPUs, and the part spent inside the fake itself.
4. **Power per series** on each captured tree with power files, against node_exporter's rapl,
   powersupplyclass and hwmon collectors (see ``bench/bench_power.py``).

The machine is shared with other jobs: read the ratios (agent / node_exporter, measured in the
same window), and use ``--repeat`` to see the spread.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_power import collect_as_the_agent  # noqa: E402
from bench_power import compare as power_compare  # noqa: E402
from bench_power import report as power_report  # noqa: E402

import tests.fakenvml as fake  # noqa: E402
from agent.codec import SeriesTable, Stamped, build_batch  # noqa: E402
from agent.plugin import PluginContext  # noqa: E402
from agent.plugins.kmsg.plugin import KmsgConfig, KmsgPlugin  # noqa: E402
from agent.plugins.nvidia.plugin import NvidiaConfig, NvidiaPlugin  # noqa: E402
from agent.plugins.optics.plugin import OpticsConfig, OpticsPlugin  # noqa: E402
from agent.plugins.power import PowerPlugin  # noqa: E402
from agent.plugins.power.config import PowerConfig  # noqa: E402
from agent.wal import Wal  # noqa: E402
from tests.fleet import AgentProc, CollectorProc  # noqa: E402
from tests.services import FIXTURES, Process, free_port, proc_cpu, wait_for_http, wait_until  # noqa: E402

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
TICK = os.sysconf("SC_CLK_TCK")
#: The agent's plugins in this benchmark, all at 1 Hz (``bench/agent_ab.py`` runs the same).
PLUGINS: dict[str, dict[str, object]] = {
    "nvidia": {"interval": 1, "library": "tests.fakenvml"},
    "kmsg": {"interval": 1, "path": "/dev/kmsg"},
    "optics": {"interval": 1},  # EEPROMs as configured by default (none is live on a captured tree)
    "power": {"interval": 1},
}


def agent_options(tree: Path) -> dict[str, object]:
    """The agent's settings beside its plugins: a batch a second, quiet, on the captured ``tree``."""
    return {"batch_interval": 1, "log_level": "warning", "audit_log": None, "sysfs_root": str(tree)}

#: The libraries the agent needs, in import order, for the floor (module, what it is).
FLOOR = [
    ("asyncio", "asyncio (imports ssl, so OpenSSL)"),
    ("sqlite3", "sqlite3 (the WAL)"),
    ("proto.telemetry_pb2", "protobuf runtime + the wire schema"),
    ("h2.connection", "h2 (HTTP/2 for the gRPC stream)"),
    ("pynvml", "nvidia-ml-py (NVML binding)"),
    ("stdlib", "the rest of the stdlib the agent uses"),
    ("tests.fakenvml", "the fake NVML this benchmark loads"),
]
#: What the agent's gRPC client (agent/rpc.py) imports of h2.
H2_MODULES = ("h2.connection", "h2.config", "h2.errors", "h2.events", "h2.exceptions", "hpack")
#: The code of the running agent in this benchmark (its own packages are not floor; the
#: standard-library modules they import beyond the libraries above are).
AGENT_CODE = ("agent.service", "agent.main", "agent.plugins.nvidia.plugin", "agent.plugins.kmsg.plugin",
              "agent.plugins.optics.plugin", "agent.plugins.power.plugin")
OWN_PACKAGES = ("agent", "fleetmon", "fleetmon_common", "proto", "tests")


def agent_stdlib() -> list[str]:
    """The modules the agent's code imports beyond the libraries of FLOOR, its own packages and
    what it drops after start (``agent.main.START_ONLY``): found by importing it in a fresh
    interpreter, so the floor holds what the agent needs and nothing else."""
    libraries = [m for m, _ in FLOOR if m != "stdlib"] + list(H2_MODULES)
    code = (
        "import importlib, json, sys\n"
        f"for mod in {libraries!r}: importlib.import_module(mod)\n"
        "before = set(sys.modules)\n"
        f"for mod in {list(AGENT_CODE)!r}: importlib.import_module(mod)\n"
        "from agent.main import START_ONLY\n"
        f"skip = set({list(OWN_PACKAGES)!r}) | set(START_ONLY)\n"
        "print(json.dumps(sorted(m for m in set(sys.modules) - before if m.split('.')[0] not in skip)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def memory_floor(stdlib: list[str]) -> list[tuple[str, float]]:
    """RSS of a fresh interpreter after each import of FLOOR, in order; "stdlib" imports ``stdlib``."""
    code = (
        "import importlib, sys\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS'): return int(line.split()[1]) / 1024\n"
        "out = [('python', rss())]\n"
        f"for mod in {[m for m, _ in FLOOR]!r}:\n"
        f"    for name in ({stdlib!r} if mod == 'stdlib' else {list(H2_MODULES)!r} if mod == 'h2.connection' "
        "else [mod]):\n"
        "        importlib.import_module(name)\n"
        "    out.append((mod, rss()))\n"
        "print(repr(out))\n"  # repr, not json: json is one of the modules measured
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return [(name, float(v)) for name, v in ast.literal_eval(out.stdout)]


#: The same libraries in use, no agent: a gRPC stream over mutual TLS to the collector (the
#: agent's TLS settings and HTTP/2 client, agent/tls.py and agent/rpc.py: h2 on asyncio) and a
#: SQLite file in WAL mode, doing what the agent's stream does at its cadence: once a second a
#: batch of the agent's size (pre-built: no samples are collected or encoded) is stored and sent,
#: and each ack read deletes what it acknowledges. It runs beside the agent until its stdin
#: closes, then prints its RSS: the code pages and buffers any agent on these libraries touches,
#: and (its CPU, measured by the caller over the agent's window) the stream's cost without the
#: agent's scheduler, plugins or encoding. The database calls run on the event loop itself,
#: without the agent's WAL thread: one hand-off fewer, so the floor is if anything low.
IN_USE = """
import asyncio, os, sqlite3, sys, tempfile, threading, time
from pathlib import Path
import pynvml, tests.fakenvml
from agent.tls import AgentTlsConfig, ChannelSecurity
from proto import telemetry_pb2 as pb

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

async def acks(call, db, acked):
    while (body := await call.read()) is not None:
        msg = pb.CollectorMessage.FromString(body)
        if msg.HasField("ack"):
            db.execute("DELETE FROM b WHERE seq <= ?", (msg.ack.contiguous,))
            acked[0] = msg.ack.contiguous

async def main(addr, ca, cert, key, samples):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
    db = sqlite3.connect(os.path.join(tempfile.mkdtemp(), "w.sqlite"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE b (seq INTEGER PRIMARY KEY, body BLOB)")
    conn = await ChannelSecurity(AgentTlsConfig(Path(ca), Path(cert), Path(key)), None).connect(addr, 5)
    call = conn.open("/fleetmon.v1.Telemetry/Stream")
    hello = pb.Hello(node="floor", wal_id=os.urandom(8).hex(), agent_version="0")  # the cert's name
    await call.write(pb.AgentMessage(hello=hello).SerializeToString())
    seq = pb.CollectorMessage.FromString(await call.read()).welcome.last_durable_sequence
    acked = [seq]
    reader = asyncio.create_task(acks(call, db, acked))
    ids = list(range(1, samples + 1))
    parts = [ids[i::4] for i in range(4)]  # one block per plugin's collection
    batch = pb.Batch()
    for sid in ids:
        batch.series.add(id=sid, measurement="floor", field=f"v{sid}", type=pb.GAUGE, help="h")
    next_at = loop.time()
    while not stop.is_set():
        seq += 1
        batch.sequence = batch.oldest_sequence = seq
        del batch.blocks[:]
        now = int(time.time() * 1000)
        for part in parts:
            batch.blocks.add(timestamp_ms=now, series_ids=part, values=bytes(8 * len(part)))
        body = batch.SerializeToString()
        db.execute("INSERT INTO b VALUES (?, ?)", (seq, body))
        await call.write(pb.AgentMessage(batch=batch).SerializeToString())
        del batch.series[:]  # defined once, as the agent does
        next_at += 1.0
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    deadline = loop.time() + 10  # as an agent that stops drains: until the last batch is acked
    while acked[0] < seq and loop.time() < deadline and not reader.done():
        await asyncio.sleep(0.05)
    print(rss(), db.execute("SELECT count(*) FROM b").fetchone()[0])
    reader.cancel()
    call.cancel()
    await conn.aclose()

asyncio.run(main(*sys.argv[1:5], int(sys.argv[5])))
"""
#: Samples a second in the stream floor's batches: about what the agent sends on this benchmark's
#: node (~380 a second stored by the collector).
IN_USE_SAMPLES = 380


def start_in_use(col: CollectorProc) -> subprocess.Popen[str]:
    """The stream floor (:data:`IN_USE`), running until its stdin closes."""
    assert col.pki is not None, "the bench's collector speaks mutual TLS, as a deployed one does"
    own = col.pki.node("floor")
    return subprocess.Popen([sys.executable, "-c", IN_USE, col.addr, str(col.pki.ca), str(own.cert), str(own.key),
                             str(IN_USE_SAMPLES)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop_in_use(proc: subprocess.Popen[str]) -> tuple[float, int]:
    """Close the stream floor's stdin; its RSS at the end (MiB) and the batches its WAL still
    held once the collector had acked what it sent (0: every ack arrived and was applied)."""
    out, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"the in-use floor did not run: {err[-2000:]}")
    rss, unacked = out.split()[-2:]
    return float(rss), int(unacked)


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native id, from ``py-spy dump`` when it is installed (else none)."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return {}
    out = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, check=False).stdout
    names = {}
    for line in out.splitlines():
        if line.startswith("Thread ") and '"' in line:
            tid = line.split()[1]
            names[int(tid, 16) if tid.startswith("0x") else int(tid)] = line.split('"')[1]
    return names


def thread_cpu(pid: int, names: dict[int, str]) -> dict[int, tuple[str, float, int]]:
    """Per thread: (name, CPU seconds, context switches so far)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        switches = sum(int(line.split()[1]) for line in status.splitlines()
                       if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")))
        # Without py-spy no thread has a name: say so rather than calling them all native.
        unnamed = "(native)" if names else "(every thread: install py-spy to name them)"
        out[int(tid)] = (names.get(int(tid), unnamed), (int(fields[11]) + int(fields[12])) / TICK, switches)
    return out


def memory(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB."""
    got = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("Rss:", "Pss:"):
            got[parts[0]] = int(parts[1]) / 1024
    return got.get("Rss:", 0.0), got.get("Pss:", 0.0)


@dataclass
class Run:
    agent_cpu: float  # fraction of one core
    agent_rss: float
    agent_pss: float
    ne_cpu: float
    ne_rss: float
    ne_pss: float
    ne_series: int
    agent_samples_per_s: float
    threads: dict[str, tuple[float, float]]  # name: (CPU s per s, context switches per s)
    floor_in_use: float
    driver_cpu: float  # fraction of one core: the agent's NVML calls replayed alone (driver_floor.py)
    driver_calls_per_s: float
    stream_cpu: float  # fraction of one core: the same libraries streaming at the agent's cadence (IN_USE)


def above(run: Run) -> float:
    """The agent's CPU above what the driver alone costs for the same calls (fraction of a core)."""
    return run.agent_cpu - run.driver_cpu


def agent_own(run: Run) -> float:
    """The agent's CPU above the driver and the stream floor: its scheduler, plugins and encoding."""
    return run.agent_cpu - run.driver_cpu - run.stream_cpu


def scrape_loop(url: str, stop: threading.Event, series: list[int]) -> None:
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            body = urllib.request.urlopen(url, timeout=5).read().decode()
            own = ("go_", "process_", "promhttp_")
            series[0] = sum(1 for ln in body.splitlines() if ln and not ln.startswith("#") and not ln.startswith(own))
        except OSError:
            pass
        next_at += 1.0
        stop.wait(max(0.0, next_at - time.monotonic()))


def real_agent(tree: Path, seconds: float, latency_us: int, *, warmup: float, per_thread: bool,
               nvidia: dict[str, object] | None = None) -> Run:
    env_before = os.environ.get("FAKENVML_LATENCY_US")
    os.environ["FAKENVML_LATENCY_US"] = str(latency_us)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            col = CollectorProc(t, extra={"log_level": "warning"}).start()
            plugins = {**PLUGINS, "nvidia": {**PLUGINS["nvidia"], **(nvidia or {})}}
            agent = AgentProc(t, "bench", [col.addr], plugins=plugins, extra=agent_options(tree)).start()
            port = free_port()
            ne = Process([NODE_EXPORTER, f"--path.sysfs={tree}", f"--web.listen-address=127.0.0.1:{port}"],
                         t / "node_exporter.log")
            stop = threading.Event()
            series = [0]
            detail = (nvidia or {}).get("detail_interval", NvidiaConfig.detail_interval)
            crc = (nvidia or {}).get("nvlink_crc_interval", NvidiaConfig.nvlink_crc_interval)
            driver: subprocess.Popen[str] | None = None
            in_use: subprocess.Popen[str] | None = None
            try:
                driver = subprocess.Popen([sys.executable, str(REPO / "bench" / "driver_floor.py"),
                                           "--detail-interval", str(detail), "--nvlink-crc-interval", str(crc)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
                assert driver.stdout is not None
                calls = json.loads(driver.stdout.readline() or "null")
                if calls is None:
                    raise RuntimeError("bench/driver_floor.py did not start (see its error above)")
                url = f"http://127.0.0.1:{port}/metrics"
                wait_for_http(url, proc=ne.proc)
                wait_until(lambda: col.get("/api/v1/summary")["nodes_up"] == 1, 60, "agent streaming")
                scraper = threading.Thread(target=scrape_loop, args=(url, stop, series), daemon=True)
                scraper.start()
                in_use = start_in_use(col)
                time.sleep(warmup)  # past imports, discovery, the first batches and the one-off settle (30 s)
                assert agent.proc is not None
                a_pid, n_pid = agent.proc.pid, ne.pid
                names = thread_names(a_pid) if per_thread else {}
                th0 = thread_cpu(a_pid, names)
                samples0 = col.get("/api/v1/nodes/bench")["samples"]
                pids = (a_pid, n_pid, driver.pid, in_use.pid)
                a0, n0, d0, s0 = (proc_cpu(pid) for pid in pids)
                w0 = time.monotonic()
                time.sleep(seconds)
                a1, n1, d1, s1 = (proc_cpu(pid) for pid in pids)
                w1 = time.monotonic()
                samples1 = col.get("/api/v1/nodes/bench")["samples"]
                th1 = thread_cpu(a_pid, names)
                a_rss, a_pss = memory(a_pid)
                n_rss, n_pss = memory(n_pid)
                in_use_rss, _unacked = stop_in_use(in_use)
            finally:
                stop.set()
                if in_use is not None and in_use.returncode is None:
                    in_use.kill()
                    in_use.wait()
                if driver is not None:
                    driver.communicate(timeout=30)  # stdin closed: it stops
                ne.stop()
                agent.stop()
                col.stop()
    finally:
        if env_before is None:
            os.environ.pop("FAKENVML_LATENCY_US", None)
        else:
            os.environ["FAKENVML_LATENCY_US"] = env_before
    elapsed = w1 - w0
    threads: dict[str, tuple[float, float]] = {}
    for tid, (name, cpu, switches) in th1.items():
        key = name.rstrip("0123456789_") if name.startswith("fleetmon-") else name
        _name, cpu0, switches0 = th0.get(tid, (name, 0.0, 0))
        had_cpu, had_switches = threads.get(key, (0.0, 0.0))
        threads[key] = (had_cpu + (cpu - cpu0) / elapsed, had_switches + (switches - switches0) / elapsed)
    return Run((a1 - a0) / elapsed, a_rss, a_pss, (n1 - n0) / elapsed, n_rss, n_pss, series[0],
               (samples1 - samples0) / elapsed, threads, in_use_rss, (d1 - d0) / elapsed,
               calls["per_second"], (s1 - s0) / elapsed)


def nvidia_per_gpu(latency_us: int, cycles: int = 120) -> tuple[float, float, float, int]:
    """In-process: (CPU ms per GPU per cycle, of which inside the fake, NVML calls per GPU per cycle, samples)."""
    fake.reset("h100x8").latency_s = latency_us / 1e6
    plugin = NvidiaPlugin(PluginContext(node="bench"), NvidiaConfig(library="tests.fakenvml", events=False))
    plugin.discover()
    try:
        plugin.collect()  # warm: "not supported" answers are learnt in the first cycle
        assert plugin.nvml is not None
        gpus = len(plugin.gpus)
        calls0, inside0 = plugin.nvml.calls, fake.state.seconds_inside
        c0 = time.process_time()
        samples = 0
        for _ in range(cycles):
            samples = len(plugin.collect())
        cpu = time.process_time() - c0
        inside = fake.state.seconds_inside - inside0
        calls = (plugin.nvml.calls - calls0) / cycles / gpus
    finally:
        plugin.close()
    return cpu / cycles / gpus * 1e3, inside / cycles / gpus * 1e3, calls, samples


def in_process(tree: Path, latency_us: int, cycles: int = 60) -> tuple[float, int]:
    """The same plugins' work in this process, no scheduler, WAL thread or stream: each cycle
    collects every plugin, encodes one batch and appends it to a WAL. (CPU s per cycle, samples.)"""
    fake.reset("h100x8").latency_s = latency_us / 1e6
    ctx = PluginContext(node="bench", sysfs_root=tree)
    sync_plugins = [NvidiaPlugin(ctx, NvidiaConfig(library="tests.fakenvml")),
                    KmsgPlugin(ctx, KmsgConfig(path="/dev/kmsg")), OpticsPlugin(ctx, OpticsConfig())]
    power = PowerPlugin(ctx, PowerConfig())
    for plugin in (*sync_plugins, power):
        plugin.discover()

    async def run() -> tuple[float, int]:
        with tempfile.TemporaryDirectory() as tmp:
            wal, table = Wal(Path(tmp) / "wal.sqlite", 256 << 20), SeriesTable()
            samples = 0
            c0 = 0.0
            for i in range(cycles + 1):
                if i == 1:
                    c0 = time.process_time()  # the first cycle asks the details and defines every series
                items = [Stamped(time.time(), p.collect()) for p in sync_plugins]
                items.append(Stamped(time.time(), await collect_as_the_agent(power)))
                batch, ids = build_batch(table, items, [])
                samples = sum(len(item.collection) for item in items)
                wal.append(batch, ids, table.take_new(), samples, 0)
            cpu = (time.process_time() - c0) / cycles
            wal.close()
            return cpu, samples

    try:
        return asyncio.run(run())
    finally:
        for plugin in (*sync_plugins, power):
            plugin.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--warmup", type=float, default=40.0,
                    help="seconds before the window: past discovery, the first batches and the agent's one-off "
                         "memory settle 30 s after start (a garbage collection and heap trim, 20-40 ms once)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tree", default="node-exporter", help="captured tree for the real agent and node_exporter")
    ap.add_argument("--latency-us", type=int, default=100, help="fake NVML: driver time per call")
    ap.add_argument("--threads", action="store_true", help="print the agent's CPU per thread")
    ap.add_argument("--nvidia", default="{}",
                    help='extra nvidia plugin options as JSON, e.g. \'{"isolation": "none"}\'')
    ap.add_argument("--skip-power", action="store_true")
    args = ap.parse_args()
    if not os.access(NODE_EXPORTER, os.X_OK):
        print(f"{NODE_EXPORTER} not installed (Debian prometheus-node-exporter): no baseline", file=sys.stderr)
        return 2
    tree = FIXTURES / "sysfs" / args.tree / "sys"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    stdlib = agent_stdlib()
    floor = memory_floor(stdlib)
    print("\nmemory floor (RSS of a fresh interpreter after each import):")
    prev = floor[0][1]
    print(f"  {'python':40s} {prev:6.1f} MiB")
    labels = dict(FLOOR)
    for name, rss in floor[1:]:
        print(f"  + {labels[name]:38s} {rss:6.1f} MiB  (+{rss - prev:.1f})")
        prev = rss
    print(f"    (the rest of the stdlib: {len(stdlib)} modules: {', '.join(m for m in stdlib if '.' not in m)})")
    floor_real = floor[-2][1]  # up to the real NVML binding
    floor_bench = floor[-1][1]

    runs = []
    for i in range(args.repeat):
        r = real_agent(tree, args.seconds, args.latency_us, warmup=args.warmup, per_thread=args.threads,
                       nvidia=json.loads(args.nvidia))
        runs.append(r)
        print(f"\nrun {i + 1}/{args.repeat}: {args.seconds:.0f} s on {args.tree}, nvidia (8 GPUs, fake NVML at "
              f"{args.latency_us} us/call) + kmsg + optics + power at 1 Hz, {r.agent_samples_per_s:.0f} samples/s "
              f"stored by the collector")
        print(f"  agent:         CPU {r.agent_cpu * 100:5.2f} % of a core   RSS {r.agent_rss:5.1f} MiB   "
              f"PSS {r.agent_pss:5.1f} MiB")
        print(f"  node_exporter: CPU {r.ne_cpu * 100:5.2f} % of a core   RSS {r.ne_rss:5.1f} MiB   "
              f"PSS {r.ne_pss:5.1f} MiB   ({r.ne_series} series, scraped at 1 Hz)")
        print(f"  ratio agent/node_exporter: CPU {r.agent_cpu / r.ne_cpu:.2f}   RSS {r.agent_rss / r.ne_rss:.2f}")
        print(f"  the driver alone (the agent's {r.driver_calls_per_s:.0f} NVML calls/s replayed in one thread, no "
              f"agent code): CPU {r.driver_cpu * 100:5.2f} % of a core; the agent above it {above(r) * 100:5.2f} %")
        print(f"  the stream alone (the same libraries sending a batch of {IN_USE_SAMPLES} samples a second, WAL "
              f"and acks, no agent): CPU {r.stream_cpu * 100:5.2f} % of a core; the driver and the stream together "
              f"{(r.driver_cpu + r.stream_cpu) * 100:5.2f} %, the agent above both {agent_own(r) * 100:5.2f} %")
        print(f"  agent RSS above the floor: {r.agent_rss - floor_bench:+.1f} MiB (floor with the fake NVML "
              f"{floor_bench:.1f} MiB; with the real binding only {floor_real:.1f} MiB)")
        print(f"  the same libraries in use (a gRPC stream and a SQLite WAL, no agent): {r.floor_in_use:.1f} MiB; "
              f"the agent {r.agent_rss - r.floor_in_use:+.1f} MiB above that")
        if args.threads:
            print(f"    per thread, CPU and context switches a second ({sum(w for _c, w in r.threads.values()):.0f}/s "
                  f"in all):")
            for name, (cpu, switches) in sorted(r.threads.items(), key=lambda kv: -kv[1][0]):
                if cpu > 0 or switches >= 0.5:
                    print(f"    {cpu * 1e3:6.2f} ms/s {switches:6.1f}/s  {name}")
    if len(runs) > 1:
        cpus = sorted(r.agent_cpu * 100 for r in runs)
        ratios = sorted(r.agent_cpu / r.ne_cpu for r in runs)
        rss = sorted(r.agent_rss for r in runs)
        driver = sorted(r.driver_cpu * 100 for r in runs)
        over = sorted(above(r) * 100 for r in runs)
        stream = sorted(r.stream_cpu * 100 for r in runs)
        rest = sorted(agent_own(r) * 100 for r in runs)
        print(f"\nspread over {len(runs)} runs: agent CPU {cpus[0]:.2f}-{cpus[-1]:.2f} %, ratio to node_exporter "
              f"{ratios[0]:.2f}-{ratios[-1]:.2f}, RSS {rss[0]:.1f}-{rss[-1]:.1f} MiB; the driver alone "
              f"{driver[0]:.2f}-{driver[-1]:.2f} %, the agent above it {over[0]:.2f}-{over[-1]:.2f} %; the stream "
              f"alone {stream[0]:.2f}-{stream[-1]:.2f} %, the agent above both {rest[0]:.2f}-{rest[-1]:.2f} %")

    cpu, samples = in_process(tree, args.latency_us)
    print(f"\nthe same plugins' work in-process (collect, encode, WAL append; no scheduler, threads or stream): "
          f"{cpu * 1e3:.2f} ms CPU per cycle for {samples} samples")
    for i, r in enumerate(runs, 1):
        print(f"  run {i}: the real agent {r.agent_cpu * 1e3:.2f} ms per 1 s cycle = "
              f"{r.agent_cpu / cpu:.2f}x the in-process work")

    ms, inside, calls, samples = nvidia_per_gpu(args.latency_us)
    print(f"\nnvidia in-process, fake NVML at {args.latency_us} us/call: {ms:.3f} ms CPU per GPU per cycle "
          f"(of which {inside:.3f} ms inside the fake, sleeps included), {calls:.1f} NVML calls per GPU per cycle, "
          f"{samples} samples per cycle for 8 GPUs")

    if not args.skip_power:
        print()
        for name in ("node-exporter", "procfs"):
            root = FIXTURES / "sysfs" / name / "sys"
            power_report(name, root, power_compare(root, 200))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
