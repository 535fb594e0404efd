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
import sys
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType, ModuleType
from typing import Any, NamedTuple

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


class Variant(NamedTuple):
    """One way to ask NVML a question: a binding function, its arguments, and the driver symbol it needs.

    ``symbol`` is what is remembered as missing when the driver lacks it; empty means ``fname``.
    One binding function may reach two driver symbols (``nvmlDeviceGetMemoryInfo`` with
    ``version=`` calls ``nvmlDeviceGetMemoryInfo_v2``), and only the absent one may be forgotten.
    """

    fname: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = MappingProxyType({})
    symbol: str = ""


#: A field request: a device-wide field id, or (field id, scope id) for a scoped one (per NVLink).
FieldKey = int | tuple[int, int]
_UNRESOLVED = object()


class FieldRequest:
    """The field ids of one device's ``nvmlDeviceGetFieldValues``, with its ctypes array filled once."""

    def __init__(self, keys: list[FieldKey], struct: Any) -> None:
        self.keys = keys
        self.array: Any = None
        if struct is not None and keys:
            self.array = (struct * len(keys))()
            for entry, key in zip(self.array, keys, strict=True):
                entry.fieldId, entry.scopeId = key if isinstance(key, tuple) else (key, 0)


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
        self._raw_fields: Any = _UNRESOLVED
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

    def first(self, variants: Sequence[Variant]) -> Any:
        """Try versioned variants newest first (``_v3``, ``_v2``, plain); a missing one is skipped for good."""
        last: NotSupported | None = None
        for v in variants:
            symbol = v.symbol or v.fname
            if symbol in self._missing:
                continue
            try:
                return self._call(symbol, v.fname, v.args, dict(v.kwargs))
            except FunctionMissing as err:
                last = err
        raise last or FunctionMissing(f"none of {', '.join(v.fname for v in variants)} is available")

    def field_request(self, keys: Sequence[FieldKey]) -> FieldRequest:
        """Prepare one device's field-value request once; :meth:`read_fields` reuses it every cycle."""
        return FieldRequest(list(keys), getattr(self.mod, "c_nvmlFieldValue_t", None))

    def read_fields(self, handle: Any, request: FieldRequest) -> list[float | None]:
        """One ``nvmlDeviceGetFieldValues`` for many counters: a value per requested key, None
        for an entry the device does not answer.

        Each entry carries its own return code (nvml.h ``nvmlFieldValue_t.nvmlReturn``), so one
        field the GPU lacks does not cost the others. The binding's wrapper fills a fresh ctypes
        array in Python on every call (about 1.5 µs per field); the request's array is filled
        once and handed to the C function as it is, the driver overwriting the answers.
        """
        raw = self._raw_field_values() if request.array is not None else None
        if raw is None:
            values = self.call("nvmlDeviceGetFieldValues", handle, request.keys)
        else:
            with self._lock:
                self._calls += 1
            ret = raw(handle, ctypes.c_int32(len(request.keys)), ctypes.byref(request.array))
            if ret != 0:
                raise self._translate("nvmlDeviceGetFieldValues", self._error_cls(ret))
            values = request.array
        return _decode_fields(values)

    def _raw_field_values(self) -> Any:
        """The C ``nvmlDeviceGetFieldValues`` through the binding's symbol lookup, or None."""
        if self._raw_fields is _UNRESOLVED:
            lookup = getattr(self.mod, "_nvmlGetFunctionPointer", None)
            try:
                self._raw_fields = lookup("nvmlDeviceGetFieldValues") if lookup is not None else None
            except self._error_cls as err:  # FUNCTION_NOT_FOUND: the binding's own wrapper will say so
                log.debug("nvmlDeviceGetFieldValues symbol: %s", err)
                self._raw_fields = None
        return self._raw_fields

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
# nvml.h ``nvmlFieldValue_t`` on 64-bit Linux: fieldId u32, scopeId u32, timestamp s64,
# latencyUsec s64, valueType u32, nvmlReturn u32, value (8-byte union): 40 bytes.
_FIELD_SIZE, _OFF_TYPE, _OFF_RETURN, _OFF_VALUE = 40, 24, 28, 32


_UNSIGNED_MASK = {1: 0xFFFFFFFF, 2: (1 << 64) - 1, 3: (1 << 64) - 1, 6: 0xFFFF}  # ui, ul, ull, us
_REINTERPRET = {0: struct.Struct("<d"), 4: struct.Struct("<q"), 5: struct.Struct("<i")}  # d, sll, si
_UINT, _ULL = 1, 3


def _decode_fields(values: Any) -> list[float | None]:
    """The value of each entry, None where its return code is not success; DeviceLost when an
    entry says the GPU is lost.

    pynvml's structures decode every attribute access in Python (``_PrintableStructure``), about
    1 µs each; the array's bytes are read column by column instead (return codes, value types,
    the 8-byte value unions), ~30x cheaper per entry. The layout is checked against the binding's
    own ctypes description and the slow path is kept for anything else.
    """
    try:
        cls = type(values[0])
        fast = (ctypes.sizeof(cls) == _FIELD_SIZE and cls.valueType.offset == _OFF_TYPE
                and cls.nvmlReturn.offset == _OFF_RETURN and cls.value.offset == _OFF_VALUE)
        raw = memoryview(values).cast("B") if fast else None
    except (AttributeError, TypeError, IndexError, ValueError):
        raw = None
    if raw is None:
        pairs = [(int(fv.nvmlReturn), fv) for fv in values]
        if any(ret == _GPU_IS_LOST for ret, _ in pairs):
            raise DeviceLost("nvmlDeviceGetFieldValues: GPU is lost")
        return [None if ret else float(getattr(fv.value, _VALUE_MEMBER.get(int(fv.valueType), "ullVal")))
                for ret, fv in pairs]
    words = raw.cast("I")  # ten u32 per entry: the type is the 7th, the return code the 8th
    rets = words[_OFF_RETURN // 4 :: _FIELD_SIZE // 4].tolist()
    if _GPU_IS_LOST in rets:
        raise DeviceLost("nvmlDeviceGetFieldValues: GPU is lost")
    types = words[_OFF_TYPE // 4 :: _FIELD_SIZE // 4].tolist()
    unions = raw.cast("Q")[_OFF_VALUE // 8 :: _FIELD_SIZE // 8].tolist()  # little-endian, as the layout
    return [None if ret else float(word) if vtype == _ULL else float(word & 0xFFFFFFFF) if vtype == _UINT
            else _value(vtype, word) for ret, vtype, word in zip(rets, types, unions, strict=True)]


def _value(vtype: int, word: int) -> float:
    """The union member ``vtype`` names, from its 8 bytes read as one u64."""
    mask = _UNSIGNED_MASK.get(vtype)
    if mask is not None:
        return float(word & mask)  # a narrower member leaves the union's upper bytes undefined
    fmt = _REINTERPRET.get(vtype)
    if fmt is None:
        return float(word)  # an unknown type: as unsigned long long, as the slow path reads it
    if vtype == 5:
        return float(fmt.unpack((word & 0xFFFFFFFF).to_bytes(4, sys.byteorder))[0])
    return float(fmt.unpack(word.to_bytes(8, sys.byteorder))[0])


def text(value: Any) -> str:
    """NVML strings arrive as ``bytes`` from some binding versions and ``str`` from others."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip("\x00").strip()
    return str(value).strip()
