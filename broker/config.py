"""Render repedge's Mosquitto configuration from the packaged template.

`broker start` and the test suite both go through :func:`write_config`, so the tests run
the exact configuration users get.
"""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

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

# Every authenticated user may use the repedge topics; edit the rendered acl file to
# narrow this down per user (`user NAME` sections, see `man mosquitto.conf`).
DEFAULT_ACL = """\
# repedge access control list (mosquitto acl_file format).
# `pattern` rules apply to every client; plain `topic` rules before any `user` line
# would apply to anonymous clients only. %c = client id, %u = user name.
pattern readwrite repedge/#
# Monitoring tools may read the broker's own statistics.
pattern read $SYS/#
# Example, a user that may only send tweets and read labels:
# user dashboard
# topic write repedge/tweets
# topic read repedge/labels
"""


class MosquittoMissing(RuntimeError):
    """A Mosquitto program is not installed."""


def default_data_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "repedge" / "broker"


@dataclass(frozen=True)
class BrokerConfig:
    data_dir: Path
    port: int = 1883
    host: str = "127.0.0.1"
    websockets_port: int | None = None
    auth: bool = False
    # ~1.5 h of 100 tweets/s for one offline node; bytes cap protects the broker's RAM.
    max_queued_messages: int = 500_000
    max_queued_bytes: int = 256 * 1024 * 1024
    max_inflight_messages: int = 100
    autosave_interval: int = 60
    session_expiration: str = "14d"

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


def render_config(config: BrokerConfig) -> str:
    """The mosquitto.conf text for ``config`` (paths must not contain spaces)."""
    data_dir = config.data_dir.resolve()
    if " " in str(data_dir):
        raise ValueError(f"Mosquitto cannot use a data folder with spaces: {data_dir}")
    if config.auth:
        auth_block = (
            "allow_anonymous false\n"
            f"password_file {data_dir / PASSWORD_FILE}\n"
            f"acl_file {data_dir / ACL_FILE}\n"
        )
    else:
        auth_block = (
            "# No authentication (start with --auth to require users).\nallow_anonymous true\n"
        )
    if config.websockets_port is not None:
        websockets_block = (
            "\n# WebSockets. Mosquitto 2.0 binds this listener on ALL interfaces, whatever\n"
            "# address is given: firewall it if the machine is reachable from outside.\n"
            f"listener {config.websockets_port}\n"
            "protocol websockets\n"
        )
    else:
        websockets_block = "# WebSockets listener: off (start with --websockets-port N).\n"
    template = Template(resources.files("broker").joinpath(TEMPLATE).read_text(encoding="utf-8"))
    return template.substitute(
        user=_current_user(),
        port=config.port,
        host=config.host,
        data_dir=data_dir,
        websockets_block=websockets_block,
        auth_block=auth_block,
        autosave_interval=config.autosave_interval,
        session_expiration=config.session_expiration,
        max_queued_messages=config.max_queued_messages,
        max_queued_bytes=config.max_queued_bytes,
        max_inflight_messages=config.max_inflight_messages,
    )


def write_config(config: BrokerConfig) -> Path:
    """Create the data folder, write mosquitto.conf (and a default ACL) into it."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if config.auth:
        if not config.acl_file.exists():
            config.acl_file.write_text(DEFAULT_ACL, encoding="utf-8")
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
