"""A private Mosquitto with repedge's configuration (broker/config.py) on a local port.

`node bench --broker local`, the tests (through the harness package) and the benchmarks
start their brokers here, so all of them run the broker `broker start` would.
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.config import BrokerConfig, find_program, write_config
from common.endpoint import BrokerEndpoint
from common.ports import free_port, wait_listening

# Generous: it bounds a hang on a loaded machine, it does not measure speed.
START_TIMEOUT_S = 60.0


@dataclass
class Mosquitto:
    host: str
    port: int
    data_dir: Path
    process: subprocess.Popen | None = None
    # More BrokerConfig fields, used at every start (a restart keeps the same config).
    config: dict[str, Any] = field(default_factory=dict)
    program: Path | None = None  # a mosquitto binary; default: the one on PATH

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def endpoint(self, username: str | None = None, password: str | None = None) -> BrokerEndpoint:
        return BrokerEndpoint(self.host, self.port, username=username, password=password)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mosquitto.log"

    def start(self, timeout: float = START_TIMEOUT_S, **config: Any) -> Mosquitto:
        """Write the config (``self.config``, then ``config``), start, wait until it
        listens. The log goes to ``log_path``; a broker that fails to start says where."""
        self.config = {**self.config, **config}
        conf = write_config(
            BrokerConfig(data_dir=self.data_dir, port=self.port, host=self.host, **self.config)
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [find_program("mosquitto", self.program), "-c", str(conf)],
                stdout=log,
                stderr=log,
            )
        try:
            wait_listening(self.host, self.port, timeout, self.process)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"Mosquitto did not start ({exc}); see {self.log_path}") from None
        return self

    def stop(self, timeout: float = START_TIMEOUT_S) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Mosquitto saves its persistence file
            self.process.wait(timeout)
        self.process = None

    def kill(self, timeout: float = START_TIMEOUT_S) -> None:
        """SIGKILL: a crash, nothing saved since the last autosave."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout)
        self.process = None


def start_mosquitto(
    data_dir: Path,
    port: int | None = None,
    host: str = "127.0.0.1",
    program: Path | None = None,
    **config: Any,
) -> Mosquitto:
    """A started Mosquitto on ``port`` (default: a free one); ``config``: BrokerConfig fields."""
    broker = Mosquitto(host, port or free_port(host), data_dir, config=config, program=program)
    return broker.start()
