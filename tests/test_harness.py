"""The test and benchmark harness (harness/) and how pytest finds it."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from harness import (
    REPO,
    Collector,
    Mosquitto,
    free_port,
    holds_for,
    publish,
    settled,
    wait_listening,
    wait_until,
)


def test_wait_until_returns_the_first_truthy_value_and_names_what_timed_out() -> None:
    calls = iter([0, [], "ready"])
    assert wait_until(lambda: next(calls), timeout=5, interval=0) == "ready"
    with pytest.raises(AssertionError, match="the thing"):
        wait_until(lambda: False, timeout=0.05, what="the thing")


def test_holds_for_fails_the_moment_the_condition_breaks() -> None:
    holds_for(lambda: True, 0.05)
    flips = iter([True, True, False])
    started = time.monotonic()
    with pytest.raises(AssertionError, match="one record"):
        holds_for(lambda: next(flips), 30, interval=0, what="one record")
    assert time.monotonic() - started < 30


def test_settled_waits_for_a_value_to_stop_changing() -> None:
    values = iter([1, 2, 3])
    last = [0]

    def value() -> int:
        last[0] = next(values, last[0])
        return last[0]

    assert settled(value, quiet_s=0.05, interval=0) == 3
    ticks = iter(range(10**9))
    with pytest.raises(AssertionError, match="still changing"):
        settled(lambda: next(ticks), quiet_s=1.0, timeout=0.1, interval=0)


def test_free_port_is_bindable_and_wait_listening_sees_a_server() -> None:
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        wait_listening("127.0.0.1", port, timeout=5)
    with pytest.raises(TimeoutError):
        wait_listening("127.0.0.1", free_port(), timeout=0.2)


def test_wait_listening_gives_up_at_once_when_the_server_exited() -> None:
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    with pytest.raises(RuntimeError, match="exited"):
        wait_listening("127.0.0.1", free_port(), timeout=60, process=exited)


def test_a_broker_that_exits_at_start_is_an_error_naming_its_log(tmp_path) -> None:
    broken = Mosquitto("127.0.0.1", free_port(), tmp_path / "b", program=Path("/bin/false"))
    with pytest.raises(RuntimeError, match=r"did not start .*mosquitto\.log"):
        broken.start(timeout=30)
    assert broken.process is None


def test_collector_sees_what_publish_sent(mosquitto, topics) -> None:
    watcher = Collector(mosquitto, [topics.labels])
    try:
        sender = threading.Thread(target=publish, args=(mosquitto, topics.labels, ["a", "b"]))
        sender.start()
        received = watcher.wait_count(topics.labels, 2, timeout=30)
        sender.join()
        assert sorted(m.payload for m in received) == [b"a", b"b"]
    finally:
        watcher.close()


def test_plain_pytest_and_python_m_pytest_import_the_same_packages() -> None:
    """`tests` is also tf2onnx's installed folder: a test importing from ``tests.`` works
    under `python -m pytest` only. Helpers live in harness/, which pytest finds through
    pythonpath = ["."] however it is started."""
    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "." in ini["pythonpath"]
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for folder in ("tests", "benchmarks", "harness")
        for path in sorted((REPO / folder).glob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.match(r"\s*(from tests(\.|\s)|import tests\b)", line)
    ]
    assert not offenders, f"import from harness instead: {offenders}"
