"""systemd: the unit files, their installer, and the notify/watchdog protocol (node/systemd.py)
against a datagram socket the test listens on."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from harness import REPO, WAIT_S, Collector, publish
from node.systemd import HANG_FILE_ENV, Notifier, socket_address, watchdog_interval

INSTALL = REPO / "scripts" / "install-services.sh"
UNITS = sorted(p.name for p in (REPO / "deploy" / "systemd").glob("*.service"))


class NotifyListener:
    """What systemd does with NOTIFY_SOCKET: a unix datagram socket that reads messages."""

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:  # abstract namespace, as systemd itself uses
            name = f"repedge-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            self.sock.bind(str(path))
            self.env_value = str(path)

    def receive(self, timeout: float) -> list[str] | None:
        """One datagram's lines, or None after ``timeout`` seconds without one."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        return data.decode().split("\n")

    def close(self) -> None:
        self.sock.close()


# -- the protocol ---------------------------------------------------------------------------


def test_addresses_follow_sd_notify():
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract") == "\0abstract"
    assert socket_address("vsock:2:1234") is None


def test_watchdog_interval_applies_only_to_this_process():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}) == 2
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def test_without_systemd_every_call_is_a_no_op():
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    notifier.heartbeat()  # no socket, no error


@pytest.mark.parametrize("abstract", [True, False])
def test_ready_status_and_stopping_reach_the_socket(tmp_path, abstract):
    listener = NotifyListener(None if abstract else tmp_path / "notify")
    notifier = Notifier({"NOTIFY_SOCKET": listener.env_value})
    try:
        assert notifier.ready("serving")
        assert listener.receive(5) == ["READY=1", f"MAINPID={os.getpid()}", "STATUS=serving"]
        notifier.status("3 tweets/s")
        assert listener.receive(5) == ["STATUS=3 tweets/s"]
        notifier.stopping()
        assert listener.receive(5) == ["STOPPING=1"]
    finally:
        notifier.close()
        listener.close()


def test_heartbeats_pet_the_watchdog_at_most_twice_per_interval():
    listener = NotifyListener()
    env = {"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": str(3600 * 10**6)}
    notifier = Notifier(env)
    try:
        for _ in range(100):  # a busy loop calls it on every pass
            notifier.heartbeat()
        assert listener.receive(5) == ["WATCHDOG=1"]
        assert listener.receive(0.2) is None  # the other 99 were within the half interval
    finally:
        notifier.close()
        listener.close()


def test_a_vanished_socket_is_reported_not_fatal(tmp_path):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.ready() is False


# -- unit files and their installer ---------------------------------------------------------


def install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(root), "--bin", str(bin_dir), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_installer_puts_units_and_example_configs_in_place_and_keeps_edited_configs(tmp_path):
    (tmp_path / "etc" / "repedge").mkdir(parents=True)
    (tmp_path / "etc" / "repedge" / "node.toml").write_text('broker = "mqtt://edited"\n')
    result = install(tmp_path)
    assert result.returncode == 0, result.stderr
    units = tmp_path / "etc" / "systemd" / "system"
    assert sorted(p.name for p in units.iterdir()) == UNITS
    for unit in units.iterdir():
        assert "@BIN@" not in unit.read_text()
    assert (tmp_path / "etc" / "repedge" / "node.toml").read_text() == 'broker = "mqtt://edited"\n'
    assert (tmp_path / "etc" / "repedge" / "broker.toml").read_text() == (
        REPO / "examples" / "broker.toml"
    ).read_text()


