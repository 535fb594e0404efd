"""agent.toolrun: the safe vendor-tool runner, exercised with real small programs in tmp."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from agent import toolrun
from agent.errors import CollectTimeout, PluginError, PluginUnavailable
from agent.toolrun import Tool, ToolError


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_runs_with_fixed_argv_and_no_shell(tmp_path: Path) -> None:
    echo = script(tmp_path, "fake-smi", 'for a in "$@"; do printf "<%s>\\n" "$a"; done\n')
    tool = Tool("fake-smi", echo, timeout=5)
    hostile = "; touch pwned $(touch pwned2) `touch pwned3`"
    result = tool.run("info", "-t", hostile)
    # Each argument arrives as one word, exactly as given: nothing was interpreted by a shell.
    assert result.stdout == f"<info>\n<-t>\n<{hostile}>\n"
    assert result.returncode == 0
    assert result.argv == (str(echo), "info", "-t", hostile)
    assert not any((Path.cwd() / n).exists() for n in ("pwned", "pwned2", "pwned3"))


def test_runs_in_c_locale_with_the_agent_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/local/Ascend/driver/lib64")
    monkeypatch.setenv("LC_ALL", "zh_CN.UTF-8")
    env = script(tmp_path, "env-smi", 'printf "%s %s %s\\n" "$LC_ALL" "$LANG" "$LD_LIBRARY_PATH"\n')
    assert Tool("env-smi", env, timeout=5).run().stdout == "C C /usr/local/Ascend/driver/lib64\n"


def test_deadline_kills_the_tool_and_what_it_forked(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    # The tool forks a helper that keeps stdout open: killing only the tool would leave
    # communicate() waiting on the pipe for the helper's 600 s.
    slow = script(tmp_path, "slow-smi", f'sleep 600 &\necho $! > {marker}\nsleep 600\n')
    tool = Tool("slow-smi", slow, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(CollectTimeout, match=r"slow-smi info ran past its 0.5s deadline and was killed"):
        tool.run("info")
    # Generous (a loaded machine meets it), yet a tenth of what waiting for the helper would take.
    assert time.monotonic() - start < 60
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"forked helper {child} survived the deadline kill")


def test_missing_binary_on_path_is_unavailable_with_one_line(tmp_path: Path) -> None:
    tool = Tool("npu-smi", timeout=5, config_key="plugins.ascend.npu_smi", search_path=str(tmp_path))
    with pytest.raises(PluginUnavailable) as exc:
        tool.resolve()
    assert str(exc.value) == "npu-smi not found on PATH (set plugins.ascend.npu_smi to its path)"


def test_missing_configured_path_is_unavailable(tmp_path: Path) -> None:
    tool = Tool("hy-smi", tmp_path / "nope" / "hy-smi", timeout=5, config_key="plugins.hygon.hy_smi")
    pattern = r"^hy-smi not found at .*/nope/hy-smi \(set plugins.hygon.hy_smi to its path\)$"
    with pytest.raises(PluginUnavailable, match=pattern):
        tool.resolve()


def test_not_executable_is_unavailable(tmp_path: Path) -> None:
    plain = tmp_path / "rocm-smi"
    plain.write_text("#!/bin/sh\necho hi\n")
    plain.chmod(0o644)
    with pytest.raises(PluginUnavailable, match="is not executable"):
        Tool("rocm-smi", plain, timeout=5).resolve()


def test_found_on_search_path(tmp_path: Path) -> None:
    exe = script(tmp_path, "amd-smi", "echo '{}'\n")
    tool = Tool("amd-smi", timeout=5, search_path=str(tmp_path))
    assert tool.resolve() == str(exe)
    assert tool.run("metric", "--json").stdout == "{}\n"


def test_nonzero_exit_names_the_command_and_stderr(tmp_path: Path) -> None:
    bad = script(tmp_path, "npu-smi", 'echo "Error: device 9 does not exist" >&2\nexit 3\n')
    with pytest.raises(ToolError) as exc:
        Tool("npu-smi", bad, timeout=5).run("info", "-t", "health", "-i", "9")
    assert str(exc.value) == (
        "npu-smi info -t health -i 9 exited with status 3: Error: device 9 does not exist"
    )
    assert isinstance(exc.value, PluginError)


def test_binary_garbage_is_a_clear_error(tmp_path: Path) -> None:
    noisy = script(tmp_path, "rocm-smi", "printf 'ok\\377\\376garbage'\n")
    with pytest.raises(ToolError, match=r"rocm-smi --json: output is not UTF-8 text \(byte 2"):
        Tool("rocm-smi", noisy, timeout=5).run("--json")


def test_output_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolrun, "MAX_OUTPUT_BYTES", 1000)
    chatty = script(tmp_path, "chatty-smi", "head -c 5000 /dev/zero | tr '\\0' x\n")
    with pytest.raises(ToolError, match="printed 5000 bytes, more than the 1000 allowed"):
        Tool("chatty-smi", chatty, timeout=5).run()


def test_binary_removed_after_discover(tmp_path: Path) -> None:
    exe = script(tmp_path, "hy-smi", "echo hi\n")
    tool = Tool("hy-smi", exe, timeout=5)
    tool.resolve()
    exe.unlink()
    with pytest.raises(ToolError, match="disappeared"):
        tool.run("--json")


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        Tool("x", timeout=0)
