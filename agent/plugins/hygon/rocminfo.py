"""Parse ``rocminfo`` (Hygon DTK / ROCm) into the HSA agents it lists.

Used once at discover time for what hy-smi does not print: the ISA name (``gfx928``) and the
marketing name. Each agent is a block of ``Key:  value`` lines after an ``Agent N`` header;
nested ``Pool``/``ISA`` blocks are indented further and ignored. The DTK build prints an ANSI
colour escape on its first line (fixture hygon-gpu-24.04.3-rocminfo.txt), skipped here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.toolrun import ToolOutputError

_AGENT_RE = re.compile(r"^Agent\s+(\d+)\s*$")
_FIELD_RE = re.compile(r"^  ([A-Za-z][A-Za-z0-9 .()/-]*?):\s+(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class HsaAgent:
    number: int
    name: str  # "gfx928" for a GPU/DCU agent, the CPU model for a CPU agent
    uuid: str  # "GPU-7100fa8866904061"; "CPU-XX" for CPUs
    marketing_name: str
    device_type: str  # "CPU", "GPU", "DCU"
    node: int


def parse_rocminfo(text: str, *, source: str = "rocminfo") -> list[HsaAgent]:
    agents: list[HsaAgent] = []
    current: dict[str, str] | None = None
    number = 0

    def flush() -> None:
        if current is None:
            return
        try:
            agents.append(HsaAgent(
                number=number,
                name=current["Name"],
                uuid=current.get("Uuid", ""),
                marketing_name=current.get("Marketing Name", ""),
                device_type=current["Device Type"],
                node=int(current.get("Node", "-1")),
            ))
        except (KeyError, ValueError) as err:
            raise ToolOutputError(f"{source}: agent {number} is incomplete or malformed ({err})") from err

    for line in text.splitlines():
        header = _AGENT_RE.match(line.strip())
        if header:
            flush()
            number, current = int(header.group(1)), {}
            continue
        if current is None:
            continue
        m = _FIELD_RE.match(line)
        # Only the agent's own two-space-indented fields: the first one seen wins, so the ISA
        # block's deeper "Name:" does not overwrite the agent name.
        if m and m.group(1) not in current:
            current[m.group(1)] = m.group(2)
    flush()
    if not agents:
        raise ToolOutputError(f"{source}: no 'Agent N' sections found; it starts {text.strip()[:40]!r}")
    return agents
