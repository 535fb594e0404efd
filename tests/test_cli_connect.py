"""What the commands accept before they read anything: times people type
(fleetmon_common/timespec.py) and which collector they read (fleetmon/client.py, the runtime
folder of fleetmon_common/runtime.py)."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.query import prom_result
from fleetmon import client
from fleetmon_common import runtime
from fleetmon_common.timespec import TimeSpecError, format_duration, parse_time
from tests.services import free_port

NOW = 1_796_025_600.0  # 2026-11-30T08:00:00Z, a Monday


@pytest.fixture
def tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC+1 (no DST in 2026-11) for the test, restored after."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(("text", "want"), [
    ("now", NOW), ("2h", NOW - 7200), ("1h30m", NOW - 5400), ("2h ago", NOW - 7200), ("now-15m", NOW - 900),
    ("500ms", NOW - 0.5), ("7d", NOW - 7 * 86400),
    ("2026-11-30T08:00:00Z", NOW), ("2026-11-30T09:30:00+01:00", NOW + 1800), ("2026-11-30T08:00:00.250Z", NOW + 0.25),
    ("1796025600", NOW), ("1796025600.5", NOW + 0.5),
    # local time (Paris, UTC+1): midnight of the day (23:00Z the day before), and a time without a zone
    ("today", NOW - 9 * 3600), ("yesterday", NOW - 33 * 3600), ("2026-11-29", NOW - 33 * 3600),
    ("2026-11-30 10:00", NOW + 3600), ("2026-11-30T10:00:00", NOW + 3600), ("  Yesterday ", NOW - 33 * 3600),
])
def test_times_people_type(tz: None, text: str, want: float) -> None:
    assert parse_time(text, NOW) == pytest.approx(want)


@pytest.mark.parametrize(("text", "message"), [
    ("abc", "'abc' is not a time; give e.g. 2h, 30m, now, today, yesterday, 2026-11-30T08:00:00Z or unix seconds"),
    ("", "empty time"),
    ("3600", "'3600' would be a unix time in 1970; for that long ago give a unit (3600s, or e.g. 1h)"),
    ("-5", "'-5' is not a time"),
    ("nan", "'nan' is not a time"),
    ("2026-11-31", "'2026-11-31' is not a date (YYYY-MM-DD)"),
    ("2026-11-30T25:00:00Z", "'2026-11-30T25:00:00Z' is not an RFC 3339 time"),
    ("2h later", "'2h later' is not a time"),
])
def test_anything_else_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(TimeSpecError) as err:
        parse_time(text, NOW)
    assert str(err.value).startswith(message)


def test_the_api_takes_no_local_time() -> None:
    for text in ("yesterday", "today", "2026-11-30", "2026-11-30T08:00:00"):
        with pytest.raises(TimeSpecError, match=r"local|no time zone"):
            parse_time(text, NOW, local=False, bare_floor=0)
    assert parse_time("5", NOW, local=False, bare_floor=0) == 5.0  # Prometheus's unix seconds, any
    assert parse_time("15m", NOW, local=False) == NOW - 900


def test_durations_print_short() -> None:
    assert [format_duration(s) for s in (1, 15, 60, 90, 3600, 5400, 86400 + 60, 0.5)] == \
        ["1s", "15s", "1m", "1m30s", "1h", "1h30m", "1d1m", "500ms"]


# --- which collector ------------------------------------------------------------------------------
def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"url": None, "data_dir": None, "token_file": None, "cacert": None, "cert": None,
                               "key": None}
    return argparse.Namespace(**{**base, **kw})


def _register(folder: Path, pid: int, http: str, data_dir: str) -> Path:
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"collector-{pid}-{len(list(folder.iterdir()))}.json"
    path.write_text(json.dumps({"pid": pid, "http": http, "data_dir": data_dir}))
    return path


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    run = tmp_path / "run"
    monkeypatch.setenv("FLEETMON_RUNTIME_DIR", str(run))
    monkeypatch.delenv("FLEETMON_URL", raising=False)
    monkeypatch.setattr(client, "DEFAULT_URL", f"http://127.0.0.1:{free_port()}")  # nothing answers there
    return run


def test_a_collector_registers_while_it_runs(folder: Path, tmp_path: Path) -> None:
    path = runtime.register("http://127.0.0.1:7781", tmp_path / "data")
    assert path is not None and (folder.stat().st_mode & 0o777) == 0o700
    [found] = runtime.running()
    assert (found.pid, found.http, found.data_dir) == (os.getpid(), "http://127.0.0.1:7781", str(tmp_path / "data"))
    runtime.unregister(path)
    assert runtime.running() == [] and not path.exists()


def test_a_killed_collectors_file_is_dropped(folder: Path) -> None:
    dead = _register(folder, 2**22 + 12345, "http://127.0.0.1:1", "/x")  # beyond pid_max: no such process
    assert runtime.running() == [] and not dead.exists()


def test_a_folder_others_can_write_is_not_used(folder: Path, tmp_path: Path) -> None:
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    assert runtime.register("http://127.0.0.1:7781", tmp_path) is None


def test_dial_urls() -> None:
    assert runtime.dial_url("0.0.0.0:7780", 7780, False) == "http://127.0.0.1:7780"
    assert runtime.dial_url("[::]:0", 4321, True) == "https://[::1]:4321"
    assert runtime.dial_url("10.0.0.5:7780", 7780, True) == "https://10.0.0.5:7780"


def test_which_collector_first_match_wins(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _register(folder, os.getpid(), "http://127.0.0.1:7790", "/data/one")
    assert client.resolve(_args(url="http://c:7780/")) == client.Target("http://c:7780", None, "--url")
    assert client.resolve(_args(data_dir=Path("/d"))).data_dir == Path("/d")
    with pytest.raises(client.ApiError, match="give --url or --data-dir, not both"):
        client.resolve(_args(url="http://c:7780", data_dir=Path("/d")))
    monkeypatch.setenv("FLEETMON_URL", "http://env:7780")
    assert client.resolve(_args()).url == "http://env:7780"
    monkeypatch.delenv("FLEETMON_URL")
    got = client.resolve(_args())
    assert got.url == "http://127.0.0.1:7790" and got.how.startswith(f"the running collector (pid {os.getpid()}")


def test_a_collector_without_http_is_read_from_its_data_dir(folder: Path) -> None:
    _register(folder, os.getpid(), "", "/data/one")
    assert client.resolve(_args()) == client.Target(None, Path("/data/one"), client.resolve(_args()).how)
    # status and top take no data dir: they fall through to the default URL
    status_args = argparse.Namespace(url=None)
    assert client.resolve(status_args, probe=False).url == client.DEFAULT_URL


def test_several_running_are_listed(folder: Path) -> None:
    _register(folder, os.getpid(), "http://127.0.0.1:7790", "/data/one")
    _register(folder, os.getppid(), "http://127.0.0.1:7791", "/data/two")
    with pytest.raises(client.ApiError) as err:
        client.resolve(_args())
    lines = str(err.value).splitlines()
    assert lines[0] == "2 collectors are running; choose one with --url or --data-dir:"
    assert sorted(lines[1:]) == sorted([f"  pid {os.getpid()}: http://127.0.0.1:7790, data in /data/one",
                                        f"  pid {os.getppid()}: http://127.0.0.1:7791, data in /data/two"])


def test_none_found_says_what_was_tried(folder: Path) -> None:
    with pytest.raises(client.ApiError) as err:
        client.resolve(_args())
    assert str(err.value) == (f"no collector found: $FLEETMON_URL is not set, none is registered as running in "
                              f"{folder}, and nothing answers at {client.DEFAULT_URL}; give --url URL or "
                              "--data-dir DIR")


def test_the_token_comes_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETMON_TOKEN", raising=False)
    assert client.read_token(_args()) == (None, "")
    monkeypatch.setenv("FLEETMON_TOKEN", " s3cret \n")
    assert client.read_token(_args()) == ("s3cret", "$FLEETMON_TOKEN")
    (tmp_path / "t").write_text("from-file\n")
    assert client.read_token(_args(token_file=tmp_path / "t")) == ("from-file", f"--token-file {tmp_path / 't'}")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(client.ApiError, match="the file is empty"):
        client.read_token(_args(token_file=tmp_path / "empty"))
    with pytest.raises(client.ApiError, match="cannot read it: No such file or directory"):
        client.read_token(_args(token_file=tmp_path / "missing"))


# --- reading a query API's answer as it arrives ----------------------------------------------------
class Trickle:
    """An answer arriving a few bytes at a time (as a long one does over a socket)."""

    def __init__(self, body: bytes, size: int) -> None:
        self.body = body
        self.size = size

    def read(self, n: int = -1, /) -> bytes:
        out, self.body = self.body[:self.size], self.body[self.size:]
        return out


@pytest.mark.parametrize("size", [1, 7, 1 << 16])
def test_a_matrix_is_read_series_by_series(size: int) -> None:
    series = [{"metric": {"__name__": "gpu_temperature_celsius", "node": f"nœud-{i}", "note": "a]b,c{\"d\"}"},
               "values": [[1796025600 + k, str(60 + k)] for k in range(3)]} for i in range(4)]
    body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": series}}).encode()
    kind, items = prom_result(Trickle(body, size), "http://c")
    assert kind == "matrix" and list(items) == series


def test_other_answer_shapes_and_errors() -> None:
    scalar = b'{"status":"success","data":{"resultType":"scalar","result":[1796025600,"4"]}}'
    kind, items = prom_result(Trickle(scalar, 5), "http://c")
    assert (kind, list(items)) == ("scalar", [[1796025600, "4"]])
    late = b'{"status":"success","data":{"result":[{"metric":{},"value":[1,"2"]}],"resultType":"vector"}}'
    kind, items = prom_result(Trickle(late, 3), "http://c")
    assert (kind, list(items)) == ("vector", [{"metric": {}, "value": [1, "2"]}])
    with pytest.raises(client.ApiError, match="the query failed: bad"):
        prom_result(Trickle(b'{"status":"error","errorType":"bad_data","error":"bad"}', 4), "http://c")
    kind, items = prom_result(Trickle(b'{"status":"success","data":{"resultType":"matrix","result":[{"a":', 4),
                                      "http://c")
    with pytest.raises(client.ApiError, match="the answer ended early"):
        list(items)
