"""Times people type: ``2h`` (ago), ``now``, ``today``, ``yesterday``, RFC 3339, unix seconds.

One grammar for ``fleetmon query --since/--until/--at`` and the HTTP API's ``since``/``until``/
``time``/``start``/``end`` parameters (collector/api.py), so what works in one works in the other:

| text | means |
|---|---|
| ``now`` | now |
| ``2h``, ``15m``, ``1h30m``, ``7d`` (also ``2h ago``, ``now-2h``) | that long before now |
| ``today``, ``yesterday`` | the start of that day (midnight, local time; the command line only) |
| ``2026-11-30T08:00:00Z``, ``2026-11-30T09:00:00+01:00`` | RFC 3339 |
| ``2026-11-30`` | the start of that day (local time; the command line only) |
| ``2026-11-30 08:00`` / ``2026-11-30T08:00:00`` (no zone) | local time (the command line only) |
| ``1764489600`` | unix seconds |

"Local" is the local time zone of the process (``TZ``): the user's, for the command line. The
HTTP API takes none of the local forms (``local=False``): the collector's zone is not the caller's.
"""

from __future__ import annotations

import math
import re
import time
from datetime import date, datetime, timedelta

from fleetmon_common.settings import parse_duration

#: Before this (2001-09-09), a bare number is far more likely a duration without its unit.
_UNIX_FLOOR = 1e9
_AGO = re.compile(r"(?:now\s*-\s*)?(?P<d>[0-9][0-9a-z.]*)(?:\s+ago)?")
EXAMPLES = "2h, 30m, now, today, yesterday, 2026-11-30T08:00:00Z or unix seconds"
API_EXAMPLES = "unix seconds, RFC 3339 like 2026-11-30T08:00:00Z, now, or a duration ago like 15m"


class TimeSpecError(ValueError):
    """Not a time: the message quotes the text and lists what is accepted."""


def _midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day).timestamp()  # naive: local time


def parse_time(text: str, now: float, *, local: bool = True, bare_floor: float = _UNIX_FLOOR) -> float:
    """Unix seconds for ``text`` (see the module's table); TimeSpecError says what is accepted.

    ``local``: take the forms in local time (today, yesterday, a date, a time without zone).
    ``bare_floor``: a bare number below it is refused (a duration that lost its unit, ``3600``);
    0 takes any non-negative number as unix seconds, as Prometheus's API does."""
    raw = text
    text = text.strip().lower()
    if not text:
        raise TimeSpecError(f"empty time; give e.g. {EXAMPLES if local else API_EXAMPLES}")
    if text == "now":
        return now
    local_form = text in ("today", "yesterday") or bool(re.fullmatch(r"\d{4}-\d\d-\d\d", text))
    if local_form and not local:
        raise TimeSpecError(f"{raw!r} is in local time, which differs between here and the caller; "
                            f"give {API_EXAMPLES}")
    if text in ("today", "yesterday"):
        day = datetime.fromtimestamp(now).date() - timedelta(days=1 if text == "yesterday" else 0)
        return _midnight(day)
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise TimeSpecError(f"{raw!r} is not a time; give e.g. {EXAMPLES if local else API_EXAMPLES}")
        if value < bare_floor:
            raise TimeSpecError(f"{raw!r} would be a unix time in {time.gmtime(value).tm_year}; "
                                f"for that long ago give a unit ({raw.strip()}s, or e.g. 1h)")
        return value
    if re.fullmatch(r"\d{4}-\d\d-\d\d", text):
        try:
            return _midnight(date.fromisoformat(text))
        except ValueError:
            raise TimeSpecError(f"{raw!r} is not a date (YYYY-MM-DD)") from None
    if re.match(r"\d{4}-\d\d-\d\d[t ]", text):
        return _datetime(raw.strip(), local)
    m = _AGO.fullmatch(text)
    if m is not None:
        try:
            ago = parse_duration(m.group("d"))
        except ValueError:
            pass
        else:
            if math.isfinite(ago):
                return now - ago
    raise TimeSpecError(f"{raw!r} is not a time; give e.g. {EXAMPLES if local else API_EXAMPLES}")


def _datetime(text: str, local: bool) -> float:
    iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        stamp = datetime.fromisoformat(iso)
    except ValueError:
        raise TimeSpecError(f"{text!r} is not an RFC 3339 time (e.g. 2026-11-30T08:00:00Z)") from None
    if stamp.tzinfo is None and not local:
        raise TimeSpecError(f"{text!r} has no time zone; end it with Z or +hh:mm")
    return stamp.timestamp()  # naive: local time


def parse_step(text: str) -> float:
    """A positive duration (``15s``, ``1m``, or bare seconds); TimeSpecError otherwise."""
    try:
        value = parse_duration(text)
    except ValueError as err:
        raise TimeSpecError(str(err)) from None
    if not math.isfinite(value) or value <= 0:
        raise TimeSpecError(f"{text!r} must be a positive duration (e.g. 15s)")
    return value


def format_duration(seconds: float) -> str:
    """``1h30m``, ``15s``, ``500ms``: the shortest exact form, for messages and headers."""
    if seconds <= 0 or not math.isfinite(seconds):
        return f"{seconds:g}s"
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms" if ms < 60_000 else f"{seconds:g}s"
    s = ms // 1000
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out
