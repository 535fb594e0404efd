"""Read module EEPROM pages through the running kernel, or ``ethtool -m`` as a last resort.

Order (``eeprom_source: auto``): ethtool netlink ``ETHTOOL_MSG_MODULE_EEPROM_GET`` (Linux 5.13+,
page-addressed: it reaches CMIS pages 01h-11h), then the legacy ``SIOCETHTOOL``
``ETHTOOL_GMODULEINFO``/``ETHTOOL_GMODULEEEPROM`` ioctl (a flat dump, see
:func:`agent.plugins.optics.eeprom.split_legacy`), then the ``ethtool`` binary's text (run with
a fixed argv, no shell, and a deadline). Message building and parsing are pure functions so
tests can check them without a module plugged in.

Both kernel paths need CAP_NET_ADMIN for the legacy ioctl (it is not in dev_ethtool's
unprivileged list); netlink GET requests do not.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import struct
import subprocess
from dataclasses import dataclass, field

from agent.errors import PluginError
from agent.plugins.optics import ethtool_text
from agent.plugins.optics.eeprom import (
    LOWER,
    EepromError,
    EepromImage,
    PageRequest,
    decode,
    plan_pages,
    split_legacy,
)
from agent.plugins.optics.reading import ModuleReading

# linux/netlink.h, linux/genetlink.h
NETLINK_GENERIC = 16
NLM_F_REQUEST = 0x1
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSG_ERROR = 0x2
NLA_F_NESTED = 0x8000
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
# linux/ethtool_netlink.h
ETHTOOL_GENL_NAME = "ethtool"
ETHTOOL_GENL_VERSION = 1
ETHTOOL_MSG_MODULE_EEPROM_GET = 31
ETHTOOL_A_HEADER_DEV_NAME = 2
ETHTOOL_A_MODULE_EEPROM_HEADER = 1
ETHTOOL_A_MODULE_EEPROM_OFFSET = 2
ETHTOOL_A_MODULE_EEPROM_LENGTH = 3
ETHTOOL_A_MODULE_EEPROM_PAGE = 4
ETHTOOL_A_MODULE_EEPROM_BANK = 5
ETHTOOL_A_MODULE_EEPROM_I2C_ADDRESS = 6
ETHTOOL_A_MODULE_EEPROM_DATA = 7
# linux/sockios.h, linux/ethtool.h
SIOCETHTOOL = 0x8946
SIOCGIFHWADDR = 0x8927
ETHTOOL_GMODULEINFO = 0x42
ETHTOOL_GMODULEEEPROM = 0x43
IFNAMSIZ = 16

#: errno values meaning "no module here / the driver cannot read one", not a failure.
NO_MODULE = frozenset({errno.EOPNOTSUPP, errno.ENODEV, errno.EIO, errno.EREMOTEIO, errno.ENXIO,
                       errno.ETIMEDOUT, errno.ENOENT})
DENIED = frozenset({errno.EPERM, errno.EACCES})


class EepromUnavailable(PluginError):
    """This way of reading EEPROM does not work here (no netlink family, no binary, ...)."""


class EepromDenied(PluginError):
    """The kernel refused the read: the agent lacks CAP_NET_ADMIN."""


# --- netlink messages (pure) -----------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(family: int, cmd: int, seq: int, attrs: bytes, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", cmd, ETHTOOL_GENL_VERSION, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), family, flags, seq, 0) + body


def family_request(seq: int, name: str = ETHTOOL_GENL_NAME) -> bytes:
    return _message(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, seq, _attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"))


def eeprom_request(family: int, seq: int, ifname: str, req: PageRequest) -> bytes:
    """``ETHTOOL_MSG_MODULE_EEPROM_GET`` for one half page (Documentation/networking/ethtool-netlink.rst)."""
    header = _attr(ETHTOOL_A_MODULE_EEPROM_HEADER | NLA_F_NESTED,
                   _attr(ETHTOOL_A_HEADER_DEV_NAME, ifname.encode() + b"\0"))
    attrs = (
        header
        + _attr(ETHTOOL_A_MODULE_EEPROM_OFFSET, struct.pack("=I", req.offset))
        + _attr(ETHTOOL_A_MODULE_EEPROM_LENGTH, struct.pack("=I", req.length))
        + _attr(ETHTOOL_A_MODULE_EEPROM_PAGE, struct.pack("=B", req.page))
        + _attr(ETHTOOL_A_MODULE_EEPROM_BANK, struct.pack("=B", req.bank))
        + _attr(ETHTOOL_A_MODULE_EEPROM_I2C_ADDRESS, struct.pack("=B", req.i2c))
    )
    return _message(family, ETHTOOL_MSG_MODULE_EEPROM_GET, seq, attrs)


def parse_attrs(buf: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(buf):
        length, kind = struct.unpack_from("=HH", buf, pos)
        if length < 4 or pos + length > len(buf):
            break
        out[kind & ~NLA_F_NESTED] = bytes(buf[pos + 4 : pos + length])
        pos += (length + 3) & ~3
    return out


@dataclass
class NetlinkReply:
    attrs: dict[int, bytes] = field(default_factory=dict)
    error: int = 0  # positive errno
    message: str = ""  # the kernel's extended ack text, when it sent one


def parse_reply(buf: bytes, seq: int) -> NetlinkReply:
    """The answer to request ``seq`` in one datagram: attributes, or an errno with its text."""
    pos = 0
    while pos + 16 <= len(buf):
        length, kind, flags, rseq, _pid = struct.unpack_from("=IHHII", buf, pos)
        if length < 16 or pos + length > len(buf):
            break
        body = buf[pos + 16 : pos + length]
        if rseq == seq:
            if kind == NLMSG_ERROR:
                # struct nlmsgerr: the error code, then the request's header (16 bytes) at least.
                if len(body) < 4 + 16:
                    raise EepromError(f"netlink error reply for request {seq} is {len(body)} bytes, "
                                      "shorter than struct nlmsgerr")
                (code,) = struct.unpack_from("=i", body, 0)
                reply = NetlinkReply(error=-code)
                if flags & NLM_F_ACK_TLVS:
                    orig_len = 16 if flags & NLM_F_CAPPED else struct.unpack_from("=I", body, 4)[0]
                    tlvs = parse_attrs(body[4 + ((orig_len + 3) & ~3) :])
                    reply.message = tlvs.get(NLMSGERR_ATTR_MSG, b"").rstrip(b"\0").decode(errors="replace")
                return reply
            return NetlinkReply(attrs=parse_attrs(body[4:]))
        pos += (length + 3) & ~3
    raise EepromError(f"netlink reply for request {seq} not found in {len(buf)} bytes")


class Netlink:
    """One generic-netlink socket bound to the ethtool family."""

    def __init__(self, timeout: float = 2.0) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        except OSError as err:
            raise EepromUnavailable(f"generic netlink socket refused: {err.strerror}") from err
        self.sock.settimeout(timeout)
        with contextlib.suppress(OSError):  # older kernels: errors come without text
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        self.sock.bind((0, 0))
        self._seq = 0
        reply = self._call(family_request(self._next()))
        if reply.error:
            self.close()
            raise EepromUnavailable("the kernel has no ethtool netlink family (Linux < 5.6)")
        self.family = struct.unpack("=H", reply.attrs[CTRL_ATTR_FAMILY_ID][:2])[0]

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _call(self, msg: bytes) -> NetlinkReply:
        (seq,) = struct.unpack_from("=I", msg, 8)
        self.sock.send(msg)
        while True:
            try:
                data = self.sock.recv(65536)
            except TimeoutError as err:
                raise EepromError("ethtool netlink did not answer within the socket timeout") from err
            try:
                return parse_reply(data, seq)
            except EepromError:
                continue  # a stale answer to an earlier, timed-out request

    def read(self, ifname: str, req: PageRequest) -> bytes:
        reply = self._call(eeprom_request(self.family, self._next(), ifname, req))
        if reply.error:
            text = f"{os.strerror(reply.error)}" + (f" ({reply.message})" if reply.message else "")
            raise OSError(reply.error, text)
        data = reply.attrs.get(ETHTOOL_A_MODULE_EEPROM_DATA)
        if data is None:
            raise EepromError(f"{ifname}: MODULE_EEPROM_GET reply carries no data")
        return data

    def close(self) -> None:
        self.sock.close()


# --- legacy ioctl -------------------------------------------------------------------------------


class _IfReq(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * IFNAMSIZ), ("data", ctypes.c_void_p), ("pad", ctypes.c_char * 16)]


def _ethtool_ioctl(sock: socket.socket, ifname: str, buf: ctypes.Array[ctypes.c_char]) -> None:
    req = _IfReq(ifname.encode()[: IFNAMSIZ - 1], ctypes.cast(buf, ctypes.c_void_p))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, req)


def ioctl_read(ifname: str) -> tuple[int, bytes]:
    """``ETHTOOL_GMODULEINFO`` then ``ETHTOOL_GMODULEEEPROM``: (ETH_MODULE_* type, dump)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        info = ctypes.create_string_buffer(struct.pack("=III", ETHTOOL_GMODULEINFO, 0, 0) + b"\0" * 32)
        _ethtool_ioctl(sock, ifname, info)
        _cmd, kind, length = struct.unpack_from("=III", info.raw, 0)
        if not 0 < length <= 4096:
            raise EepromError(f"{ifname}: ETHTOOL_GMODULEINFO reports an EEPROM of {length} bytes")
        eeprom = ctypes.create_string_buffer(struct.pack("=IIII", ETHTOOL_GMODULEEEPROM, 0, 0, length) + b"\0" * length)
        _ethtool_ioctl(sock, ifname, eeprom)
        return kind, eeprom.raw[16 : 16 + length]


