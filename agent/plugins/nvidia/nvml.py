"""The one choke point for NVML (STYLE 6): every call goes through :class:`Nvml`.

It maps ``pynvml.NVMLError`` subclasses to the agent's exceptions, remembers the functions this
driver lacks (logged once each), probes versioned symbols (``_v3``/``_v2``/plain) where drivers
differ, and counts calls (the benchmark's figure). The binding module is injected (config
``library``; production uses ``pynvml`` from nvidia-ml-py, the tests a fake built from recorded
nvidia-smi answers), so the mapping code below is the code the tests run.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import struct
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from agent.errors import DeviceLost, NotSupported, PluginError, PluginUnavailable

log = logging.getLogger("fleetmon.agent.nvidia")

# NVML return codes (nvml.h ``nvmlReturn_t``); numbers, so the mapping does not depend on the
# binding spelling its class names the same way.
_NOT_SUPPORTED = 3
_NO_PERMISSION = 4
_NOT_FOUND = 6
_DRIVER_NOT_LOADED = 9
_TIMEOUT = 10
_LIBRARY_NOT_FOUND = 12
_FUNCTION_NOT_FOUND = 13
_GPU_IS_LOST = 15
_RESET_REQUIRED = 16
_LIB_RM_VERSION_MISMATCH = 18
_NO_DATA = 21
_ARGUMENT_VERSION_MISMATCH = 25
_NOT_READY = 27
_INVALID_ARGUMENT = 2
_UNKNOWN = 999

#: Codes meaning "this device cannot answer this question": the metric is omitted.
_OMIT = {_NOT_SUPPORTED, _NO_PERMISSION, _NOT_FOUND, _NO_DATA, _NOT_READY, _INVALID_ARGUMENT}
#: Codes meaning the GPU itself is gone or wedged (nvml.h: GPU_IS_LOST "the GPU has fallen off the
#: bus or has otherwise become inaccessible"; UNKNOWN and TIMEOUT are what a wedged GPU returns).
_LOST = {_GPU_IS_LOST, _RESET_REQUIRED, _UNKNOWN, _TIMEOUT}
#: Codes meaning there is no usable NVML on this node at all.
_NO_NVML = {_LIBRARY_NOT_FOUND, _DRIVER_NOT_LOADED, _LIB_RM_VERSION_MISMATCH}


class FunctionMissing(NotSupported):
    """The driver's libnvidia-ml (or the binding) lacks this function; remembered, asked never again."""


