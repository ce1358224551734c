"""Render repedge's Mosquitto configuration from the packaged template.

`broker start` and the test suite both go through :func:`write_config`, so the tests run
the exact configuration users get.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from broker.bridge import BridgeConfig, render_bridge
from broker.certs import CA_CERT, SERVER_CERT, SERVER_KEY
from broker.roles import SUBSCRIBE_RULES_FILE, write_acl
from common import topics
from common.endpoint import check_host
from common.settings import SettingsError, check_topic_name, setting, validate

TEMPLATE = "repedge.conf"
CONFIG_FILE = "mosquitto.conf"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"

# Debian installs the broker in /usr/sbin, which is not on a normal user's PATH.
_EXTRA_BIN_DIRS = (
    "/usr/sbin",
    "/usr/local/sbin",
    "/opt/homebrew/sbin",
    "/usr/local/opt/mosquitto/sbin",
)
INSTALL_HINT = "install it with: sudo apt-get install mosquitto mosquitto-clients"
# Mosquitto's dynamic security plugin (in Debian's mosquitto package since 2.0): with
# --auth it checks every SUBSCRIBE, share groups included (broker/roles.py).
DYNSEC_PLUGIN = "mosquitto_dynamic_security.so"
_PLUGIN_DIRS = (
    "/usr/lib/*-linux-gnu",
    "/usr/lib",
    "/usr/local/lib",
    "/opt/homebrew/lib",
    "/usr/local/opt/mosquitto/lib",
)


_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f]")


class MosquittoMissing(RuntimeError):
    """A Mosquitto program is not installed."""


class UnsafeConfig(ValueError):
    """A configuration that would expose an unauthenticated broker to the network."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def default_data_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "repedge" / "broker"


# Mosquitto's persistent_client_expiration: a number and a unit (hours to years).
_EXPIRATION = re.compile(r"[1-9][0-9]{0,5}[hdwmy]")


