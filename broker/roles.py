"""Who may do what on the broker: one role per user, rendered into Mosquitto's acl file.

Roles live in ``DATA_DIR/roles`` (``name role`` per line). The ``acl`` file is generated from
them on every `broker users add|remove` and `broker start --auth`, so narrowing a user's
rights is one command and no catch-all rule can widen them again. Hand-written rules go in
``acl.local``, which is appended verbatim.

With ``--auth`` the broker also sets ``use_username_as_clientid``: a client's session is
named after its user, so nobody can connect under a node's client id and wipe its queue.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from common import topics
from common.hass import object_id

ROLES = ("node", "feeder", "dashboard", "view", "teach", "site", "admin")
ROLES_FILE = "roles"
LOCAL_ACL_FILE = "acl.local"
# The tweets topic the broker was last started with (`broker start --tweets-topic`): the
# acl is regenerated from it on every `broker users add|remove` too.
TWEETS_TOPIC_FILE = "tweets-topic"

# The teach exchange of node/teach.py: requests from teach users, responses with texts.
TEACH_TOPICS = "repedge/nodes/+/teach/#"
TEACH_REQUESTS = "repedge/nodes/+/teach/request"
TEACH_RESPONSES = "repedge/nodes/+/teach/response/#"
# Discovery configs of the alert sensors (dashboard/alert_monitor.py: HA_NODE level).
HA_ALERTS_DISCOVERY = f"{topics.HA_DISCOVERY_PREFIX}/+/repedge_alerts/#"

# A node user's name is its node id and appears in topic filters: keep it topic-safe.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class RoleError(ValueError):
    """An unknown role or a user name that cannot be used in the acl file."""


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise RoleError(
            f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(a node user's name is its node id and appears in topic names)"
        )


def check_role(role: str) -> None:
    if role not in ROLES:
        raise RoleError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def ha_object_prefix(node_id: str) -> str:
    """The node level of the node's Home Assistant discovery topics (repedge_<id>, made
    of [a-zA-Z0-9_-]): common/hass.py's rule, the node's own, so the ACL always matches it."""
    return object_id(node_id)


def rules_for(name: str, role: str, tweets: str = topics.TWEETS) -> list[str]:
    """The acl lines of one user (Mosquitto denies whatever is not listed); ``tweets`` is
    the tweets topic the nodes read (`node start --tweets-topic`)."""
    check_role(role)
    if role == "node":
        return [
            # Tweets, directly or through a share group ($share/GROUP/<tweets topic>).
            f"topic read {tweets}",
            f"topic read {topics.any_share(tweets)}",
            # Home Assistant's birth message: the cue to re-send discovery configs.
            "topic read homeassistant/status",
            "topic write repedge/labels",
            "topic write repedge/errors",
            # Its own status (and Last Will), telemetry and events; nobody else's.
            f"topic readwrite repedge/nodes/{name}/#",
            f"topic readwrite homeassistant/+/{ha_object_prefix(name)}/#",
        ]
    if role == "feeder":
        return [f"topic write {tweets}"]
    view = ["topic read repedge/#", "topic read homeassistant/status", "topic read $SYS/#"]
    # A dashboard publishes the spike alerts it evaluates and their Home Assistant
    # discovery (dashboard/alert_monitor.py); a view only reads.
    alerts = [f"topic write {topics.ALERTS}/#", f"topic write {HA_ALERTS_DISCOVERY}"]
    if role == "view":
        # Everything a dashboard shows, never a text a node kept for teaching: the teach
        # exchange is denied explicitly (Mosquitto checks deny rules before grants), as it
        # sits under repedge/, which this role may otherwise read.
        return [f"topic deny {TEACH_TOPICS}", *view]
    if role == "dashboard":
        return [f"topic deny {TEACH_TOPICS}", *view, *alerts]
    if role == "teach":
        # A dashboard that may also teach: ask nodes for texts and send them labels.
        return [*view, *alerts, f"topic write {TEACH_REQUESTS}", f"topic read {TEACH_RESPONSES}"]
    if role == "site":
        # A site broker's bridge at a central broker (broker/bridge.py): its user name is
        # the site name. It forwards under sites/<site>/ and may take tweets addressed to
        # the site or shared among sites.
        return [
            f"topic write {topics.site_prefix(name)}{topics.EVERYTHING}",
            f"topic read {topics.site_prefix(name)}{tweets}",
            f"topic read {tweets}",
            f"topic read {topics.any_share(tweets)}",
        ]
    return ["topic readwrite #", "topic readwrite $share/#", "topic read $SYS/#"]  # admin


def read_roles(data_dir: Path) -> dict[str, str]:
    path = data_dir / ROLES_FILE
    if not path.exists():
        return {}
    roles: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            roles[parts[0]] = parts[1]
    return roles


def _write_private(path: Path, text: str) -> None:
    """Write atomically, 0600: a half-written acl must never be what Mosquitto reads."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_roles(data_dir: Path, roles: dict[str, str]) -> None:
    lines = ["# repedge broker roles: NAME ROLE (managed by `broker users add --role`)"]
    lines += [f"{name} {role}" for name, role in sorted(roles.items())]
    _write_private(data_dir / ROLES_FILE, "\n".join(lines) + "\n")


def render_acl(roles: dict[str, str], local: str = "", tweets: str = topics.TWEETS) -> str:
    out = [
        "# Generated by repedge's `broker` from the roles file; do not edit (it is rewritten).",
        "# Put hand-written rules in acl.local next to this file: it is appended below.",
        "# Everything not granted here is denied.",
    ]
    for name, role in sorted(roles.items()):
        out += ["", f"# role {role}", f"user {name}", *rules_for(name, role, tweets)]
    if local.strip():
        out += ["", "# --- acl.local ---", local.rstrip()]
    return "\n".join(out) + "\n"


def set_role(data_dir: Path, acl_file: Path, name: str, role: str | None) -> None:
    """Give ``name`` a role (None: forget it), then regenerate the acl file."""
    roles = read_roles(data_dir)
    if role is None:
        roles.pop(name, None)
    else:
        check_name(name)
        check_role(role)
        roles[name] = role
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_roles(data_dir, roles)
    write_acl(data_dir, acl_file)


def write_acl(data_dir: Path, acl_file: Path, tweets: str | None = None) -> None:
    """Regenerate the acl; ``tweets`` (given by `broker start`) is remembered in the data
    folder for the regenerations of `broker users add|remove`."""
    remembered = data_dir / TWEETS_TOPIC_FILE
    if tweets is not None:
        _write_private(remembered, tweets + "\n")
    elif remembered.exists():
        tweets = remembered.read_text(encoding="utf-8").strip()
    local_path = data_dir / LOCAL_ACL_FILE
    local = local_path.read_text(encoding="utf-8") if local_path.exists() else ""
    _write_private(acl_file, render_acl(read_roles(data_dir), local, tweets or topics.TWEETS))
