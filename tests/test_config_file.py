"""One configuration: --config FILE, REPEDGE_* variables and flags, in that order of strength,
for `broker start` and `node start` (common/cliconfig.py)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.cli import app as broker_app
from broker.config import BrokerConfig
from harness import REPO

EXAMPLES = REPO / "examples"


def run(app, args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(app, args, env=env or {})


def effective(app, args: list[str], env: dict[str, str] | None = None) -> dict:
    """The command's --print-config output, parsed back (it is TOML)."""
    result = run(app, [*args, "--print-config"], env)
    assert result.exit_code == 0, result.output
    return tomllib.loads(result.output)


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- broker start -----------------------------------------------------------------------------


def test_flag_beats_env_beats_file_beats_default(tmp_path):
    conf = write(tmp_path, "port = 1001\nmax-queued-messages = 7\nhost = '127.0.0.2'\n")
    start = ["start", "--config", str(conf)]
    env = {"REPEDGE_BROKER_PORT": "1002", "REPEDGE_BROKER_MAX_QUEUED_MESSAGES": "8"}
    assert effective(broker_app, [*start, "--port", "1003"], env)["port"] == 1003
    both = effective(broker_app, start, env)
    assert both["port"] == 1002 and both["max-queued-messages"] == 8
    assert both["host"] == "127.0.0.2"  # the file, where nothing beats it
    file_only = effective(broker_app, start)
    assert file_only["port"] == 1001 and file_only["max-queued-messages"] == 7
    default = effective(broker_app, ["start"])
    assert default["max-queued-messages"] == BrokerConfig.max_queued_messages
    assert default["host"] == BrokerConfig.host


def test_config_file_can_come_from_the_environment(tmp_path):
    conf = write(tmp_path, "port = 1004\n")
    assert effective(broker_app, ["start"], {"REPEDGE_BROKER_CONFIG": str(conf)})["port"] == 1004


def test_print_config_names_each_value_s_source(tmp_path):
    conf = write(tmp_path, "port = 1001\n")
    result = run(broker_app, ["start", "--config", str(conf), "--host", "::1", "--print-config"])
    lines = {line.split(" =")[0].lstrip("# "): line for line in result.output.splitlines()}
    assert "# config file" in lines["port"]
    assert "# command line" in lines["host"]
    assert "# default" in lines["max-queued-messages"]
    assert "env REPEDGE_BROKER_MAX_QUEUED_MESSAGES" in lines["max-queued-messages"]


def test_a_bridge_configured_in_the_file_is_rendered(tmp_path):
    conf = write(
        tmp_path,
        'bridge-to = "mqtt://centre:1883"\nsite = "north"\ndata-dir = "state"\n',
    )
    result = run(broker_app, ["start", "--config", str(conf), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert 'topic repedge/labels out 1 "" sites/north/' in result.output
    # Relative paths are relative to the file, not to where the command ran.
    assert (tmp_path / "state" / "mosquitto.conf").is_file()


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("portt = 1\n", "portt", "unknown key (known keys: "),
        ("max_queued_messages = 1\n", "max_queued_messages", "write 'max-queued-messages'"),
        ('port = "1883"\n', "port", "expected an integer, got a string"),
        ("port = true\n", "port", "expected an integer, got a boolean"),
        ("auth = 1\n", "auth", "expected true or false, got an integer"),
        ("host = 127\n", "host", "expected a string, got an integer"),
        ("config = 'other.toml'\n", "config", "unknown key"),
        ("[bridge]\nsite = 'x'\n", "bridge", "unknown key"),
    ],
)
def test_bad_keys_and_types_are_refused_with_file_key_and_reason(tmp_path, text, key, reason):
    conf = write(tmp_path, text)
    result = run(broker_app, ["start", "--config", str(conf), "--dry-run"])
    assert result.exit_code == 2
    # typer wraps the message in a box: compare without the box and the line breaks.
    message = "".join(result.output.replace("│", " ").split())
    assert f"configfile{conf},key'{key}':" in message
    assert "".join(reason.split()) in message


def flat(text: str) -> str:
    """Click's error panel wraps long messages (long temp paths) and draws a box."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_unreadable_and_invalid_files_are_refused(tmp_path):
    missing = run(broker_app, ["start", "--config", str(tmp_path / "nope.toml"), "--dry-run"])
    assert missing.exit_code == 2 and "No such file" in flat(missing.output)
    broken = write(tmp_path, "port = \n")
    invalid = run(broker_app, ["start", "--config", str(broken), "--dry-run"])
    assert invalid.exit_code == 2 and "not valid TOML" in flat(invalid.output)


def test_example_broker_config_loads(tmp_path):
    values = effective(broker_app, ["start", "--config", str(EXAMPLES / "broker.toml")])
    assert values["host"] == "127.0.0.1" and values["port"] == 1883


# -- node start -------------------------------------------------------------------------------


def test_node_settings_follow_the_same_order(tmp_path):
    from node.cli import app as node_app

    conf = write(tmp_path, 'broker = "mqtt://file:1"\nnode-id = "from-file"\nmax-batch = 8\n')
    start = ["start", "--config", str(conf)]
    env = {"REPEDGE_BROKER": "mqtt://env:2", "REPEDGE_NODE_ID": "from-env"}
    flagged = effective(node_app, [*start, "--node-id", "from-flag"], env)
    assert flagged["node-id"] == "from-flag" and flagged["broker"] == "mqtt://env:2"
    assert flagged["max-batch"] == 8
    assert effective(node_app, start)["broker"] == "mqtt://file:1"
    # The password keeps its older variable name as a second choice.
    result = run(node_app, ["start", "--print-config"], {"REPEDGE_MQTT_PASSWORD": "s3cret"})
    assert 'password = "***"' in result.output and "s3cret" not in result.output


def test_node_defaults_are_node_config_s(tmp_path):
    from node.cli import app as node_app
    from node.service import NodeConfig

    values = effective(node_app, ["start"])
    assert values["max-batch"] == NodeConfig.max_batch
    assert values["queue-size"] == NodeConfig.queue_size
    assert values["session-expiry"] == NodeConfig.session_expiry_s
    assert values["drain-timeout"] == NodeConfig.drain_timeout_s
    assert values["tweets-topic"] == NodeConfig.tweets_topic
    assert values["broker"] == NodeConfig.broker.url


def test_model_keeps_repedge_model_as_the_fallback_only(tmp_path):
    from node.cli import app as node_app

    result = run(node_app, ["start", "--print-config"], {"REPEDGE_MODEL": str(tmp_path)})
    assert "# model = (not set)" in result.output


def test_node_lists_and_relative_paths_in_the_file(tmp_path):
    from node.cli import app as node_app

    conf = write(tmp_path, 'trust-key = ["keys/a.pub", "/etc/b.pub"]\nwatch-mount = "usb"\n')
    values = effective(node_app, ["start", "--config", str(conf)])
    assert values["trust-key"] == [str(tmp_path / "keys" / "a.pub"), "/etc/b.pub"]
    assert values["watch-mount"] == str(tmp_path / "usb")
    bad = write(tmp_path, 'trust-key = "a.pub"\n', "bad.toml")
    result = run(node_app, ["start", "--config", str(bad), "--print-config"])
    assert result.exit_code == 2 and "expected a list, got a string" in result.output


def test_example_node_config_loads():
    from node.cli import app as node_app

    values = effective(node_app, ["start", "--config", str(EXAMPLES / "node.toml")])
    assert values["broker"] == "mqtt://localhost:1883"
    assert values["tweets-topic"] == "repedge/tweets"
