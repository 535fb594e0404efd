"""Structured, quiet-by-default logging shared by every command (key=value lines on stderr)."""

from __future__ import annotations

import logging
import sys
import threading
import time


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage().replace("\n", " | ")
        line = f'ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} logger={record.name} msg="{msg}"'
        if record.exc_info and record.levelno >= logging.ERROR:
            exc = self.formatException(record.exc_info).replace("\n", " | ")
            line += f' exc="{exc}"'
        return line


def setup(level: str = "warning") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party libraries stay at warning unless asked for debug.
    for noisy in ("grpc", "asyncio", "httpx", "httpcore", "urllib3", "influxdb_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level.lower() != "debug" else logging.DEBUG)


class Throttled:
    """A logger that writes at most ``burst`` lines per ``per`` seconds for each key, then one
    line saying how many it held back. For whatever a remote party can make us log (hostile
    input must not fill the disk); keys are a small fixed set (a reason, never a peer's name)."""

    def __init__(self, logger: logging.Logger, burst: int = 10, per: float = 60.0) -> None:
        self.logger = logger
        self.burst = burst
        self.per = per
        self._windows: dict[str, list[float]] = {}  # key -> [window start, lines written, held back]
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: object) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = time.monotonic()
        with self._lock:
            w = self._windows.setdefault(key, [now, 0, 0])
            if now - w[0] >= self.per:
                held = int(w[2])
                w[:] = [now, 0, 0]
                if held:
                    self.logger.log(level, "%d more like this (%s) held back in the last %.0fs", held, key, self.per)
            if w[1] >= self.burst:
                w[2] += 1
                return
            w[1] += 1
        self.logger.log(level, msg, *args)

    def warning(self, key: str, msg: str, *args: object) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def info(self, key: str, msg: str, *args: object) -> None:
        self.log(logging.INFO, key, msg, *args)