def load_module(name: str) -> ModuleType:
    """Import the NVML binding; an absent package disables the plugin with one clear line."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise PluginUnavailable(
            f"cannot import the NVML binding {name!r} ({err}); install it with pip install 'fleetmon[nvidia]'"
        ) from err


class Nvml:
    """Thread-safe wrapper; one per plugin instance."""

    def __init__(self, module: ModuleType) -> None:
        self.mod: Any = module
        self._error_cls: type[BaseException] = module.NVMLError
        self._lock = threading.Lock()
        self._calls = 0
        self._missing: set[str] = set()
        self._logged: set[tuple[str, int]] = set()
        self.initialized = False

    # -- life cycle ------------------------------------------------------------------------

    def init(self) -> None:
        try:
            self.mod.nvmlInit()
        except self._error_cls as err:
            code = _code(err)
            hint = {
                _LIBRARY_NOT_FOUND: "libnvidia-ml.so.1 not found: no NVIDIA driver on this node",
                _DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded",
                _LIB_RM_VERSION_MISMATCH: "libnvidia-ml and the kernel driver versions differ (reboot or reload)",
                _NO_PERMISSION: "no permission to open /dev/nvidia*",
            }.get(code, "")
            raise PluginUnavailable(f"NVML init failed: {err}" + (f" ({hint})" if hint else "")) from err
        except OSError as err:  # ctypes could not load a library the binding found
            raise PluginUnavailable(f"NVML init failed: {err}") from err
        self.initialized = True

    def shutdown(self) -> None:
        if not self.initialized:
            return
        self.initialized = False
        try:
            self.mod.nvmlShutdown()
        except self._error_cls as err:
            log.debug("nvmlShutdown: %s", err)

    # -- calls -----------------------------------------------------------------------------

    @property
    def calls(self) -> int:
        return self._calls

    def has(self, fname: str) -> bool:
        """False once a function is known to be missing from this driver."""
        return fname not in self._missing and hasattr(self.mod, fname)

    def call(self, fname: str, *args: Any, **kwargs: Any) -> Any:
        """Call one NVML function; errors come back as the agent's exceptions."""
        return self._call(fname, fname, args, kwargs)

    def _call(self, symbol: str, fname: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # ``symbol`` is what is remembered as missing: usually the binding's function name, but
        # one binding function may reach two driver symbols (nvmlDeviceGetMemoryInfo with
        # ``version=`` calls nvmlDeviceGetMemoryInfo_v2), and only the absent one may be forgotten.
        if symbol in self._missing:
            raise FunctionMissing(f"{symbol} is not available in this driver")
        fn = getattr(self.mod, fname, None)
        if fn is None:
            self._remember_missing(symbol, "the installed nvidia-ml-py lacks it")
            raise FunctionMissing(f"{fname} is not available in the NVML binding")
        with self._lock:
            self._calls += 1
        try:
            return fn(*args, **kwargs)
        except self._error_cls as err:
            raise self._translate(symbol, err) from err

    def first(self, candidates: Sequence[tuple[Any, ...]]) -> Any:
        """Try versioned variants newest first (``_v3``, ``_v2``, plain); a missing one is skipped for good.

        Each candidate is ``(function, args, kwargs)`` or ``(function, args, kwargs, driver symbol)``.
        """
        last: NotSupported | None = None
        for candidate in candidates:
            fname, args, kwargs = candidate[:3]
            symbol = candidate[3] if len(candidate) > 3 else fname
            if symbol in self._missing:
                continue
            try:
                return self._call(symbol, fname, args, kwargs)
            except FunctionMissing as err:
                last = err
        raise last or FunctionMissing(f"none of {', '.join(c[0] for c in candidates)} is available")

    def field_values(self, handle: Any, ids: Sequence[int | tuple[int, int]]) -> dict[Any, float]:
        """One ``nvmlDeviceGetFieldValues`` for many counters; unsupported entries are left out.

        Each entry carries its own return code (nvml.h ``nvmlFieldValue_t.nvmlReturn``), so one
        field the GPU lacks does not cost the others.
        """
        values = self.call("nvmlDeviceGetFieldValues", handle, list(ids))
        out: dict[Any, float] = {}
        for key, (ret, value) in zip(ids, _decode_fields(values), strict=True):
            if ret == 0:
                out[key] = value
            elif ret == _GPU_IS_LOST:
                raise DeviceLost(f"nvmlDeviceGetFieldValues: field {key}: GPU is lost")
        return out

    def wait_event(self, event_set: Any, timeout_ms: int) -> Any | None:
        """``nvmlEventSetWait`` (v2 where present); None when nothing arrived within the timeout."""
        for fname in ("nvmlEventSetWait_v2", "nvmlEventSetWait"):
            if fname in self._missing or not hasattr(self.mod, fname):
                continue
            fn = getattr(self.mod, fname)
            try:
                return fn(event_set, timeout_ms)
            except self._error_cls as err:
                if _code(err) == _TIMEOUT:  # the normal "no event" answer, not a wedged GPU
                    return None
                if _code(err) == _FUNCTION_NOT_FOUND:
                    self._remember_missing(fname, "not in this driver")
                    continue
                raise self._translate(fname, err) from err
        raise FunctionMissing("nvmlEventSetWait is not available")

    # -- error mapping ---------------------------------------------------------------------

    def _remember_missing(self, fname: str, why: str) -> None:
        with self._lock:
            if fname in self._missing:
                return
            self._missing.add(fname)
        log.info("NVML function %s unavailable (%s); its metrics are omitted from now on", fname, why)

    def _translate(self, fname: str, err: BaseException) -> PluginError:
        code = _code(err)
        if code in (_FUNCTION_NOT_FOUND, _ARGUMENT_VERSION_MISMATCH):
            self._remember_missing(fname, str(err))
            return FunctionMissing(f"{fname}: {err}")
        if code in _OMIT:
            if code not in (_NOT_SUPPORTED, _NOT_FOUND):
                self._log_once(fname, code, err)
            return NotSupported(f"{fname}: {err}")
        if code in _LOST:
            return DeviceLost(f"{fname}: {err}")
        if code in _NO_NVML:
            return PluginError(f"{fname}: NVML became unusable: {err}")
        self._log_once(fname, code, err)
        return NotSupported(f"{fname}: {err} (NVML error {code})")

    def _log_once(self, fname: str, code: int, err: BaseException) -> None:
        with self._lock:
            if (fname, code) in self._logged:
                return
            self._logged.add((fname, code))
        log.info("NVML %s answered %s (code %d); the metric is omitted", fname, err, code)


def _code(err: BaseException) -> int:
    value = getattr(err, "value", None)
    return int(value) if isinstance(value, int) else _UNKNOWN


# nvml.h ``nvmlValueType_t``: which member of the value union holds the answer.
_VALUE_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
_VALUE_FORMAT = {0: "<d", 1: "<I", 2: "<Q", 3: "<Q", 4: "<q", 5: "<i", 6: "<H"}
# nvml.h ``nvmlFieldValue_t`` on 64-bit Linux: fieldId u32, scopeId u32, timestamp s64,
# latencyUsec s64, valueType u32, nvmlReturn u32, value (8-byte union): 40 bytes.
_FIELD_SIZE, _OFF_TYPE, _OFF_RETURN, _OFF_VALUE = 40, 24, 28, 32


def _decode_fields(values: Any) -> list[tuple[int, float]]:
    """(return code, value) per entry.

    pynvml's structures decode every attribute access in Python (``_PrintableStructure``), about
    1 µs each; reading the array's bytes once is ~10x cheaper per entry. The layout is checked
    against the binding's own ctypes description and the slow path is kept for anything else.
    """
    try:
        cls = type(values[0])
        fast = (ctypes.sizeof(cls) == _FIELD_SIZE and cls.valueType.offset == _OFF_TYPE
                and cls.nvmlReturn.offset == _OFF_RETURN and cls.value.offset == _OFF_VALUE)
        raw = bytes(memoryview(values).cast("B")) if fast else b""
    except (AttributeError, TypeError, IndexError, ValueError):
        fast = False
    if not fast:
        out = []
        for fv in values:
            member = _VALUE_MEMBER.get(int(fv.valueType), "ullVal")
            out.append((int(fv.nvmlReturn), float(getattr(fv.value, member))))
        return out
    decoded = []
    for vtype, ret, base in (
        (*struct.unpack_from("<II", raw, i + _OFF_TYPE), i) for i in range(0, len(raw), _FIELD_SIZE)
    ):
        value = struct.unpack_from(_VALUE_FORMAT.get(vtype, "<Q"), raw, base + _OFF_VALUE)[0] if ret == 0 else 0
        decoded.append((ret, float(value)))
    return decoded


def text(value: Any) -> str:
    """NVML strings arrive as ``bytes`` from some binding versions and ``str`` from others."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip("\x00").strip()
    return str(value).strip()
