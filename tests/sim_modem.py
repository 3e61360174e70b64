"""A simulated GSM modem on a pseudo-terminal, for the sms_modem channel's tests.

The channel opens the pty's slave device like a serial port; a thread answers on the
master side the way a modem does (3GPP TS 27.007/27.005 text mode): echo until ``ATE0``,
the SIM PIN, registration, signal, ``AT+CMGS`` with its ``>`` prompt and Ctrl-Z, stored
messages for ``AT+CMGL``/``AT+CMGD``, and chosen failures (``+CMS ERROR``, silence, a flood).
"""

from __future__ import annotations

import os
import re
import select
import threading
import tty
from dataclasses import dataclass, field


@dataclass
class Sent:
    number: str
    text: str
    charset: str


@dataclass
class SimModem:
    pin: str = "1234"
    pin_locked: bool = True
    creg: int = 1
    csq: int = 20
    cmgs_error: str | None = None  # e.g. "+CMS ERROR: 500"
    silent: bool = False
    flood: bool = False  # answer AT+CSQ with an endless line
    unsolicited: bool = False  # a +CMTI before each answer to AT+CSQ
    inbox: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # index: stat, from, text
    sent: list[Sent] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    pin_attempts: int = 0

    def __post_init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.device = os.ttyname(self.slave)
        self._echo = True
        self._charset = "IRA"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-modem", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)
        os.close(self.slave)

    # ---------------------------------------------------------------------------- wire

    def _write(self, text: str) -> None:
        data = text.encode("latin-1")
        while data:
            n = os.write(self.master, data)
            data = data[n:]

    def _answer(self, *lines: str, final: str = "OK") -> None:
        self._write("".join(f"\r\n{line}\r\n" for line in lines) + f"\r\n{final}\r\n")

    def _run(self) -> None:
        buf = bytearray()
        sms_to: str | None = None
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                buf += os.read(self.master, 4096)
            except OSError:
                return
            while True:
                if sms_to is not None:
                    end = buf.find(b"\x1a")
                    if end < 0:
                        break
                    body = bytes(buf[:end]).decode("latin-1")
                    del buf[: end + 1]
                    self._finish_sms(sms_to, body)
                    sms_to = None
                    continue
                end = buf.find(b"\r")
                if end < 0:
                    break
                line = bytes(buf[:end]).decode("latin-1").strip()
                del buf[: end + 1]
                if line:
                    sms_to = self._command(line)

    def _decode(self, value: str) -> str:
        if self._charset == "UCS2":
            return bytes.fromhex(value).decode("utf-16-be")
        return value

    # ------------------------------------------------------------------------ commands

    def _command(self, line: str) -> str | None:
        """Answer one command; the destination number when a CMGS text follows."""
        self.commands.append(line)
        if self.silent:
            return None
        if self._echo:
            self._write(line + "\r")
        if line == "ATE0":
            self._echo = False
            self._answer()
        elif line in ("AT", "AT+CMEE=1", "AT+CMGF=1") or line.startswith("AT+CSMP="):
            self._answer()
        elif m := re.fullmatch(r'AT\+CSCS="(\w+)"', line):
            self._charset = m.group(1)
            self._answer()
        elif line == "AT+CPIN?":
            self._answer(f"+CPIN: {'SIM PIN' if self.pin_locked else 'READY'}")
        elif m := re.fullmatch(r'AT\+CPIN="(\d+)"', line):
            self.pin_attempts += 1
            if m.group(1) == self.pin:
                self.pin_locked = False
                self._answer()
            else:
                self._write("\r\n+CME ERROR: 16\r\n")
        elif line == "AT+CREG?":
            self._answer(f"+CREG: 0,{self.creg}")
        elif line == "AT+CSQ":
            if self.unsolicited:
                self._write('\r\n+CMTI: "SM",7\r\n')
            if self.flood:
                self._write("\r\n+CSQ: " + "9" * 20_000)
                return None
            self._answer(f"+CSQ: {self.csq},99")
        elif m := re.fullmatch(r'AT\+CMGS="([^"]+)"', line):
            if self.pin_locked or self.creg not in (1, 5):
                self._write("\r\n+CMS ERROR: 330\r\n")
                return None
            self._write("\r\n> ")
            return self._decode(m.group(1))
        elif line == 'AT+CMGL="ALL"':
            lines = []
            for index, (stat, sender, text) in sorted(self.inbox.items()):
                lines.append(f'+CMGL: {index},"{stat}","{sender}",,"26/12/04,10:00:00+04"')
                lines.append(text)
            self._answer(*lines)
        elif m := re.fullmatch(r"AT\+CMGD=(\d+)", line):
            self.inbox.pop(int(m.group(1)), None)
            self._answer()
        else:
            self._write("\r\nERROR\r\n")
        return None

    def _finish_sms(self, number: str, body: str) -> None:
        if self.cmgs_error:
            self._write(f"\r\n{self.cmgs_error}\r\n")
            return
        self.sent.append(Sent(number, self._decode(body), self._charset))
        self._answer(f"+CMGS: {len(self.sent)}")
