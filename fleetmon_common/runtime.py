"""Running collectors say where they are, so ``fleetmon query/status/top`` find them unasked.

A collector writes ``collector-<pid>.json`` (its HTTP API's URL, its data dir, its pid) into the
user's runtime folder once it serves, and removes it when it stops. The commands read the
folder and keep the entries whose process is alive (a collector killed with SIGKILL leaves its
file; the next reader removes it).

The folder: ``$FLEETMON_RUNTIME_DIR``; else ``$XDG_RUNTIME_DIR/fleetmon`` (systemd's per-user
``/run/user/<uid>``); else ``$XDG_STATE_HOME/fleetmon/run`` (``~/.local/state/fleetmon/run``).
It is private (0700): only the same user's collectors are found. No secret is ever written
there: a token comes from the user (``--token-file``, ``FLEETMON_TOKEN``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("fleetmon.runtime")


@dataclass(frozen=True)
class RunningCollector:
    pid: int
    http: str  # the API's base URL ("" when the collector serves no HTTP)
    data_dir: str
    path: Path  # the registration file

    def describe(self) -> str:
        return f"pid {self.pid}: {self.http or 'no HTTP API'}, data in {self.data_dir}"


def runtime_dir() -> Path:
    own = os.environ.get("FLEETMON_RUNTIME_DIR")
    if own:
        return Path(own)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "fleetmon"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "fleetmon" / "run"


def is_loopback_host(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ``::1``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dial_url(http_addr: str, port: int, tls: bool) -> str:
    """The URL a local client dials for a collector bound to ``http_addr`` (``0.0.0.0`` and
    ``::`` are dialled on loopback)."""
    host = http_addr.rpartition(":")[0].strip("[]") or "127.0.0.1"
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def register(http_url: str, data_dir: Path) -> Path | None:
    """Announce this process; the file to remove at stop (None when the folder is not usable:
    the collector runs on, it just cannot be found without ``--url``)."""
    folder = runtime_dir()
    path = folder / f"collector-{os.getpid()}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = folder.stat()
        if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o022:
            log.warning("not registering in %s: not a private folder of this user", folder)
            return None
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "http": http_url, "data_dir": str(data_dir.absolute())}))
        tmp.replace(path)
    except OSError as err:
        log.info("not registering in %s: %s", folder, err.strerror)
        return None
    return path


def unregister(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process reuses the pid: not our collector
        return False
    return True


def running() -> list[RunningCollector]:
    """This user's collectors that are running now, oldest registration first."""
    folder = runtime_dir()
    found: list[tuple[float, RunningCollector]] = []
    try:
        entries = sorted(folder.glob("collector-*.json"))
    except OSError:
        return []
    for path in entries:
        try:
            doc = json.loads(path.read_text())
            entry = RunningCollector(int(doc["pid"]), str(doc.get("http", "")), str(doc["data_dir"]), path)
            mtime = path.stat().st_mtime
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours to read
        if _alive(entry.pid):
            found.append((mtime, entry))
        else:
            unregister(path)  # left by a collector that was killed
    return [e for _t, e in sorted(found, key=lambda x: x[0])]
