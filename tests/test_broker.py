"""repedge's Mosquitto configuration, the `broker` command and authentication."""

from __future__ import annotations

import subprocess
import sys

import paho.mqtt.client as mqtt
import pytest

from broker.config import BrokerConfig, render_config
from common.mqttclient import new_client
from harness import WAIT_S, Collector, free_port, publish, start_mosquitto, wait_listening


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            out.setdefault(key, []).append(value)
    return out


def test_default_config(tmp_path) -> None:
    conf = directives(render_config(BrokerConfig(data_dir=tmp_path, port=1999)))
    assert conf["listener"] == ["1999 127.0.0.1"]  # TCP on localhost only
    assert conf["protocol"] == ["mqtt"]  # no websockets listener by default
    assert conf["persistence"] == ["true"]
    assert conf["persistence_location"] == [f"{tmp_path.resolve()}/"]
    assert int(conf["max_queued_messages"][0]) >= 100_000  # not the silent 1,000 default
    assert int(conf["max_inflight_messages"][0]) > 20
    assert conf["allow_anonymous"] == ["true"] and "password_file" not in conf
    assert len(conf["user"]) == 1  # run-as-root safe: never falls back to `mosquitto`


def test_users_add_needs_a_known_role(tmp_path) -> None:
    data_dir = str(tmp_path / "b")
    no_role = broker_cli("users", "add", "bob", "--password", "x", "--data-dir", data_dir)
    assert no_role.returncode != 0 and "--role" in no_role.stderr
    bad = broker_cli(
        "users", "add", "bob", "--role", "root", "--password", "x", "--data-dir", data_dir
    )
    assert bad.returncode != 0 and "unknown role 'root'" in bad.stderr
    assert not (tmp_path / "b" / "passwd").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "--host 0.0.0.0 exposes the broker"),
        (["--host", "192.168.1.5"], "--host 192.168.1.5 exposes the broker"),
        (["--websockets-port", "9001"], "--websockets-port needs --auth"),
    ],
)
def test_anonymous_listener_beyond_loopback_is_refused(tmp_path, args, message) -> None:
    result = broker_cli("start", "--dry-run", "--data-dir", str(tmp_path), *args)
    assert result.returncode == 2 and message in result.stderr
    ok = broker_cli("start", "--dry-run", "--data-dir", str(tmp_path), "--auth", *args)
    assert ok.returncode == 0, ok.stderr


def test_websockets_and_auth_options(tmp_path) -> None:
    conf = directives(
        render_config(BrokerConfig(data_dir=tmp_path, websockets_port=9001, auth=True))
    )
    assert conf["listener"] == ["1883 127.0.0.1", "9001"]
    assert conf["protocol"] == ["mqtt", "websockets"]
    assert conf["allow_anonymous"] == ["false"]
    assert conf["password_file"] == [str(tmp_path.resolve() / "passwd")]
    assert conf["acl_file"] == [str(tmp_path.resolve() / "acl")]


def connect_result(broker, username: str | None, password: str | None) -> mqtt.ReasonCode:
    client = new_client(broker.endpoint(username, password))
    result = []
    client.on_connect = lambda c, u, f, reason_code, p: result.append(reason_code)
    client.connect(broker.host, broker.port)
    while not result:
        client.loop(0.1)
    client.disconnect()
    return result[0]


def broker_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip


def test_auth_refuses_unknown_users_and_admits_known_ones(tmp_path) -> None:
    data_dir = tmp_path / "broker"
    for name, role in (("alice", "feeder"), ("bob", "dashboard")):
        added = broker_cli(
            "users", "add", name, "--role", role, "--password", f"{name}-pw",
            "--data-dir", str(data_dir),
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
    listed = broker_cli("users", "list", "--data-dir", str(data_dir)).stdout.splitlines()
    assert listed == ["alice feeder", "bob dashboard"]
    assert "user alice\n" in (data_dir / "acl").read_text()
    broker = start_mosquitto(data_dir, auth=True)
    try:
        assert connect_result(broker, None, None).is_failure  # anonymous
        assert connect_result(broker, "mallory", "alice-pw").is_failure
        assert connect_result(broker, "alice", "wrong").is_failure
        assert not connect_result(broker, "alice", "alice-pw").is_failure

        # One connection per user: the broker names each session after its user.
        watcher = Collector(broker, ["repedge/#"], username="bob", password="bob-pw")
        client = new_client(broker.endpoint("alice", "alice-pw"))
        client.connect(broker.host, broker.port)
        client.loop_start()
        client.publish("repedge/tweets", "hello", qos=1).wait_for_publish(WAIT_S)
        client.publish("repedge/labels", "denied by the acl", qos=1).wait_for_publish(WAIT_S)
        client.publish("repedge/tweets", "last", qos=1).wait_for_publish(WAIT_S)
        client.disconnect()
        client.loop_stop()
        got = [m.payload for m in watcher.wait_count("repedge/#", 2)]
        assert got == [b"hello", b"last"]
        watcher.close()

        removed = broker_cli("users", "remove", "alice", "--data-dir", str(data_dir))
        assert removed.returncode == 0, removed.stderr
        assert "alice" not in (data_dir / "acl").read_text()
    finally:
        broker.stop()


def test_broker_start_runs_mosquitto(tmp_path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "broker", "start", "--port", str(port),
         "--data-dir", str(tmp_path / "b")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_listening("127.0.0.1", port, WAIT_S)
        (tmp_path / "b" / "mosquitto.conf").read_text()
        from harness import Mosquitto

        publish(Mosquitto("127.0.0.1", port, tmp_path / "b"), "repedge/ping", ["x"])
    finally:
        process.terminate()
        assert process.wait(WAIT_S) == 0  # exec'd Mosquitto exits cleanly on SIGTERM


def test_missing_mosquitto_says_how_to_install(tmp_path) -> None:
    result = broker_cli("start", "--mosquitto", str(tmp_path / "nope"), "--data-dir", str(tmp_path))
    assert result.returncode != 0
    assert "apt-get install mosquitto mosquitto-clients" in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["start", "--help"], ["users", "add", "--help"]])
def test_broker_help(args) -> None:
    result = broker_cli(*args)
    assert result.returncode == 0 and "Usage" in result.stdout
