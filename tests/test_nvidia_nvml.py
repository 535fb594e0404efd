"""The NVML choke point: error mapping, remembered missing functions, versioned symbols, field decoding."""

from __future__ import annotations

import types
from typing import Any

import pynvml
import pytest

from agent.errors import DeviceLost, NotSupported, PluginError, PluginUnavailable
from agent.model import Metric
from agent.plugins.kmsg import plugin as kmsg_plugin
from agent.plugins.nvidia import metrics
from agent.plugins.nvidia import nvml as nvml_mod
from agent.plugins.nvidia.nvml import FunctionMissing, Nvml, Variant
from tests.services import REPO


def binding(**functions: Any) -> types.ModuleType:
    """A module with pynvml's error classes and the given functions."""
    mod = types.ModuleType("binding")
    mod.NVMLError = pynvml.NVMLError  # type: ignore[attr-defined]
    for name, fn in functions.items():
        setattr(mod, name, fn)
    return mod


def failing(code: int) -> Any:
    def fn(*_args: Any, **_kwargs: Any) -> Any:
        raise pynvml.NVMLError(code)

    return fn


@pytest.mark.parametrize(("code", "expected"), [
    (pynvml.NVML_ERROR_NOT_SUPPORTED, NotSupported),
    (pynvml.NVML_ERROR_NO_PERMISSION, NotSupported),
    (pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, FunctionMissing),
    (pynvml.NVML_ERROR_GPU_IS_LOST, DeviceLost),
    (pynvml.NVML_ERROR_UNKNOWN, DeviceLost),
    (pynvml.NVML_ERROR_TIMEOUT, DeviceLost),
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, PluginError),
])
def test_error_mapping(code: int, expected: type[Exception]) -> None:
    n = Nvml(binding(nvmlDeviceGetTemperature=failing(code)))
    with pytest.raises(expected) as info:
        n.call("nvmlDeviceGetTemperature", object(), 0)
    assert isinstance(info.value.__cause__, pynvml.NVMLError)
    assert type(info.value) is expected or issubclass(type(info.value), expected)


def test_missing_function_is_remembered_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def missing(*_a: Any) -> None:
        calls.append(1)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    n = Nvml(binding(nvmlDeviceGetFoo=missing))
    caplog.set_level("INFO", logger="fleetmon.agent.nvidia")
    for _ in range(3):
        with pytest.raises(FunctionMissing):
            n.call("nvmlDeviceGetFoo", object())
    assert len(calls) == 1 and n.calls == 1
    assert len([r for r in caplog.records if "nvmlDeviceGetFoo" in r.getMessage()]) == 1
    assert not n.has("nvmlDeviceGetFoo")
    with pytest.raises(FunctionMissing):
        n.call("nvmlNotInThisBinding")


def test_versioned_symbols_newest_first() -> None:
    n = Nvml(binding(
        nvmlDeviceGetPciInfo_v3=failing(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND),
        nvmlDeviceGetPciInfo_v2=failing(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH),
        nvmlDeviceGetPciInfo=lambda h: "plain",
    ))
    candidates = [Variant(f"nvmlDeviceGetPciInfo{v}", (None,)) for v in ("_v3", "_v2", "")]
    assert n.first(candidates) == "plain"
    assert n.first(candidates) == "plain"
    assert n.calls == 4  # v3 and v2 were tried once, then skipped


def test_event_wait_timeout_is_no_event() -> None:
    n = Nvml(binding(nvmlEventSetWait_v2=failing(pynvml.NVML_ERROR_TIMEOUT)))
    assert n.wait_event(object(), 10) is None
    lost = Nvml(binding(nvmlEventSetWait_v2=failing(pynvml.NVML_ERROR_GPU_IS_LOST)))
    with pytest.raises(DeviceLost):
        lost.wait_event(object(), 10)


def test_init_failure_is_unavailable_with_a_reason() -> None:
    n = Nvml(binding(nvmlInit=failing(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)))
    with pytest.raises(PluginUnavailable, match="kernel driver is not loaded"):
        n.init()


def test_field_decoding_fast_path_equals_the_bindings_own_reading() -> None:
    values = (pynvml.c_nvmlFieldValue_t * 8)()
    entries = [
        (pynvml.NVML_VALUE_TYPE_DOUBLE, "dVal", 12.5),
        (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, "uiVal", 4_000_000_000),
        (pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, "ullVal", 2**60 + 3),
        (pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG, "sllVal", -7),
        (pynvml.NVML_VALUE_TYPE_SIGNED_INT, "siVal", -70_000),
        (pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT, "usVal", 65_000),
        (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, "uiVal", 5),
    ]
    for i, (vtype, member, v) in enumerate(entries):
        values[i].value.ullVal = 0xDEADBEEF_DEADBEEF  # what a narrower member leaves in the union's upper bytes
        values[i].fieldId, values[i].valueType, values[i].nvmlReturn = 83 + i, vtype, 0
        setattr(values[i].value, member, v)
    values[7].fieldId, values[7].nvmlReturn = 99, pynvml.NVML_ERROR_NOT_SUPPORTED
    decoded = nvml_mod._decode_fields(values)
    assert decoded == [12.5, 4_000_000_000.0, float(2**60 + 3), -7.0, -70_000.0, 65_000.0, 5.0, None]
    slow = [float(getattr(fv.value, nvml_mod._VALUE_MEMBER[int(fv.valueType)])) for fv in values[:7]]
    assert decoded[:7] == slow
    values[3].nvmlReturn = pynvml.NVML_ERROR_GPU_IS_LOST
    with pytest.raises(DeviceLost):
        nvml_mod._decode_fields(values)


def test_every_metric_is_in_a_readme() -> None:
    for module, readme in ((metrics, "agent/plugins/nvidia/README.md"), (kmsg_plugin, "agent/plugins/kmsg/README.md")):
        text = (REPO / readme).read_text()
        declared = [v for v in vars(module).values() if isinstance(v, Metric)]
        assert declared
        missing = [m.name for m in declared if f"`{m.name}`" not in text]
        assert missing == [], f"{readme} lacks {missing}"


def test_one_binding_function_two_driver_symbols() -> None:
    """nvmlDeviceGetMemoryInfo(version=v2) needs nvmlDeviceGetMemoryInfo_v2 (driver 510+); an older
    driver lacks only that symbol, so the v1 call must still be made."""
    seen: list[object] = []

    def memory(handle: object, version: int | None = None) -> str:
        seen.append(version)
        if version:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return "v1"

    n = Nvml(binding(nvmlDeviceGetMemoryInfo=memory))
    candidates = [Variant("nvmlDeviceGetMemoryInfo", (None,), {"version": 2}, "nvmlDeviceGetMemoryInfo_v2"),
                  Variant("nvmlDeviceGetMemoryInfo", (None,))]
    assert n.first(candidates) == "v1"
    assert n.first(candidates) == "v1"
    assert seen == [2, None, None]
