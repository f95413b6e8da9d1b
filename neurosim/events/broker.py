"""``LocalBroker``: a throwaway mosquitto on a free loopback port, for tests, benchmarks and demos.

    with LocalBroker() as broker:
        ... MQTTPublisher(broker.url, "run-1", bus) ...
        broker.stop(); broker.start()     # same port again: clients can reconnect

It needs Debian's ``mosquitto`` (``apt-get install mosquitto``); ``BrokerUnavailable`` says
so when it is missing. Optional username/password (a password file is generated with
``mosquitto_passwd``) and TLS (certificate and key files given by the caller).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

_SEARCH_PATH = "/usr/sbin:/usr/local/sbin:/usr/bin:/usr/local/bin"


class BrokerUnavailable(RuntimeError):
    """mosquitto is not installed or did not start."""


def _executable(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=_SEARCH_PATH)
    if found is None:
        raise BrokerUnavailable(
            f"{name} not found: install Debian's mosquitto (as root: apt-get update && apt-get install -y mosquitto)"
        )
    return found


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalBroker:
    """A mosquitto broker of its own on the loopback interface (see the module docs); a context manager that
    starts and stops it."""

    def __init__(
        self,
        port: int | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        self.port = port or free_port()
        self.username = username
        self.password = password
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.startup_timeout = startup_timeout
        self._dir = Path(tempfile.mkdtemp(prefix="neurosim-mosquitto-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def url(self) -> str:
        """The broker's URL (``mqtt://`` or ``mqtts://``, with the credentials when set)."""
        scheme = "mqtts" if self.tls_cert else "mqtt"
        user = f"{self.username}:{self.password}@" if self.username else ""
        return f"{scheme}://{user}127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the mosquitto process is alive."""
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> None:
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr", "log_type error"]
        if os.geteuid() == 0:  # as root, mosquitto would switch to its own user, who cannot read our temp files
            lines.append("user root")
        if self.username is not None and self.password is not None:
            passwd = self._dir / "passwd"
            subprocess.run(
                [_executable("mosquitto_passwd"), "-b", "-c", str(passwd), self.username, self.password],
                check=True,
                capture_output=True,
            )
            passwd.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls_cert is not None:
            lines += [f"certfile {self.tls_cert}", f"keyfile {self.tls_key}"]
        (self._dir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start mosquitto (on the same port after a ``stop``) and wait until it accepts connections."""
        if self.running:
            return
        self._process = subprocess.Popen(
            [_executable("mosquitto"), "-c", str(self._dir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise BrokerUnavailable(f"mosquitto exited with {self._process.returncode}: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerUnavailable(f"mosquitto did not accept connections on port {self.port} in {self.startup_timeout} s")

    def stop(self) -> None:
        """Stop mosquitto (terminate, then kill if it does not exit)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stderr:
            self._process.stderr.close()
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