@dataclass(frozen=True)
class BrokerConfig:
    """`broker start`'s settings. Every value here is written into mosquitto.conf, so each
    is checked when the object is built (``__post_init__``): a port outside 1-65535 or a
    host with a newline (which would add lines to the file) never reaches Mosquitto."""

    data_dir: Path
    port: int = setting(1883, min=1, max=65_535)
    host: str = setting("127.0.0.1", max_len=253)
    websockets_port: int | None = setting(None, min=1, max=65_535)
    auth: bool = False
    # ~1.5 h of 100 tweets/s for one offline node; bytes cap protects the broker's RAM.
    max_queued_messages: int = setting(500_000, min=0)
    max_queued_bytes: int = setting(256 * 1024 * 1024, min=0)
    max_inflight_messages: int = setting(100, min=0, max=65_535)
    # Save the database every 100 changes (a message queued or delivered, a retained
    # message, a subscription): a crash loses at most the last 100 acknowledged tweets, and
    # the broker still takes ~3,000 tweets/s (benchmarks/broker_durability.py, docs/broker.md).
    # autosave_on_changes False: autosave_interval is in seconds (Mosquitto's default is 60).
    autosave_interval: int = setting(100, option="autosave-changes", min=1)
    autosave_on_changes: bool = True
    session_expiration: str = setting("14d", max_len=8)
    # A folder from `broker certs`: every listener then speaks TLS only.
    tls_dir: Path | None = None
    require_client_cert: bool = False
    # Forward this site's labels, errors and node reports to a central broker.
    bridge: BridgeConfig | None = None
    # The nodes' tweets topic (`node start --tweets-topic`): the ACLs grant it, not a
    # hard-coded repedge/tweets.
    tweets_topic: str = setting(topics.TWEETS, max_len=1024)

    def __post_init__(self) -> None:
        validate(self)  # types, ranges, and no control characters in any text
        check_host(self.host)  # no spaces either
        check_topic_name("--tweets-topic", self.tweets_topic)
        if not _EXPIRATION.fullmatch(self.session_expiration):
            raise SettingsError(
                f"session expiration {self.session_expiration!r}: a number and h, d, w, m or y"
            )
        for name in ("data_dir", "tls_dir"):
            path = getattr(self, name)
            if path is not None and _CONTROL_OR_SPACE.search(str(path)):
                raise SettingsError(
                    f"--{name.replace('_', '-')} {str(path)!r}: Mosquitto cannot use a path "
                    "with spaces or control characters"
                )

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def password_file(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    @property
    def acl_file(self) -> Path:
        return self.data_dir / ACL_FILE


def _current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def check_exposure(config: BrokerConfig) -> None:
    """Refuse anonymous access on any listener that is not on loopback.

    Anonymous clients can publish tweets, read every label and take over a node's session;
    that is acceptable on a single-user box (127.0.0.1) and nowhere else. Mosquitto 2.0
    binds a WebSockets listener on all interfaces, so it counts as exposed.
    """
    if config.auth:
        return
    if not is_loopback(config.host):
        raise UnsafeConfig(
            f"--host {config.host} exposes the broker beyond this machine: add --auth "
            "(and users with `broker users add NAME --role ...`); anonymous access is "
            "only allowed on 127.0.0.1"
        )
    if config.websockets_port is not None:
        raise UnsafeConfig(
            "--websockets-port needs --auth: Mosquitto 2.0 binds the WebSockets listener "
            "on all interfaces, and anonymous access is only allowed on 127.0.0.1"
        )


def _tls_block(config: BrokerConfig) -> str:
    """Listener lines that turn the listener above them into TLS only."""
    if config.tls_dir is None:
        return ""
    tls = config.tls_dir.resolve()
    if " " in str(tls):
        raise ValueError(f"Mosquitto cannot use a TLS folder with spaces: {tls}")
    return (
        f"cafile {tls / CA_CERT}\n"
        f"certfile {tls / SERVER_CERT}\n"
        f"keyfile {tls / SERVER_KEY}\n"
        "tls_version tlsv1.2\n"
        # true: a client must show a certificate signed by the CA (on top of any password).
        f"require_certificate {str(config.require_client_cert).lower()}\n"
    )


def find_dynsec_plugin() -> Path:
    """The dynamic security plugin's path, or :class:`MosquittoMissing`."""
    explicit = os.environ.get("REPEDGE_MOSQUITTO_DYNSEC")
    candidates = [Path(explicit)] if explicit else []
    for pattern in _PLUGIN_DIRS:
        candidates += sorted(Path("/").glob(f"{pattern.lstrip('/')}/{DYNSEC_PLUGIN}"))
    for path in candidates:
        if path.is_file():
            return path
    raise MosquittoMissing(
        f"--auth needs Mosquitto's {DYNSEC_PLUGIN} (Mosquitto 2.0 or later) to check "
        "subscriptions and share groups; not found in /usr/lib (set REPEDGE_MOSQUITTO_DYNSEC "
        f"to its path); {INSTALL_HINT}"
    )


def render_config(config: BrokerConfig) -> str:
    """The mosquitto.conf text for ``config`` (paths must not contain spaces)."""
    check_exposure(config)
    data_dir = config.data_dir.resolve()
    if " " in str(data_dir):
        raise ValueError(f"Mosquitto cannot use a data folder with spaces: {data_dir}")
    if config.auth:
        auth_block = (
            "allow_anonymous false\n"
            f"password_file {data_dir / PASSWORD_FILE}\n"
            f"acl_file {data_dir / ACL_FILE}\n"
            "# A client's session is named after its user, whatever client id it sends:\n"
            "# nobody can connect as a node's session and wipe its queued tweets.\n"
            "use_username_as_clientid true\n"
            "# Who may SUBSCRIBE to what, share groups included (the acl file cannot say):\n"
            "# generated from the roles like the acl; users have no password here.\n"
            f"plugin {find_dynsec_plugin()}\n"
            f"plugin_opt_config_file {data_dir / SUBSCRIBE_RULES_FILE}\n"
        )
    else:
        auth_block = (
            "# No authentication (start with --auth to require users).\nallow_anonymous true\n"
        )
    tls_block = _tls_block(config)
    if config.websockets_port is not None:
        websockets_block = (
            "\n# WebSockets. Mosquitto 2.0 binds this listener on ALL interfaces, whatever\n"
            "# address is given: firewall it if the machine is reachable from outside.\n"
            f"listener {config.websockets_port}\n"
            "protocol websockets\n"
            f"{tls_block}"
        )
    else:
        websockets_block = "# WebSockets listener: off (start with --websockets-port N).\n"
    template = Template(resources.files("broker").joinpath(TEMPLATE).read_text(encoding="utf-8"))
    text = template.substitute(
        user=_current_user(),
        port=config.port,
        host=config.host,
        data_dir=data_dir,
        websockets_block=websockets_block,
        tls_block=tls_block or "# TLS: off (start with --tls DIR, see `broker certs`).\n",
        autosave_on_changes=str(config.autosave_on_changes).lower(),
        auth_block=auth_block,
        autosave_interval=config.autosave_interval,
        session_expiration=config.session_expiration,
        max_queued_messages=config.max_queued_messages,
        max_queued_bytes=config.max_queued_bytes,
        max_inflight_messages=config.max_inflight_messages,
    )
    # Bridge options must come last: Mosquitto reads them as part of the `connection`.
    return text + render_bridge(config.bridge) if config.bridge else text


def write_config(config: BrokerConfig) -> Path:
    """Create the data folder, write mosquitto.conf (and the ACL) into it."""
    check_exposure(config)
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if config.auth:
        # Regenerated from the roles on every start: no stale catch-all rule survives.
        write_acl(config.data_dir, config.acl_file, config.tweets_topic)
        if not config.password_file.exists():
            # Mosquitto refuses to start on a missing password file; an empty one admits nobody.
            config.password_file.touch(mode=0o600)
    config.config_path.write_text(render_config(config), encoding="utf-8")
    return config.config_path


def find_program(name: str, explicit: str | os.PathLike[str] | None = None) -> str:
    """Path of a Mosquitto program, or :class:`MosquittoMissing` with an install hint."""
    if explicit is not None:
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise MosquittoMissing(f"{path} is not an executable {name}; {INSTALL_HINT}")
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_BIN_DIRS])
    found = shutil.which(name, path=search)
    if found is None:
        raise MosquittoMissing(f"{name} is not installed; {INSTALL_HINT}")
    return found
