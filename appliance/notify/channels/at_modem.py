"""A GSM modem's serial port speaking AT commands (3GPP TS 27.007 / 27.005), and the pure
parsers for its answers.

The port is the device file opened non-blocking in raw mode at the configured baud rate and
read through the event loop (``add_reader``), so a modem that stops answering costs a
timeout, never a blocked thread. A command's answer is its information lines up to a final
result code (``OK``, ``ERROR``, ``+CME ERROR: n``, ``+CMS ERROR: n``); unsolicited lines in
between (``+CMTI``, ``RING``) are dropped. What the modem sends is bounded: a line longer
than 4 KB or more than 64 KB waiting unread is an error, not memory growth.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import termios
import time
from dataclasses import dataclass

MAX_BUFFER = 64 * 1024
MAX_LINE = 4096
CTRL_Z = b"\x1a"
FINAL_OK = "OK"
UNSOLICITED = ("+CMTI:", "RING", "+CRING:", "^", "+CDS:", "+CBM:", "+CUSD:")

BAUD_RATES = {
    int(name[1:]): getattr(termios, name)
    for name in dir(termios)
    if name.startswith("B") and name[1:].isdigit() and int(name[1:]) >= 1200
}


class AtError(Exception):
    """The modem answered with an error result (``final`` is the result line)."""

    def __init__(self, command: str, final: str) -> None:
        super().__init__(f"{command}: {final}")
        self.command = command
        self.final = final

    @property
    def cms(self) -> int | None:
        """The +CMS ERROR (SMS) or +CME ERROR (equipment) number, when the modem gave one."""
        for prefix in ("+CMS ERROR:", "+CME ERROR:"):
            if self.final.startswith(prefix):
                code = self.final[len(prefix) :].strip()
                return int(code) if code.isdigit() else None
        return None


class AtTimeout(Exception):
    """The modem did not finish answering in time."""


# ---------------------------------------------------------------------------------- parsers


def is_final(line: str) -> bool:
    return line in ("OK", "ERROR", "NO CARRIER") or line.startswith(("+CME ERROR:", "+CMS ERROR:"))


def info(lines: list[str], prefix: str) -> str | None:
    """The value of the first ``+XXX: value`` line, or None."""
    for line in lines:
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    return None


def parse_cpin(lines: list[str]) -> str:
    """``READY``, ``SIM PIN``, ``SIM PUK``..., or "" when the answer had none."""
    return info(lines, "+CPIN:") or ""


def parse_creg(lines: list[str]) -> int | None:
    """The registration status of ``+CREG: n,stat[,...]``: 1 home, 5 roaming, 2 searching,
    3 denied, 0 not searching, 4 unknown."""
    value = info(lines, "+CREG:")
    if value is None:
        return None
    fields = value.split(",")
    stat = fields[1] if len(fields) > 1 else fields[0]
    stat = stat.strip()
    return int(stat) if stat.isdigit() else None


def parse_csq(lines: list[str]) -> float | None:
    """Signal in dBm from ``+CSQ: rssi,ber`` (rssi 0..31 = -113..-51 dBm, 99 unknown)."""
    value = info(lines, "+CSQ:")
    if value is None:
        return None
    rssi = value.split(",")[0].strip()
    if not rssi.isdigit() or int(rssi) > 31:
        return None
    return -113.0 + 2 * int(rssi)


@dataclass(frozen=True, slots=True)
class StoredSms:
    index: int
    status: str
    sender: str
    text: str


def parse_cmgl(lines: list[str]) -> list[StoredSms]:
    """Text-mode ``+CMGL: index,"stat","oa",[alpha],[scts]`` headers, each followed by the
    message's line(s)."""
    out: list[StoredSms] = []
    head: list[str] | None = None
    body: list[str] = []

    def flush() -> None:
        if head is not None and len(head) >= 3 and head[0].strip().isdigit():
            out.append(StoredSms(int(head[0]), head[1], head[2], "\n".join(body)))

    for line in lines:
        if line.startswith("+CMGL:"):
            flush()
            head = next(csv.reader([line[len("+CMGL:") :].strip()], skipinitialspace=True))
            body = []
        elif head is not None:
            body.append(line)
    flush()
    return out


def ucs2_hex(text: str) -> str:
    """Text as the hex of its UTF-16BE code units (``AT+CSCS="UCS2"``)."""
    return text.encode("utf-16-be").hex().upper()


# --------------------------------------------------------------------------------- the port


