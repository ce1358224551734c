"""Who may do what on the broker: one role per user, rendered into Mosquitto's acl file.

Roles live in ``DATA_DIR/roles`` (``name role [share group]`` per line). Two files are
generated from them on every `broker users add|remove` and `broker start --auth`, so
narrowing a user's rights is one command and no catch-all rule can widen them again:

* ``acl``: Mosquitto's acl file, what each user may publish and receive. Hand-written
  rules go in ``acl.local``, which is appended verbatim.
* ``dynamic-security.json``: what each user may SUBSCRIBE to, for Mosquitto's dynamic
  security plugin. Mosquitto 2.0's acl file grants every SUBSCRIBE (its source says
  "FIXME - implement ACL subscription strings") and checks only the topic of each message
  it delivers, never the share group it came through: any user who may read the tweets
  could join the nodes' share group and be dealt their tweets. The plugin sees the whole
  filter, ``$share/GROUP/...`` included. Its users have no password (it then defers the
  login to ``passwd``) and only subscription rules (it defers everything else to ``acl``).
  A node user is pinned to exactly the filters a node subscribes: one tweets filter (its
  share group's, or the plain topic), ``homeassistant/status`` and its own subtree; a
  tool connecting with the node's credentials cannot add an overlapping filter to the
  node's session, which would deliver every tweet twice.

With ``--auth`` the broker also sets ``use_username_as_clientid``: a client's session is
named after its user, so nobody can connect under a node's client id and wipe its queue.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from common import topics
from common.hass import object_id

ROLES = ("node", "feeder", "dashboard", "view", "teach", "site", "admin")
ROLES_FILE = "roles"
SUBSCRIBE_RULES_FILE = "dynamic-security.json"
# The share group of the sites' bridges at a central broker (broker/bridge.py, --bridge-tweets-in
# shared). Kept here, not imported, because broker/bridge.py is imported after this module.
SITES_SHARE_GROUP = "repedge-sites"
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


def check_share_group(role: str, group: str | None) -> None:
    """A share group is a node's (``node start --share-group``) and topic-safe."""
    if group is None:
        return
    if role != "node":
        raise RoleError(f"--share-group is for node users, not {role}")
    if not _NAME.fullmatch(group):
        raise RoleError(f"invalid share group {group!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if group == SITES_SHARE_GROUP:
        raise RoleError(f"{group!r} is the sites' share group; choose another for nodes")


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise RoleError(
            f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(a node user's name is its node id and appears in topic names)"
        )


def check_role(role: str) -> None:
    if role not in ROLES:
        raise RoleError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def check_node_name(name: str, role: str) -> None:
    """A node's discovery configs live under ``homeassistant/+/<object id>/``; the alert
    sensors' under ``repedge_alerts`` (dashboard role): a node whose object id is that one
    could forge the alerts' configs, and a dashboard the node's."""
    if role == "node" and ha_object_prefix(name) == ha_object_prefix("alerts"):
        raise RoleError(f"node user {name!r} would own the alert sensors' discovery topics")


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


def _role_lines(data_dir: Path) -> list[list[str]]:
    path = data_dir / ROLES_FILE
    if not path.exists():
        return []
    lines = (line.split() for line in path.read_text(encoding="utf-8").splitlines())
    return [parts for parts in lines if len(parts) in (2, 3) and not parts[0].startswith("#")]


def read_roles(data_dir: Path) -> dict[str, str]:
    return {parts[0]: parts[1] for parts in _role_lines(data_dir)}


def read_share_groups(data_dir: Path) -> dict[str, str]:
    """Node user -> the share group it was registered with (`users add --share-group`)."""
    return {parts[0]: parts[2] for parts in _role_lines(data_dir) if len(parts) == 3}


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


def write_roles(
    data_dir: Path, roles: dict[str, str], groups: dict[str, str] | None = None
) -> None:
    groups = groups or {}
    lines = [
        "# repedge broker roles: NAME ROLE [SHARE GROUP] (managed by `broker users add --role`)"
    ]
    lines += [
        " ".join([name, role, *([groups[name]] if name in groups else [])])
        for name, role in sorted(roles.items())
    ]
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


def set_role(
    data_dir: Path, acl_file: Path, name: str, role: str | None, share_group: str | None = None
) -> None:
    """Give ``name`` a role (None: forget it) and, for a node, the share group it joins
    (None: it reads the tweets topic directly); then regenerate the acl and subscribe rules."""
    roles = read_roles(data_dir)
    groups = read_share_groups(data_dir)
    groups.pop(name, None)
    if role is None:
        roles.pop(name, None)
    else:
        check_name(name)
        check_role(role)
        check_node_name(name, role)
        check_share_group(role, share_group)
        roles[name] = role
        if share_group is not None:
            groups[name] = share_group
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_roles(data_dir, roles, groups)
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
    roles = read_roles(data_dir)
    _write_private(acl_file, render_acl(roles, local, tweets or topics.TWEETS))
    rules = render_subscribe_rules(roles, read_share_groups(data_dir), tweets or topics.TWEETS)
    _write_private(data_dir / SUBSCRIBE_RULES_FILE, rules)


def subscribe_rules_for(
    name: str, role: str, group: str | None, tweets: str = topics.TWEETS
) -> list[tuple[str, bool]]:
    """``(topic filter pattern, allowed)`` for one user's SUBSCRIBEs, first match wins;
    what matches none is left to the acl file (which grants it and filters deliveries)."""
    if role == "admin":
        return []
    if role == "node":
        tweets_filter = topics.shared(group, tweets) if group else tweets
        return [
            (tweets_filter, True),
            (topics.HA_STATUS, True),
            (topics.node_subtree(name), True),
            ("#", False),  # any other filter could overlap these and double a delivery
            ("$share/#", False),
        ]
    if role == "site":
        return [(topics.shared(SITES_SHARE_GROUP, tweets), True), ("$share/#", False)]
    return [("$share/#", False)]  # feeder, dashboard, view, teach: no share group


def render_subscribe_rules(
    roles: dict[str, str], groups: dict[str, str], tweets: str = topics.TWEETS
) -> str:
    """The dynamic security plugin's config: one client (no password) and one role per user."""
    clients, plugin_roles = [], []
    for name, role in sorted(roles.items()):
        rules = subscribe_rules_for(name, role, groups.get(name), tweets)
        if not rules:
            continue
        rolename = f"subscribe-{name}"
        clients.append({"username": name, "roles": [{"rolename": rolename}]})
        # The plugin checks a role's rules from the highest priority down.
        acls = [
            {"acltype": "subscribePattern", "topic": topic, "allow": allow, "priority": -i}
            for i, (topic, allow) in enumerate(rules)
        ]
        plugin_roles.append({"rolename": rolename, "acls": acls})
    config = {
        # Everything not decided here goes on to the acl file (MOSQ_ERR_PLUGIN_DEFER).
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": False,
        },
        "clients": clients,
        "groups": [],
        "roles": plugin_roles,
    }
    return json.dumps(config, indent=2) + "\n"