def live_address(ifname: str) -> bytes | None:
    """The running kernel's hardware address of ``ifname`` (``SIOCGIFHWADDR``), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            out = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, struct.pack("16s16x", ifname.encode()[:15]))
        except OSError:
            return None
    return bytes(out[18:32])  # struct sockaddr: 2 bytes family, 14 bytes data


# --- the reader ----------------------------------------------------------------------------------


class ModuleReader:
    """Reads and decodes one interface's module by the configured route."""

    def __init__(self, source: str = "auto", ethtool_path: str = "ethtool", timeout: float = 5.0) -> None:
        self.source = source
        self.ethtool_path = ethtool_path
        self.timeout = timeout
        self._netlink: Netlink | None = None
        self._netlink_failed = ""

    def _nl(self) -> Netlink | None:
        if self._netlink is None and not self._netlink_failed:
            try:
                self._netlink = Netlink(timeout=min(self.timeout, 2.0))
            except EepromUnavailable as err:
                self._netlink_failed = str(err)
        return self._netlink

    def read(self, ifname: str) -> ModuleReading | None:
        """The module's reading; None when there is no module or the driver cannot read one.

        Raises EepromDenied when every route was refused for lack of privilege, EepromError
        when the module answered with something undecodable.
        """
        denied: list[str] = []
        if self.source in ("auto", "netlink"):
            nl = self._nl()
            if nl is not None:
                try:
                    return decode(self.netlink_image(nl, ifname))
                except OSError as err:
                    if err.errno in DENIED:
                        denied.append(f"netlink: {err.strerror}")
                    elif (err.errno != errno.EOPNOTSUPP and err.errno in NO_MODULE) or self.source == "netlink":
                        # No module (EIO, ENODEV...). EOPNOTSUPP: the kernel lacks the command
                        # or the driver lacks paged access; the legacy ioctl may still work.
                        return None
            elif self.source == "netlink":
                raise EepromUnavailable(self._netlink_failed)
        if self.source in ("auto", "ioctl"):
            try:
                kind, data = ioctl_read(ifname)
                return decode(split_legacy(kind, data))
            except OSError as err:
                if err.errno in DENIED:
                    denied.append(f"ioctl: {err.strerror}")
                elif err.errno in NO_MODULE or err.errno == errno.EINVAL:
                    return None
                else:
                    raise EepromError(f"{ifname}: SIOCETHTOOL failed: {err.strerror}") from err
        if self.source == "ethtool":
            return ethtool_text.parse(self.run_ethtool(ifname))
        if self.source == "auto" and denied:
            # Direct reads were refused: the ethtool binary may hold the capability (setcap).
            try:
                return ethtool_text.parse(self.run_ethtool(ifname))
            except EepromUnavailable as err:
                denied.append(f"ethtool -m: {err}")
        if denied:
            raise EepromDenied(f"{ifname}: no permission to read the module EEPROM ({'; '.join(denied)}); "
                               "run the agent with CAP_NET_ADMIN to get transceiver diagnostics")
        return None

    @staticmethod
    def netlink_image(nl: Netlink, ifname: str) -> EepromImage:
        img = EepromImage(lower=nl.read(ifname, LOWER))
        for req in plan_pages(img.lower):
            try:
                data = nl.read(ifname, req)
            except OSError:
                continue  # an optional page the module does not have: decoders omit its values
            if req.i2c != LOWER.i2c:
                img.a2 = data
            else:
                img.upper[req.page] = data
        return img

    def run_ethtool(self, ifname: str) -> str:
        argv = [self.ethtool_path, "-m", ifname]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=self.timeout, check=False,
                                  env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")})
        except FileNotFoundError as err:
            raise EepromUnavailable(f"{self.ethtool_path} not found") from err
        except subprocess.TimeoutExpired as err:
            raise EepromUnavailable(f"{self.ethtool_path} -m {ifname} ran past {self.timeout:g}s") from err
        if done.returncode != 0:
            first = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
            raise EepromUnavailable(f"exit {done.returncode}: {first[0] if first else 'no output'}")
        return done.stdout.decode(errors="replace")

    def close(self) -> None:
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None
