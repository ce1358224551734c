"""TLS: `broker certs`, `broker start --tls`, BrokerEndpoint, and a node over mqtts:// end to end.

Everything runs against a real Mosquitto serving only TLS on its port.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509

from broker.certs import CertError, make_certs
from broker.config import BrokerConfig
from broker.roles import set_role
from broker.users import add_user
from common.endpoint import BrokerEndpoint, EndpointError
from common.mqttclient import new_client
from harness import (
    WAIT_S,
    Collector,
    Mosquitto,
    NodeProcess,
    Topics,
    embedded_node,
    publish,
    start_mosquitto,
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    make_certs(out, sans=["broker.example", "10.1.2.3"], clients=["tnode", "dash", "feed"])
    return out


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_are_signed_by_the_ca_and_keys_are_private(certs: Path) -> None:
    ca = load(certs / "ca.crt")
    for name in ("server", "tnode", "dash", "feed"):
        cert = load(certs / f"{name}.crt")
        cert.verify_directly_issued_by(ca)
        assert stat.S_IMODE((certs / f"{name}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((certs / "ca.key").stat().st_mode) == 0o600
    sans = load(certs / "server.crt").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    names = sans.value.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)]
    assert {"localhost", socket.gethostname(), "broker.example"} <= set(names)
    assert {"127.0.0.1", "10.1.2.3"} <= set(ips)
    usage = load(certs / "tnode.crt").extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usage.value


def test_certs_again_keeps_the_ca_and_adds_clients(certs: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    make_certs(out)
    ca_before = (out / "ca.crt").read_bytes()
    report = make_certs(out, clients=["late"])
    assert (out / "ca.crt").read_bytes() == ca_before
    assert out / "late.crt" in report.created and out / "server.crt" in report.kept
    load(out / "late.crt").verify_directly_issued_by(load(out / "ca.crt"))
    with pytest.raises(CertError, match="invalid --client"):
        make_certs(out, clients=["../x"])
    with pytest.raises(CertError, match="invalid --san"):
        make_certs(out, sans=["bad name"])


def test_cli_certs_and_start_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    made = subprocess.run(
        [sys.executable, "-m", "broker", "certs", "--out", str(out), "--client", "n1"],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert (out / "n1.key").exists()
    conf = subprocess.run(
        [sys.executable, "-m", "broker", "start", "--dry-run", "--tls", str(out),
         "--data-dir", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert conf.returncode == 0, conf.stderr
    assert "listener 8883 127.0.0.1" in conf.stdout
    assert f"certfile {out.resolve()}/server.crt" in conf.stdout
    wss = subprocess.run(
        [sys.executable, "-m", "broker", "start", "--dry-run", "--tls", str(out), "--auth",
         "--websockets-port", "9443", "--data-dir", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert wss.returncode == 0, wss.stderr
    websockets_part = wss.stdout.split("listener 9443", 1)[1].split("\n\n", 1)[0]
    assert "protocol websockets" in websockets_part
    assert f"certfile {out.resolve()}/server.crt" in websockets_part  # wss://, not ws://
    missing = subprocess.run(
        [sys.executable, "-m", "broker", "start", "--dry-run", "--tls", str(tmp_path / "none"),
         "--data-dir", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "broker certs --out" in missing.stderr


@pytest.mark.parametrize(
    ("url", "kwargs", "message"),
    [
        ("http://h", {}, "unsupported broker URL scheme"),
        ("mqtt://h:1883", {"cafile": "ca.crt"}, "is not TLS"),
        ("mqtts://h", {"certfile": "c.crt"}, "needs both --certfile and --keyfile"),
        ("mqtts://h", {"cafile": "/nonexistent/ca.crt"}, "does not exist"),
        ("mqtt://h:notaport", {}, "bad port"),
        ("mqtt://h", {"password": "x"}, "needs a user name"),
    ],
)
def test_endpoint_refuses_bad_combinations(url, kwargs, message) -> None:
    with pytest.raises(EndpointError, match=message):
        BrokerEndpoint.parse(url, **kwargs)


def test_endpoint_parses_urls(certs: Path) -> None:
    plain = BrokerEndpoint.parse("broker.lan")
    assert (plain.host, plain.port, plain.tls) == ("broker.lan", 1883, False)
    secure = BrokerEndpoint.parse("mqtts://u:p%40ss@broker.lan", cafile=certs / "ca.crt")
    assert (secure.port, secure.tls, secure.username, secure.password) == (
        8883,
        True,
        "u",
        "p@ss",
    )
    assert secure.url == "mqtts://broker.lan:8883"  # no password in what gets logged


# -- against a TLS broker -------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, certs: Path):
    broker = start_mosquitto(tmp_path_factory.mktemp("tls-broker"), tls_dir=certs)
    yield broker
    broker.stop()


def connect(broker: Mosquitto, endpoint: BrokerEndpoint) -> mqtt.ReasonCode:
    """Connect over ``endpoint``; the CONNACK's reason code (raises on a TLS failure)."""
    client = new_client(endpoint)
    host, port = endpoint.address
    result: list[mqtt.ReasonCode] = []
    client.on_connect = lambda c, u, f, reason_code, p: result.append(reason_code)
    client.connect(host, port)
    try:
        while not result:
            if client.loop(0.2) != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError("connection dropped before the CONNACK")
        return result[0]
    finally:
        client.disconnect()


