"""Start real servers from Debian packages on free loopback ports, in temp dirs, for tests.

A test may skip only when the binary is missing and FLEETMON_REQUIRE_SERVICES is unset; CI sets
it (``.ci/run``), so there a missing server is a failure, never a silent skip.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import pytest

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FLEETMON_SHARED", REPO.parent / "shared")).resolve()
FIXTURES = SHARED / "fixtures"


def captured_link(path: Path) -> str:
    """How this copy of ``../shared/fixtures`` holds ``path``, a symbolic link in the capture.

    ``"link"``: kept as a link (a git checkout, ``cp -a``), as in a real /sys; ``"copy"``: flattened
    into a copy of its target (``cp -rL``; links that loop or dangle are then missing);
    ``"text"``: a small file holding the target path (a checkout without symlink support, e.g.
    git with ``core.symlinks=false``). The suite passes with each. Only an expectation that a link
    alone can carry (a name read from a link's target) may depend on this; nothing else should.
    """
    if path.is_symlink():
        return "link"
    if path.is_file() and path.stat().st_size < 4096 and path.read_text(errors="replace").startswith("../"):
        return "text"
    return "copy"


def require_binary(name: str, *candidates: str) -> str:
    """Path of a server binary; skip (or fail under FLEETMON_REQUIRE_SERVICES) when absent."""
    for cand in (name, *candidates):
        path = shutil.which(cand) or (cand if os.path.isabs(cand) and os.access(cand, os.X_OK) else None)
        if path:
            return path
    msg = f"{name} is not installed (Debian package needed; .ci/run installs it)"
    if os.environ.get("FLEETMON_REQUIRE_SERVICES"):
        pytest.fail(msg + " and FLEETMON_REQUIRE_SERVICES is set")
    pytest.skip(msg)


_GIVEN: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) the kernel has counted for process ``pid``:
    fields 14 and 15 of ``/proc/<pid>/stat`` in clock ticks. The command name in parentheses may
    hold spaces, so the fields are split after the last closing parenthesis."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port nothing listens on, for a server a test starts.

    Chosen below the kernel's ephemeral range: a port from that range (what binding port 0
    gives) can be taken as the local port of any outgoing connection between this check and the
    server's bind (CI saw a collector fail with "address already in use"). Never the same port
    twice in one test session."""
    lo, _hi = _ephemeral_range()
    top = min(lo, 65536)
    bottom = max(10_000, top - 20_000)
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(bottom, top)
        if port in _GIVEN:
            continue
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket(socket.AF_INET, kind) as s:  # no room below the range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def wait_for_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None,
                  ok: Callable[[int], bool] = lambda code: code < 500) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if ok(resp.status):
                    return
        except urllib.error.HTTPError as err:
            err.close()  # it holds the response's socket: a ResourceWarning later, in another test
            if ok(err.code):
                return
            last = err
        except OSError as err:
            last = err
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def wait_until(pred: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``pred`` until it returns something true (returned), or fail after ``timeout`` s.

    The way tests synchronise with servers and threads: never a fixed sleep. Pick a timeout a
    loaded 2-core machine meets with room to spare; how fast something happens belongs in bench/.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


#: The test being run (set by tests/conftest.py), so :class:`Process` can insist on the marker.
current_test: list[pytest.Item] = []


class Process:
    """A child process with its log in a file; stopped with SIGTERM then SIGKILL.

    Only for servers: a test that starts one must carry ``@pytest.mark.services`` (so
    ``-m "not services"`` is a quick loop without them); starting one from an unmarked test fails.
    """

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        if current_test and current_test[0].get_closest_marker("services") is None:
            raise RuntimeError(f"{current_test[0].nodeid} starts {Path(argv[0]).name} {' '.join(argv[1:3])}: "
                               "a test that starts a server must be marked @pytest.mark.services")
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@contextlib.contextmanager
def running(argv: Sequence[str], log_path: Path, **kw: object) -> Iterator[Process]:
    proc = Process(argv, log_path, **kw)  # type: ignore[arg-type]
    try:
        yield proc
    finally:
        proc.stop()


def bench_script(name: str) -> ModuleType:
    """A script of ``bench/`` loaded as a module (they are run as files, not imported as a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module
