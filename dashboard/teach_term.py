"""`dashboard teach`: the Teach view in a terminal, for headless sites (and scripts).

One tweet at a time, one line per answer: 1 negative, 2 neutral, 3 positive, 0 not about
the brand, s skip, z undo, a adapt, q quit. It reads lines rather than raw keys, so it
works over ssh, on a serial console and from a pipe. Same protocol as the web view
(node/teach.py); texts are printed with control characters made visible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from common.text import InertWriter, inert
from node.teach_client import TeachClient, TeachClientError

KEYS = {"1": "negative", "2": "neutral", "3": "positive", "0": "unrelated", "s": "skip"}
HELP = "1 negative  2 neutral  3 positive  0 not about the brand  s skip  z undo  a adapt  q quit"


def _accuracy(acc: dict[str, Any] | None) -> str:
    if not acc:
        return "-"
    return f"{acc['accuracy']:.1%} ({acc['low']:.1%}-{acc['high']:.1%}, n={acc['total']})"


def _stats(out: TextIO, stats: dict[str, Any]) -> None:
    counts, cur, cv = stats["counts"], stats["current_model"], stats["adapted_cv"]
    out.write(
        f"labels {counts['labels']}  skipped {counts['skipped']}  left {counts['remaining']}\n"
        f"  current model: polarity {_accuracy(cur['polarity'])}, "
        f"about the brand {_accuracy(cur['related'])}\n"
        f"  adapted head (cross-validated): polarity {_accuracy(cv.get('polarity'))}, "
        f"about the brand {_accuracy(cv.get('related'))}\n"
    )


def run(client: TeachClient, node: str, entity: str, read: Callable[[], str], out: TextIO) -> int:
    """The loop; returns the number of labels given (skips not counted)."""
    out = InertWriter(out)  # type: ignore[assignment]  # replies come from MQTT: no escapes
    given = 0
    reply = client.request(node, "next", entity=entity)
    out.write(HELP + "\n")
    while True:
        _stats(out, reply)
        tweet = reply.get("tweet")
        if tweet is None:
            out.write("no tweet left to label for this entity\n")
        else:
            scores = ", ".join(f"{k} {v:.0%}" for k, v in tweet["scores"].items())
            out.write(f"\n  {inert(tweet['text'])}\n  model: {tweet['label']} ({scores})\n")
        out.write("> ")
        out.flush()
        line = read()
        if not line:  # end of input
            return given
        key = line.strip().lower()[:1]
        try:
            if key == "q":
                return given
            if key == "z":
                reply = client.request(node, "undo", entity=entity)
                undone = reply.get("undone")
                if undone and undone["answer"] != "skip":
                    given -= 1
                if reply.get("tweet") is None:
                    reply = client.request(node, "next", entity=entity)
                continue
            if key == "a":
                result = client.request(node, "adapt", entity=entity)
                out.write(f"{result['reason']} ({result['seconds']} s)\n{result['summary']}\n")
                reply = client.request(node, "next", entity=entity)
                continue
            if key in KEYS and tweet is not None:
                client.request(node, "answer", entity=entity, digest=tweet["digest"],
                               answer=KEYS[key])  # fmt: skip
                given += key != "s"
                reply = client.request(node, "next", entity=entity)
                continue
            out.write(HELP + "\n")
        except TeachClientError as exc:
            out.write(f"error: {exc}\n")