def test_plain_mqtt_to_the_tls_port_is_refused(tls_broker: Mosquitto) -> None:
    # A bare MQTT 3.1.1 CONNECT: the TLS listener must not answer it with a CONNACK.
    connect_packet = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 0])
    with socket.create_connection((tls_broker.host, tls_broker.port), timeout=WAIT_S) as s:
        s.sendall(connect_packet)
        try:
            reply = s.recv(16)
        except ConnectionResetError:
            reply = b""
    assert not reply.startswith(b"\x20"), f"plain client got a CONNACK: {reply!r}"
    with pytest.raises((ConnectionError, OSError)):
        connect(tls_broker, BrokerEndpoint(tls_broker.host, tls_broker.port))


def test_tls_client_verifies_the_broker(tls_broker: Mosquitto, certs: Path) -> None:
    url = f"mqtts://127.0.0.1:{tls_broker.port}"
    ok = connect(tls_broker, BrokerEndpoint.parse(url, cafile=certs / "ca.crt"))
    assert not ok.is_failure
    # Without our CA the system's trust store does not know the broker: refused.
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(tls_broker, BrokerEndpoint.parse(url))
    make_certs(certs.parent / "other-ca")
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(tls_broker, BrokerEndpoint.parse(url, cafile=certs.parent / "other-ca/ca.crt"))


# -- a node over mqtts://, with users, roles and client certificates ---------------------


