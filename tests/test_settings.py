"""The typed settings objects: CLI defaults are theirs, bad values are one line and exit 2,
nothing unvalidated reaches mosquitto.conf, and `node start`'s settings cross the exec into
node.serve whole (issue 19 item 2, issue 20 item 5)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from broker.config import BrokerConfig
from common.endpoint import BrokerEndpoint
from common.settings import SettingsError, from_json, option_name, to_json
from harness import REPO
from node.settings import NodeConfig, NodeStart

runner = CliRunner()


def command(app: typer.Typer, name: str):
    group = typer.main.get_command(app)
    return group.commands[name]  # type: ignore[attr-defined]


def option_defaults(cmd) -> dict[str, object]:
    """Long option name (no dashes) -> the default typer shows and uses."""
    out = {}
    for param in cmd.params:
        longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        if longs:
            out[longs[0][2:]] = param.default
    return out


def assert_cli_defaults_are_the_settings(cmd, settings_cls, skip: set[str] = frozenset()):
    defaults = option_defaults(cmd)
    checked = 0
    for field in dataclasses.fields(settings_cls):
        name = option_name(field)
        if name in skip or name not in defaults or not field.init:
            continue
        expected = field.default
        if expected is dataclasses.MISSING:
            continue  # computed at run time (the host name, an empty list, a folder)
        if isinstance(expected, BrokerEndpoint):
            expected = expected.url
        if expected == () and defaults[name] is None:  # a repeatable option: none given
            continue
        assert defaults[name] == expected, f"--{name}: CLI {defaults[name]!r} != {expected!r}"
        checked += 1
    return checked


def test_node_start_defaults_are_the_settings_defaults() -> None:
    from node.cli import app

    start = command(app, "start")
    checked = assert_cli_defaults_are_the_settings(start, NodeConfig)
    checked += assert_cli_defaults_are_the_settings(start, NodeStart)
    assert checked >= 20
    assert option_defaults(start)["broker"] == "mqtt://localhost:1883"


def test_broker_start_defaults_are_the_settings_defaults() -> None:
    from broker.cli import app

    start = command(app, "start")
    # --port's default depends on --tls (1883 or 8883), so the CLI leaves it unset.
    assert assert_cli_defaults_are_the_settings(start, BrokerConfig, skip={"port"}) >= 3


def test_trainer_train_defaults_are_the_settings_defaults() -> None:
    from trainer.cli import app
    from trainer.settings import TrainConfig

    assert assert_cli_defaults_are_the_settings(command(app, "train"), TrainConfig) >= 16


def test_trainer_train_refuses_bad_settings_in_one_line(tmp_path: Path) -> None:
    from trainer.cli import app

    result = runner.invoke(app, ["train", "--out", str(tmp_path), "--batch-size", "0"])
    one_line_error(result, "--batch-size: must be at least 1")


@pytest.mark.parametrize("name", ["serve", "top", "collect"])
def test_dashboard_defaults_are_the_settings_defaults(name: str) -> None:
    from dashboard.cli import app
    from dashboard.settings import DashboardSettings

    assert assert_cli_defaults_are_the_settings(command(app, name), DashboardSettings) >= 3


@pytest.mark.parametrize(
    "args, needle",
    [
        (["serve", "--port", "70000"], "--port: must be at most 65535"),
        (["serve", "--push-interval", "0"], "--push-interval: must be at least 0.05"),
        (["top", "--once", "--wait", "-1"], "--wait: must be at least 0"),
        (["collect", "--flush-interval", "0"], "--flush-interval: must be at least 0.1"),
    ],
)
def test_dashboard_refuses_bad_settings_in_one_line(args: list[str], needle: str) -> None:
    from dashboard.cli import app

    one_line_error(runner.invoke(app, args), needle)


def test_node_bench_defaults_are_the_settings_defaults() -> None:
    from bench.cli import app
    from bench.settings import BenchSettings
    from bench.suite import BenchOptions
    from edgemodel.defaults import MAX_BATCH, MAX_BATCH_TOKENS

    cmd = typer.main.get_command(app)
    assert assert_cli_defaults_are_the_settings(cmd, BenchSettings) >= 10
    # The batch shape node bench measures is the node's.
    assert BenchOptions.max_batch == NodeConfig.max_batch == MAX_BATCH
    assert BenchOptions.max_batch_tokens == NodeConfig.max_batch_tokens == MAX_BATCH_TOKENS


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--latency-samples", "0"], "--latency-samples: must be at least 1"),
        (["--rate", "0"], "--rate: must be more than 0"),
        (["--split", "half"], "--split: must be one of all, train, dev, test"),
    ],
)
def test_node_bench_refuses_bad_settings_in_one_line(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    from bench.cli import app

    one_line_error(runner.invoke(app, ["--out", str(tmp_path), *args]), needle)


# -- bad values: one line, exit status 2, no traceback ----------------------------------


def one_line_error(result, *needles: str) -> None:
    output = result.output
    assert result.exit_code == 2, output
    assert ("Traceback" not in output and result.exception is None) or isinstance(
        result.exception, SystemExit
    ), output
    for needle in needles:
        assert needle in output, output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--queue-size", "0"], "--queue-size: must be at least 1"),
        (["--queue-size", "-1"], "--queue-size: must be at least 1"),
        (["--max-batch", "0"], "--max-batch: must be at least 1"),
        (["--telemetry-interval", "0"], "--telemetry-interval: must be at least 0.5"),
        (["--telemetry-interval", "-1"], "--telemetry-interval"),
        (["--session-expiry", "-1"], "--session-expiry: must be at least 0"),
        (["--session-expiry", str(2**33)], "--session-expiry: must be at most 4294967295"),
        (["--node-id", "x" * 70_000], "--node-id: must be at most 64 characters"),
        (["--node-id", "pi\n1"], "--node-id"),
        (["--max-bytes", "-1"], "--max-bytes: must be at least 1"),
        (["--broker", "mqtt://localhost:70000"], "bad port"),
        (["--broker", "mqtt://localhost:0"], "port 0"),
        (["--metrics-port", "70000"], "--metrics-port: must be at most 65535"),
    ],
)
def test_node_start_refuses_bad_settings_in_one_line(args: list[str], needle: str) -> None:
    from node.cli import app

    result = runner.invoke(app, ["start", *args], env={"REPEDGE_MODEL": ""})
    one_line_error(result, needle)
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_node_start_refuses_an_unknown_log_level() -> None:
    from node.cli import app

    result = runner.invoke(app, ["start", "--log-level", "verbose"])
    one_line_error(result, "--log-level: must be one of debug, info, warning, error")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--port", "-1"], "--port: must be at least 1"),
        (["--port", "70000"], "--port: must be at most 65535"),
        (["--host", "127.0.0.1\nlistener 1884 0.0.0.0"], "--host"),
        (["--host", "my host"], "no spaces"),
        (["--websockets-port", "0"], "--websockets-port"),
        (
            [
                "--bridge-to",
                "mqtts://centre:8883",
                "--site",
                "s1",
                "--bridge-cafile",
                "ca\nlistener 1",
            ],
            "--bridge-cafile",
        ),
        (["--bridge-to", "mqtt://cen\x1btre:1883", "--site", "s1"], "control characters"),
    ],
)
def test_broker_settings_never_reach_mosquitto_conf_unchecked(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    from broker.cli import app

    data = tmp_path / "broker"
    result = runner.invoke(app, ["start", "--dry-run", "--data-dir", str(data), *args])
    one_line_error(result, needle)
    assert not (data / "mosquitto.conf").exists()


def test_broker_config_checks_itself_when_built_in_code(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--host"):
        BrokerConfig(tmp_path, host="127.0.0.1\nallow_anonymous true")
    with pytest.raises(SettingsError, match="--port"):
        BrokerConfig(tmp_path, port=0)
    with pytest.raises(SettingsError, match=r"session.expiration"):
        BrokerConfig(tmp_path, session_expiration="1d\n#")


def test_the_acls_grant_the_configured_tweets_topic(tmp_path: Path) -> None:
    # Issue 19: the ACLs hard-coded repedge/tweets although --tweets-topic is configurable.
    from broker.cli import app
    from broker.roles import set_role

    data = tmp_path / "broker"
    set_role(data, data / "acl", "pi-1", "node")
    set_role(data, data / "acl", "feed", "feeder")
    args = ["start", "--dry-run", "--auth", "--data-dir", str(data)]
    result = runner.invoke(app, [*args, "--tweets-topic", "plant7/tweets"])
    assert result.exit_code == 0, result.output
    set_role(data, data / "acl", "site1", "site")  # a later `broker users add` keeps it
    acl = (data / "acl").read_text()
    for line in (
        "topic read plant7/tweets",
        "topic read $share/+/plant7/tweets",
        "topic write plant7/tweets",
        "topic read sites/site1/plant7/tweets",
    ):
        assert line in acl.splitlines(), line
    assert "repedge/tweets" not in acl
    bad = runner.invoke(app, [*args, "--tweets-topic", "plant7/tweets\ntopic readwrite #"])
    one_line_error(bad, "--tweets-topic")


# -- node start -> node.serve: the settings cross the exec whole -----------------------


def full_settings(tmp_path: Path) -> NodeStart:
    from broker.certs import make_certs

    make_certs(tmp_path / "certs")
    ca = tmp_path / "certs" / "ca.crt"
    endpoint = BrokerEndpoint.parse(
        "mqtts://broker.example:8884", username="pi-1", password="pw", cafile=ca
    )
    return NodeStart(
        config=NodeConfig(node_id="pi-1", broker=endpoint, state_dir=tmp_path / "state"),
        model=tmp_path / "model",
        trust_keys=[tmp_path / "a.pub", tmp_path / "b.pub"],
        provision_state=tmp_path / "prov",
        metrics_port=9464,
    )


def test_settings_survive_serialisation_with_their_types(tmp_path: Path) -> None:
    settings = full_settings(tmp_path)
    back = from_json(NodeStart, json.loads(json.dumps(to_json(settings))))
    assert back == settings
    assert isinstance(back.config.broker, BrokerEndpoint)
    assert isinstance(back.config.broker.cafile, Path)
    assert isinstance(back.config.state_dir, Path)
    assert all(isinstance(k, Path) for k in back.trust_keys)
    with pytest.raises(SettingsError, match="unknown settings"):
        from_json(NodeConfig, {"node_id": "x", "host": "old-style"})


def test_the_broker_url_arrives_at_paho_unchanged(tmp_path: Path) -> None:
    """node start's parsed endpoint -> the exec's environment -> node.serve -> the paho
    client: the same endpoint, typed, and paho connects where it says."""
    from node.serve import SPEC_ENV
    from node.service import NodeService

    settings = full_settings(tmp_path)
    wire = json.dumps(to_json(settings))  # exactly what exec_serve puts in the environment
    probe = (
        "import json, os, sys\n"
        "from common.settings import from_json\n"
        "from node.settings import NodeStart\n"
        f"s = from_json(NodeStart, json.loads(os.environ[{SPEC_ENV!r}]))\n"
        "b = s.config.broker\n"
        "print(json.dumps([type(b).__name__, b.host, b.port, b.tls, type(b.cafile).__name__]))\n"
    )
    env = {**os.environ, SPEC_ENV: wire, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == ["BrokerEndpoint", "broker.example", 8884, True, "PosixPath"]

    restored = from_json(NodeStart, json.loads(wire))
    service = NodeService(restored.config, None)
    assert service.shell.config.broker is restored.config.broker  # one object, end to end
    client = service.shell.client
    client.connect_async(*restored.config.broker.address)  # what MqttShell.start does
    assert (client.host, client.port) == ("broker.example", 8884)
    assert client.username == "pi-1"


# -- the small ones ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["node.cli", "broker.cli", "trainer.cli", "provisioning.cli", "dashboard.cli"]
)
def test_every_command_has_version(module: str) -> None:
    import importlib

    from common.cli import repedge_version

    result = runner.invoke(importlib.import_module(module).app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"repedge {repedge_version()}"


def test_runtime_versions_compare_by_pep_440() -> None:
    from provisioning.versions import runtime_version_at_least

    assert not runtime_version_at_least("2.3.0rc1", "2.3.0")
    assert runtime_version_at_least("2.3.0", "2.3.0")
    assert runtime_version_at_least("2.14.0", "2.3.0")
    assert runtime_version_at_least("2.3.0.post1", "2.3.0")
    assert not runtime_version_at_least("not-a-version", "2.3.0")