def test_installer_refuses_unknown_options_and_missing_programs(tmp_path):
    assert install(tmp_path, "--frobnicate").returncode == 2
    result = subprocess.run(
        ["bash", str(INSTALL), "--root", str(tmp_path), "--bin", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "broker is missing" in result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_files_verify_cleanly(tmp_path):
    assert install(tmp_path).returncode == 0
    units = tmp_path / "etc" / "systemd" / "system"
    # What the USB unit binds to is the user's fstab entry; stand in for it here.
    (units / "media-repedge.mount").write_text(
        "[Mount]\nWhat=LABEL=REPEDGE\nWhere=/media/repedge\nType=auto\n"
    )
    # A template is checked through an instance, as systemctl would load it.
    shutil.copy(units / "repedge-node@.service", units / "repedge-node@pi-1.service")
    names = ["repedge-broker.service", "repedge-node@pi-1.service", "repedge-usb-watch.service"]
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *[f"./{n}" for n in names]],
        cwd=units,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # verify exits 0 on unknown keys and merely warns: any output is a finding.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    node_unit = (units / "repedge-node@.service").read_text()
    for setting in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "User=repedge"):
        assert setting in node_unit


def test_every_unit_sets_its_open_file_limit_with_the_reason_next_to_it():
    from node.metrics import METRICS_LIMITS

    for unit in sorted((REPO / "deploy" / "systemd").glob("*.service")):
        lines = unit.read_text().splitlines()
        found = [i for i, line in enumerate(lines) if line.startswith("LimitNOFILE=")]
        assert len(found) == 1, f"{unit.name}: one LimitNOFILE= line"
        limit = int(lines[found[0]].split("=", 1)[1])
        assert limit >= 1024, unit.name
        assert lines[found[0] - 1].startswith("#"), f"{unit.name}: say why, above the limit"
        assert "[Service]" in lines[: found[0]], unit.name
    node_unit = (REPO / "deploy" / "systemd" / "repedge-node@.service").read_text()
    node_limit = int(node_unit.split("LimitNOFILE=", 1)[1].split()[0])
    # Room for the node's own files above everything /metrics may hold.
    assert node_limit >= METRICS_LIMITS.max_connections + 1024


# -- a real node under a stand-in for systemd -------------------------------------------------


def drain(listener: NotifyListener, seconds: float) -> list[str]:
    """Every line received for ``seconds``."""
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = listener.receive(left)
        if message is not None:
            lines += message
    return lines


def test_node_is_ready_after_its_subscription_and_pets_the_watchdog_only_while_working(
    node_factory, mosquitto, tmp_path, monkeypatch
):
    listener = NotifyListener()
    hang = tmp_path / "hang-worker"
    monkeypatch.setenv("NOTIFY_SOCKET", listener.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # 1 s: the node pets every 0.5 s
    monkeypatch.setenv(HANG_FILE_ENV, str(hang))
    node = node_factory().start()
    watcher = Collector(mosquitto, [node.topics.labels])
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            message = listener.receive(max(0.1, deadline - time.monotonic()))
            assert message is not None, f"no READY=1; log:\n{node.log()}"
            if "READY=1" in message:
                break
        # READY comes after the SUBACK: a tweet sent right now must reach the node
        # (one sent before the subscription exists would be dropped by the broker).
        publish(mosquitto, node.topics.tweets, ['{"id": "r1", "text": "ready or not"}'])
        watcher.wait_for(lambda _: watcher.json(node.topics.labels), what="label after READY")
        assert drain(listener, 3.0).count("WATCHDOG=1") >= 3

        hang.touch()  # the worker blocks at its next loop iteration
        drain(listener, 1.5)  # a pet may have left just before it blocked
        publish(mosquitto, node.topics.tweets, ['{"id": "h1", "text": "stuck worker"}'])
        assert "WATCHDOG=1" not in drain(listener, 3.0)  # three intervals: systemd kills
        assert [r["id"] for r in watcher.json(node.topics.labels)] == ["r1"]

        hang.unlink()  # unblocked (what a restart achieves): petting and work resume
        assert "WATCHDOG=1" in drain(listener, 3.0)
        watcher.wait_for(lambda _: len(watcher.json(node.topics.labels)) == 2, what="h1")

        node.signal(signal.SIGTERM)
        assert "STOPPING=1" in drain(listener, 3.0)
        assert node.wait() == 0
    finally:
        watcher.close()
        listener.close()