def test_node_over_mqtts_with_client_certificates_and_roles(
    tmp_path: Path, certs: Path, tiny_bundle
) -> None:
    data_dir = tmp_path / "broker"
    config = BrokerConfig(data_dir=data_dir, auth=True)
    for name, role in (("tnode", "node"), ("dash", "dashboard"), ("feed", "feeder")):
        add_user(config.password_file, name, f"{name}-pw")
        set_role(data_dir, config.acl_file, name, role)
    broker = start_mosquitto(data_dir, auth=True, tls_dir=certs, require_client_cert=True)
    url = f"mqtts://localhost:{broker.port}"

    def endpoint(name: str) -> BrokerEndpoint:
        return BrokerEndpoint.parse(
            url,
            username=name,
            password=f"{name}-pw",
            cafile=certs / "ca.crt",
            certfile=certs / f"{name}.crt",
            keyfile=certs / f"{name}.key",
        )

    node = NodeProcess(
        model=tiny_bundle.root,
        broker=broker,
        node_id="tnode",
        topics=Topics("repedge"),  # the topics the node role may use
        state_dir=tmp_path / "tnode" / "state",
        extra=[
            "--broker", url,  # the last --broker wins over the fixture's plain URL
            "--cafile", str(certs / "ca.crt"),
            "--certfile", str(certs / "tnode.crt"),
            "--keyfile", str(certs / "tnode.key"),
            "--password", "tnode-pw",  # user name: the node id
        ],
    )  # fmt: skip
    watcher = None
    try:
        # A password is not enough: without a client certificate the handshake fails.
        no_cert = BrokerEndpoint.parse(
            url, username="dash", password="dash-pw", cafile=certs / "ca.crt"
        )
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            connect(broker, no_cert)

        watcher = Collector(endpoint("dash"), ["repedge/labels", "repedge/nodes/tnode/status"])
        node.start()
        watcher.wait_for(
            lambda msgs: any(
                m.topic == "repedge/nodes/tnode/status"
                and json.loads(m.payload)["state"] == "online"
                for m in msgs
            ),
            what=f"node online over TLS; log:\n{node.log()}",
        )
        tweets = [json.dumps({"id": f"tls-{i}", "text": f"great service {i}"}) for i in range(3)]
        publish(endpoint("feed"), "repedge/tweets", tweets)
        watcher.wait_for(
            lambda msgs: (
                {json.loads(m.payload).get("id") for m in msgs if m.topic == "repedge/labels"}
                >= {"tls-0", "tls-1", "tls-2"}
            ),
            what=f"three labels over TLS; log:\n{node.log()}",
        )
    finally:
        if watcher is not None:
            watcher.close()
        if node.alive():
            node.kill()
        broker.stop()


def test_node_refuses_a_cafile_with_a_plain_url(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "node", "start", "--broker", "mqtt://localhost:1883",
         "--cafile", str(tmp_path / "ca.crt"), "--node-id", "x",
         "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=WAIT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "is not TLS" in result.stderr


def test_a_node_with_the_wrong_ca_says_why_it_cannot_connect(
    tls_broker: Mosquitto, tmp_path: Path, tiny_bundle
) -> None:
    # Issue 20: "a node with the wrong CA never comes online and logs nothing about why".
    from edgemodel.inference import Classifier

    make_certs(tmp_path / "wrong-ca")
    service, _ = embedded_node(
        tls_broker,
        tmp_path,
        Classifier(tiny_bundle, num_threads=1),
        broker=BrokerEndpoint.parse(
            f"mqtts://127.0.0.1:{tls_broker.port}", cafile=tmp_path / "wrong-ca" / "ca.crt"
        ),
    )
    failed = threading.Event()
    lines: list[str] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "connection attempt" in record.getMessage():
                lines.append(record.getMessage())
                failed.set()

    watch = Watch()
    logging.getLogger("repedge").addHandler(watch)
    service.start()
    try:
        assert failed.wait(WAIT_S), "no failed connection attempt was logged"
    finally:
        logging.getLogger("repedge").removeHandler(watch)
        service.stop()
    assert "does not verify" in lines[0] and "--cafile" in lines[0], lines[0]
    assert "retrying in" in lines[0]


def test_node_bench_measures_end_to_end_over_mqtts(
    tls_broker: Mosquitto, certs: Path, tiny_bundle, tmp_path: Path
) -> None:
    # Issue 19: node bench had its own URL parser that took only mqtt://.
    done = subprocess.run(
        [
            sys.executable, "-m", "node", "bench", "--model", str(tiny_bundle.root),
            "--out", str(tmp_path), "--threads", "1", "--latency-samples", "10",
            "--saturation-tweets", "32", "--repeats", "1",
            "--broker", f"mqtts://127.0.0.1:{tls_broker.port}", "--cafile", str(certs / "ca.crt"),
            "--broker-tweets", "20", "--rate", "20", "--seconds", "1", "--broker-repeats", "1",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = json.loads((tmp_path / "report.json").read_text())["broker"]
    assert row["broker"] == f"mqtts://127.0.0.1:{tls_broker.port}"
    assert row["e2e_saturation_tweets_per_s"]["median"] > 0