class AtPort:
    """One open serial device; use from a single task at a time (the channel's lock)."""

    def __init__(self, device: str, baud: int) -> None:
        self.device = device
        self.baud = baud
        self.fd: int | None = None
        self._buf = bytearray()
        self._data = asyncio.Event()
        self._error: str | None = None

    async def open(self) -> None:
        fd = os.open(self.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            attrs = termios.tcgetattr(fd)
            iflag, oflag, cflag, lflag, _, _, cc = attrs
            iflag &= ~(
                termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
                | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON | termios.IXOFF
            )  # fmt: skip
            oflag &= ~termios.OPOST
            lflag &= ~(
                termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN
            )
            cflag &= ~(termios.CSIZE | termios.PARENB | termios.CSTOPB)
            cflag |= termios.CS8 | termios.CREAD | termios.CLOCAL
            cc[termios.VMIN] = 0
            cc[termios.VTIME] = 0
            speed = BAUD_RATES[self.baud]
            termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, speed, speed, cc])
            termios.tcflush(fd, termios.TCIOFLUSH)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        assert self.fd is not None
        try:
            chunk = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # the device went away (USB modem unplugged: EIO)
            self._error = f"{type(exc).__name__}: {exc}"
            asyncio.get_running_loop().remove_reader(self.fd)
            self._data.set()
            return
        if not chunk:
            self._error = "device closed"
            asyncio.get_running_loop().remove_reader(self.fd)
        self._buf += chunk
        if len(self._buf) > MAX_BUFFER:
            self._error = f"modem sent more than {MAX_BUFFER} bytes unasked"
            self._buf.clear()
        self._data.set()

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(RuntimeError):  # no loop any more: nothing to remove
                asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None

    async def _write(self, data: bytes, deadline: float) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                n = 0
            view = view[n:]
            if view:
                if time.monotonic() > deadline:
                    raise AtTimeout("the modem does not take our bytes (flow control)")
                await asyncio.sleep(0.01)

    async def _wait_data(self, deadline: float) -> None:
        if self._error:
            raise OSError(self._error)
        self._data.clear()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AtTimeout("no answer")
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
        # arrives as the data does, and a cancelled poller must stop.
        try:
            async with asyncio.timeout(remaining):
                await self._data.wait()
        except TimeoutError:
            raise AtTimeout("no answer") from None
        if self._error:
            raise OSError(self._error)

    async def _line(self, deadline: float) -> str:
        while True:
            end = self._buf.find(b"\r\n")
            if end < 0:
                end = self._buf.find(b"\n")
            if end >= 0:
                raw = bytes(self._buf[:end])
                del self._buf[: end + (2 if self._buf[end : end + 2] == b"\r\n" else 1)]
                return raw.strip(b"\r").decode("latin-1")
            if len(self._buf) > MAX_LINE:
                self._buf.clear()
                raise OSError(f"modem line longer than {MAX_LINE} bytes")
            await self._wait_data(deadline)

    async def _result(self, command: str, deadline: float) -> list[str]:
        lines: list[str] = []
        while True:
            try:
                line = await self._line(deadline)
            except AtTimeout:
                raise AtTimeout(f"{command}: no answer") from None
            if not line or line == command or line.startswith(UNSOLICITED):
                continue  # blank separators, an echo, unsolicited codes
            if is_final(line):
                if line != FINAL_OK:
                    raise AtError(command, line)
                return lines
            lines.append(line)

    async def command(self, command: str, timeout: float) -> list[str]:
        """Send ``command``; its information lines (AtError on an error result)."""
        if self.fd is None:
            raise OSError("modem port not open")
        deadline = time.monotonic() + timeout
        self._buf.clear()
        await self._write(command.encode("latin-1") + b"\r", deadline)
        return await self._result(command, deadline)

    async def send_sms(self, number: str, text: bytes, timeout: float) -> list[str]:
        """``AT+CMGS="number"``, the text after the ``>`` prompt, Ctrl-Z, then the result."""
        if self.fd is None:
            raise OSError("modem port not open")
        command = f'AT+CMGS="{number}"'
        deadline = time.monotonic() + timeout
        self._buf.clear()
        await self._write(command.encode("latin-1") + b"\r", deadline)
        while b">" not in self._buf:
            if b"ERROR" in self._buf:
                await self._result(command, deadline)  # raises with the error line
            try:
                await self._wait_data(deadline)
            except AtTimeout:
                raise AtTimeout(f"{command}: no '>' prompt") from None
        del self._buf[: self._buf.index(b">") + 1]
        await self._write(text + CTRL_Z, deadline)
        return await self._result(command, deadline)
