"""The tweets behind a point of the history chart, asked of the nodes that keep them.

Label records carry no text; a node keeps the most recent texts per entity in its teach
store (node/teachstore.py) and lists them by time over the teach protocol (op ``texts``,
node/teach.py). So the dashboard relays a click to every online node it has seen, with its
teach client, and merges the answers. Who may read texts is the broker's decision: a
dashboard whose broker user lacks the ``teach`` (or ``admin``) role gets a refusal, and
the page says so.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

from node.teach_client import TeachClient, TeachClientError, TeachNotAllowed

LIMIT = 50  # tweets shown per click; the answer says how many matched in all
NODE_TIMEOUT_S = 5.0  # per node, asked in parallel: one silent node costs the click this
MAX_NODES = 16


class TweetsUnavailable(Exception):
    """No tweets to show, and why (one line for the page), with the HTTP status."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.NOT_FOUND) -> None:
        super().__init__(message)
        self.status = status


# (entity, start, end, label, related) -> {"tweets", "total", "note", ...}
TweetsSource = Callable[[str, float, float, str | None, bool | None], dict[str, Any]]


class NodeTexts:
    """A :data:`TweetsSource` over the teach protocol."""

    def __init__(
        self,
        client: TeachClient,
        node_ids: Callable[[], list[str]],
        timeout: float = NODE_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.node_ids = node_ids
        self.timeout = timeout

    def __call__(
        self,
        entity: str,
        start: float,
        end: float,
        label: str | None = None,
        related: bool | None = None,
    ) -> dict[str, Any]:
        nodes = self.node_ids()[:MAX_NODES]
        if not nodes:
            raise TweetsUnavailable(
                "no node is online: tweet texts stay on the nodes that labelled them"
            )
        query: dict[str, Any] = {"entity": entity, "from": start, "to": end, "limit": LIMIT}
        if label is not None:
            query["label"] = label
        if related is not None:
            query["related"] = related

        def ask(node: str) -> tuple[str, dict[str, Any] | Exception]:
            try:
                return node, self.client.request(node, "texts", self.timeout, **query)
            except TeachClientError as exc:
                return node, exc

        with ThreadPoolExecutor(min(len(nodes), 8), thread_name_prefix="texts") as pool:
            answers = list(pool.map(ask, nodes))
        if any(isinstance(a, TeachNotAllowed) for _, a in answers):
            raise TweetsUnavailable(
                "this dashboard's broker user may not read tweet texts: only the teach and "
                "admin roles may (`broker users add NAME --role teach`, then "
                "`dashboard serve --username NAME`)",
                HTTPStatus.FORBIDDEN,
            )
        ok = {node: a for node, a in answers if isinstance(a, dict)}
        failed = {node: str(a) for node, a in answers if isinstance(a, Exception)}
        if not ok:
            raise TweetsUnavailable(
                "no node answered: " + "; ".join(failed.values()), HTTPStatus.BAD_GATEWAY
            )
        tweets = [
            {**tweet, "node": node} for node, a in ok.items() for tweet in a.get("tweets", [])
        ]
        tweets.sort(key=lambda t: (t.get("at") or 0, t.get("node"), t.get("id")))
        return {
            "entity": entity,
            "tweets": tweets[:LIMIT],
            "total": sum(int(a.get("total", 0)) for a in ok.values()),
            "note": _note(ok, failed, start, bool(tweets)),
            "nodes": sorted(ok),
            "unanswered": failed,
        }


def _note(ok: dict[str, dict[str, Any]], failed: dict[str, str], start: float, found: bool) -> str:
    """Why the list is empty (or partial), in one line."""
    parts = []
    if not found:
        if not any(a.get("keeps_texts") for a in ok.values()):
            parts.append("no node keeps texts (they run with --texts-per-entity 0)")
        elif not any(a.get("kept") for a in ok.values()):
            parts.append("no node keeps texts of this entity")
        else:
            oldest = [a["oldest"] for a in ok.values() if a.get("oldest") is not None]
            if oldest and start < min(oldest):
                parts.append(
                    "the nodes keep only the most recent texts per entity, and this point is "
                    "older than the oldest they keep"
                )
            else:
                parts.append("no kept text in this bucket")
    if failed:
        parts.append(f"{len(failed)} node(s) did not answer: {', '.join(sorted(failed))}")
    return "; ".join(parts)
