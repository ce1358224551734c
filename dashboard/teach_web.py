"""The Teach view of `dashboard serve`: the page at ``/teach`` and its JSON routes, which
relay to a node's teach protocol (node/teach.py) over MQTT.

The texts and labels stay on the node: this process asks for one tweet at a time and
forwards each answer. Its broker user needs the ``teach`` role; with a view-only user the
node never sees the requests and the page says so.

Routes (``node`` and ``entity`` as query parameters or JSON fields):

* ``GET /api/teach/nodes``: node ids the dashboard has seen;
* ``GET /api/teach/entities?node=N``; ``GET /api/teach/next?node=N&entity=E``;
* ``POST /api/teach/answer`` ``{node, entity, digest, answer}``, ``/undo``, ``/adapt``;
* ``GET /api/teach/export.tsv?node=N[&entity=E]``: the labels as TSV.

POSTs must carry ``X-Repedge: teach`` and a JSON body: a custom header makes a browser
preflight a cross-site request, which this server never allows, so no other page can
label through a user's open dashboard.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from common.httpserver import Request, Response, Route
from dashboard.history_web import json_response
from node.teach_client import TeachClient, TeachClientError

log = logging.getLogger("repedge.dashboard")

QUICK_TIMEOUT_S = 10.0
ADAPT_TIMEOUT_S = 60.0


def _fields(request: Request) -> dict[str, Any]:
    fields: dict[str, Any] = {k: v[0] for k, v in request.query.items() if v}
    if request.method == "POST":
        if request.headers.get("x-repedge") != "teach":
            raise PermissionError("missing X-Repedge: teach header")
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise ValueError("the body must be JSON") from None
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        fields |= body
    return fields


def teach_routes(client: TeachClient | None, node_ids: Callable[[], list[str]]) -> dict[str, Route]:
    def relay(op: str, timeout: float = QUICK_TIMEOUT_S, keep: tuple[str, ...] = ()) -> Route:
        def handle(request: Request) -> Response:
            try:
                fields = _fields(request)
            except PermissionError as exc:
                return json_response({"error": str(exc)}, HTTPStatus.FORBIDDEN)
            except ValueError as exc:
                return json_response({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
            if client is None:
                return json_response(
                    {"error": "this dashboard was started without a broker user to teach with"},
                    HTTPStatus.SERVICE_UNAVAILABLE,
                )
            node = fields.get("node")
            if not isinstance(node, str) or not node:
                return json_response({"error": "give a node"}, HTTPStatus.BAD_REQUEST)
            args = {k: fields[k] for k in ("entity", *keep) if k in fields}
            if op == "next" and isinstance(args.get("exclude"), str):
                args["exclude"] = [d for d in args["exclude"].split(",") if d]
            try:
                answer = client.request(node, op, timeout, **args)
            except TeachClientError as exc:
                return json_response({"error": str(exc)}, HTTPStatus.BAD_GATEWAY)
            if op == "export":
                return Response(
                    HTTPStatus.OK,
                    answer.get("tsv", "").encode(),
                    "text/tab-separated-values; charset=utf-8",
                    {"Content-Disposition": 'attachment; filename="labels.tsv"'},
                )
            return json_response(answer)

        post = op in ("answer", "undo", "adapt", "rollback")
        return Route(handle, methods=("POST",) if post else ("GET", "HEAD"))

    return {
        "/teach": Route(lambda r: _page(r), inline=True),
        "/api/teach/nodes": Route(lambda _r: json_response({"nodes": node_ids()})),
        "/api/teach/entities": relay("entities"),
        "/api/teach/next": relay("next", keep=("exclude",)),
        "/api/teach/answer": relay("answer", keep=("digest", "answer")),
        "/api/teach/undo": relay("undo"),
        "/api/teach/adapt": relay("adapt", ADAPT_TIMEOUT_S),
        "/api/teach/export.tsv": relay("export"),
    }


_PAGE: bytes | None = None


def _page(_request: Request) -> Response:
    global _PAGE
    if _PAGE is None:
        from importlib import resources

        _PAGE = (resources.files("dashboard") / "static" / "teach.html").read_bytes()
    return Response(HTTPStatus.OK, _PAGE, "text/html; charset=utf-8")
