"""Fuzzing the YAML configuration: the typed settings layer (fleetmon_common/settings.py), the
agent's config with every plugin section, and the collector's config with its rule files and
notifiers.

A config file is the operator's, but it is often generated (Ansible, Helm), and the contract is
the same as for any input: a wrong file gets one ``ConfigError`` listing every problem with its
file and key, never a traceback. Seeds are the example configs (``deploy/config``) and every
YAML block of the READMEs (the documented plugin sections).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from agent.config import AgentConfig
from agent.config import load_config as load_agent_config
from agent.errors import ConfigError as AgentConfigError
from agent.registry import builtin_names
from agent.scheduler import EventBuffer, build_runners, make_context
from collector.config import CollectorConfig
from collector.config import load_config as load_collector_config
from collector.errors import ConfigError as CollectorConfigError
from fleetmon_common import settings
from tests.fuzz import INTERESTING, call, fuzz, mutated_bytes, mutated_json, text_input
from tests.services import REPO

# --- the settings layer ----------------------------------------------------------------------------

DURATIONS = ["500ms", "30s", "5m", "1h30m", "30d", "2w", "1y", "10", "0.5", "256MiB", "1GiB", "64KB", "1024"]


@fuzz(150)
@given(text_input(DURATIONS, max_size=20))
@example("infKB")  # float("inf") * 1000 → int(): OverflowError
@example("1e400MiB")
@example("nanGiB")
def test_durations_and_sizes(text: str) -> None:
    seconds = call(settings.parse_duration, text, errors=(ValueError,))
    assert seconds is None or isinstance(seconds, float)
    size = call(settings.parse_size, text, errors=(ValueError,))
    assert size is None or isinstance(size, int)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(INTERESTING),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=3),
    max_leaves=8)
setting_types = st.sampled_from([int, float, bool, str, Path, list[str], dict[str, str], float | None, int | None,
                                 list[int], dict[str, float], AgentConfig, CollectorConfig])


@fuzz(150)
@given(yaml_values, setting_types)
def test_coerce(value: Any, tp: Any) -> None:
    call(settings.coerce, value, tp, "key", errors=(settings.SettingsError,))


# --- the agent's and the collector's files --------------------------------------------------------


def _yaml_blocks(*paths: Path) -> list[Any]:
    out = []
    for p in paths:
        for block in re.findall(r"```ya?ml\n(.*?)```", p.read_text(), re.S):
            try:
                doc = yaml.safe_load(block)
            except yaml.YAMLError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
    return out


_DOCS = _yaml_blocks(REPO / "README.md", *sorted((REPO / "agent" / "plugins").glob("*/README.md")))
_PLUGINS = set(builtin_names())
AGENT_DOCS: list[Any] = [yaml.safe_load((REPO / "deploy" / "config" / "agent.yml").read_text())]
AGENT_DOCS += [d for d in _DOCS if "plugins" in d or "collectors" in d]
AGENT_DOCS += [{"node": "n1", "plugins": d} for d in _DOCS if set(d) & _PLUGINS]  # bare plugin sections
COLLECTOR_DOCS: list[Any] = [yaml.safe_load((REPO / "deploy" / "config" / "collector.yml").read_text())]
COLLECTOR_DOCS += [d for d in _DOCS if set(d) & {"listen", "sinks", "alerting", "retention"}]
AGENT_KEYS = sorted({k for d in AGENT_DOCS for k in d} | _PLUGINS | {"interval", "timeout", "enabled", "devices"})
COLLECTOR_KEYS = sorted({k for d in COLLECTOR_DOCS for k in d} | {"rules", "notifiers", "type", "url", "urls"})


def config_files(docs: list[Any], keys: list[str]) -> st.SearchStrategy[bytes]:
    """A config as YAML bytes: the documents mutated as structures, their YAML text mutated,
    or their bytes (invalid UTF-8, NULs) mutated."""
    texts = [yaml.safe_dump(d, sort_keys=False) for d in docs]
    return st.one_of(
        mutated_json(docs, keys).map(lambda d: yaml.safe_dump(d, sort_keys=False, allow_unicode=True).encode()),
        text_input(texts, max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        mutated_bytes([t.encode() for t in texts], ops=3),
    )


def _file(data: bytes) -> Path:
    fd, name = tempfile.mkstemp(suffix=".yml", dir=_TMP)
    with open(fd, "wb") as f:
        f.write(data)
    return Path(name)


_TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None


@fuzz(40)
@given(config_files(AGENT_DOCS, AGENT_KEYS))
# Found by fuzzing: a byte that is not UTF-8 raised UnicodeDecodeError and deep nesting
# RecursionError out of load_config, both as tracebacks instead of a ConfigError.
@example(b"node: n1\nplugins: {host: {}}\n# \xff\xfe not UTF-8\n")
@example(b"plugins: " + b"[" * 800 + b"]" * 800 + b"\n")  # nesting past the recursion limit
def test_agent_config(data: bytes) -> None:
    """Load the file and build every plugin from its section, with every problem gathered."""
    path = _file(data)
    try:
        problems = settings.Problems()
        cfg = call(load_agent_config, path, None, problems, errors=(AgentConfigError,))
        if cfg is None:
            return
        ctx = make_context(cfg, EventBuffer())
        runners = call(build_runners, cfg, ctx, None, problems, errors=(AgentConfigError,))
        for r in runners or []:
            r.close()
        assert all(line.strip() for line in problems.lines)
    finally:
        path.unlink()


@fuzz(20)
@given(config_files(COLLECTOR_DOCS, COLLECTOR_KEYS))
@example(b"listen: 127.0.0.1:7700\n\xff\n")
@example(b"retention: " + b"[" * 800 + b"]" * 800 + b"\n")
def test_collector_config(data: bytes) -> None:
    path = _file(data)
    try:
        cfg = call(load_collector_config, path, errors=(CollectorConfigError,))
        assert cfg is None or isinstance(cfg, CollectorConfig)
    finally:
        path.unlink()
