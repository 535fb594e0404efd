"""Run a vendor command-line tool safely: fixed argv, no shell, a deadline, bounded output.

Vendor plugins that have no usable library (``npu-smi``, ``hy-smi``, ``rocm-smi``, ``amd-smi``)
read their tools' output through :class:`Tool`. The rules, in one place so every plugin gets them:

- the binary is found once (``discover``): an absolute path from the plugin's config, or a bare
  name looked up on ``PATH``; a missing or non-executable binary is
  :class:`~agent.errors.PluginUnavailable` with one line that names the config key to set;
- the argument list is fixed by the plugin (never built from a string, never through a shell);
- each run has a deadline; past it the whole process group is killed (vendor tools fork helpers
  that would otherwise keep the pipes open) and :class:`~agent.errors.CollectTimeout` is raised;
- stdout is capped, so a tool stuck printing cannot exhaust the agent's memory;
- a non-zero exit or undecodable output is :class:`ToolError`, and a parser that cannot make
  sense of the text raises :class:`ToolOutputError` -- both are ``PluginError``: the cycle fails,
  the agent logs it, the next cycle tries again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import CollectTimeout, PluginError, PluginUnavailable

#: Vendor tools print a few KiB per device; 8 MiB is far past any real output.
MAX_OUTPUT_BYTES = 8 * 1024 * 1024


class ToolError(PluginError):
    """The tool ran but failed (non-zero exit, output not text, output too large)."""


class ToolOutputError(PluginError):
    """The tool's output could not be parsed; the message names the tool and what was wrong."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    argv: tuple[str, ...]
    stdout: str
    stderr: str
    returncode: int
    seconds: float


def _first_line(text: str, limit: int = 200) -> str:
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            return line[:limit]
    return ""


class Tool:
    """One vendor binary, located once and run with fixed argument lists.

    ``path`` is what the plugin's config says (``npu_smi: /usr/local/bin/npu-smi``); ``name``
    is the default looked up on ``PATH`` when the config leaves it empty. ``config_key`` is the
    setting the operator changes, quoted in the error when the binary is missing.
    """

    def __init__(
        self,
        name: str,
        path: str | Path = "",
        *,
        timeout: float = 10.0,
        config_key: str = "",
        env: Mapping[str, str] | None = None,
        search_path: str | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"{name}: timeout must be positive, got {timeout}")
        self.name = name
        self.configured = str(path) if path else ""
        self.timeout = timeout
        self.config_key = config_key
        self._search_path = search_path
        # The agent's environment is kept: npu-smi and hy-smi find their driver libraries through
        # LD_LIBRARY_PATH set by the vendor's profile script. Vendor tools localise numbers and
        # headings; the parsers expect the C locale.
        self.env = {**os.environ, "LC_ALL": "C", "LANG": "C", **(env or {})}
        self.binary = ""

    def resolve(self) -> str:
        """Find the binary; raise PluginUnavailable with one actionable line when it is absent."""
        hint = f" (set {self.config_key} to its path)" if self.config_key else ""
        candidate = self.configured or self.name
        if os.sep in candidate:
            if not os.path.isfile(candidate):
                raise PluginUnavailable(f"{self.name} not found at {candidate}{hint}")
            if not os.access(candidate, os.X_OK):
                raise PluginUnavailable(f"{self.name} at {candidate} is not executable{hint}")
            self.binary = candidate
            return candidate
        found = shutil.which(candidate, path=self._search_path)
        if found is None:
            raise PluginUnavailable(f"{candidate} not found on PATH{hint}")
        self.binary = found
        return found

    def run(self, *args: str, timeout: float | None = None, ok_codes: Sequence[int] = (0,)) -> ToolResult:
        """Run the binary with ``args``; return its output or raise a PluginError subclass."""
        if not self.binary:
            self.resolve()
        argv = (self.binary, *args)
        shown = " ".join((self.name, *args))
        deadline = self.timeout if timeout is None else timeout
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                shell=False,
                close_fds=True,
                # Own process group, so a timeout kills the tool and whatever it forked.
                start_new_session=True,
            )
        except FileNotFoundError as err:
            # It was there at discover time; a driver upgrade may have moved it.
            raise ToolError(f"{shown}: binary {self.binary} disappeared: {err.strerror}") from err
        except PermissionError as err:
            raise ToolError(f"{shown}: cannot execute {self.binary}: {err.strerror}") from err
        try:
            out, err_out = proc.communicate(timeout=deadline)
        except subprocess.TimeoutExpired as err:
            self._kill(proc)
            raise CollectTimeout(f"{shown} ran past its {deadline:g}s deadline and was killed") from err
        seconds = time.monotonic() - start
        if len(out) > MAX_OUTPUT_BYTES:
            raise ToolError(f"{shown}: printed {len(out)} bytes, more than the {MAX_OUTPUT_BYTES} allowed")
        try:
            text = out.decode("utf-8")
        except UnicodeDecodeError as err:
            bad = out[err.start : err.start + 8]
            raise ToolError(f"{shown}: output is not UTF-8 text (byte {err.start}: {bad!r})") from err
        stderr = err_out.decode("utf-8", "replace")
        if proc.returncode not in ok_codes:
            why = _first_line(stderr) or _first_line(text) or "no output"
            raise ToolError(f"{shown} exited with status {proc.returncode}: {why}")
        return ToolResult(argv, text, stderr, proc.returncode, seconds)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        # Reap it; the pipes close once the group is gone.
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
