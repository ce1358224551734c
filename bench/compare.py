"""The same model on two devices, tweet by tweet: `node bench` accuracy says the same
numbers come out; this says the same tweets get the same labels, and how far logits drift.

    python -m bench.compare dump --model M [--data F --sample N]... --out A.json
    python -m bench.compare mqtt --broker URL --prefix P --inputs A.json --out B.json
    python -m bench.compare compare A.json B.json [--out S.json]

``dump`` classifies the canary tweets (provisioning's defaults) and seeded samples of
labelled files, one tweet per call (no padding, so batch shape cannot differ), and keeps
the logits. ``mqtt`` sends a dump's tweets to a running node and records its label records.
``compare`` counts identical labels per set and the largest logit difference; its summary
holds no tweet text (data sets may not be redistributed).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def dump(model: Path, data: list[Path], sample: int) -> dict[str, Any]:
    from bench.tweets import labelled_tweets
    from edgemodel.canaries import DEFAULT_CANARIES
    from edgemodel.inference import Classifier, EmptyTextError

    classifier = Classifier.from_path(model, num_threads=1)
    items = [{"set": "canaries", "text": t, "entity": None} for t in DEFAULT_CANARIES]
    for path in data:
        tweets = labelled_tweets(path, sample=sample)
        items += [
            {"set": path.name, "text": t, "entity": e}
            for t, e in zip(tweets.texts, tweets.entities, strict=True)
        ]
    for item in items:
        try:
            encoded = classifier.encode(item["text"], item["entity"])
        except EmptyTextError:
            item["label"] = None
            continue
        logits = classifier.predict_logits([encoded])[0]
        item["logits"] = [float(x) for x in logits]
        item["label"] = classifier.labels[int(np.argmax(logits))]
    return {"model": classifier.describe(), "items": items}


def via_mqtt(
    broker: str, prefix: str, inputs: dict[str, Any], timeout: float, node_id: str | None
) -> dict[str, Any]:
    """Publish every tweet of a dump to ``prefix/tweets``, once node ``node_id`` (if given)
    says it is online; collect ``prefix/labels`` and ``prefix/errors`` records until each
    tweet has one."""
    from common import topics as wire
    from common.endpoint import BrokerEndpoint
    from common.mqttclient import new_client

    endpoint = BrokerEndpoint.parse(broker)  # mqtt:// or mqtts://, as `node start` takes it
    records: dict[str, dict] = {}
    done = threading.Condition()
    subscribed = threading.Event()

    online = threading.Event()
    status = wire.node_topic(node_id or "", wire.STATUS)

    def on_message(client, userdata, msg) -> None:
        record = json.loads(msg.payload)
        if msg.topic == status:
            if record.get("state") == "online":
                online.set()
            return
        with done:
            records.setdefault(record.get("id", ""), record)
            done.notify_all()

    client = new_client(endpoint)
    topics = [(f"{prefix}/labels", 1), (f"{prefix}/errors", 1), (status, 1)]
    client.on_connect = lambda c, *a: c.subscribe(topics)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    client.connect(*endpoint.address)
    client.loop_start()
    subscribed.wait(30)
    if node_id and not online.wait(timeout):
        raise RuntimeError(f"node {node_id} did not come online on {broker}")
    items = inputs["items"]
    for k, item in enumerate(items):
        body = {"id": f"t{k}", "text": item["text"]}
        if item["entity"]:
            body["entity"] = item["entity"]
        client.publish(f"{prefix}/tweets", json.dumps(body), qos=1)
    deadline = time.monotonic() + timeout
    with done:
        while len(records) < len(items) and time.monotonic() < deadline:
            done.wait(1.0)
    client.disconnect()
    client.loop_stop()
    out = []
    for k, item in enumerate(items):
        record = records.get(f"t{k}", {})
        out.append({**item, "label": record.get("label"), "record": record})
    return {"model": records and next(iter(records.values())).get("model"), "items": out}


def compare(ref: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Per set: tweets, identical labels, largest |logit difference| where both have logits,
    and each disagreement's reference margin (top-1 minus top-2 logit)."""
    a, b = ref["items"], other["items"]
    if [x["text"] for x in a] != [x["text"] for x in b]:
        raise ValueError("the two files do not hold the same tweets in the same order")
    sets: dict[str, dict[str, Any]] = {}
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        s = sets.setdefault(x["set"], {"tweets": 0, "same_label": 0, "max_abs_logit_diff": 0.0,
                                       "differences": []})  # fmt: skip
        s["tweets"] += 1
        if x["label"] == y["label"]:
            s["same_label"] += 1
        else:
            top = sorted(x.get("logits") or [0.0, 0.0])[::-1]
            s["differences"].append(
                {"index": k, "reference": x["label"], "other": y["label"],
                 "reference_margin": top[0] - top[1]}
            )  # fmt: skip
        if x.get("logits") and y.get("logits"):
            diff = float(np.max(np.abs(np.subtract(x["logits"], y["logits"]))))
            s["max_abs_logit_diff"] = max(s["max_abs_logit_diff"], diff)
    return {
        "sets": sets,
        "all_identical": all(s["same_label"] == s["tweets"] for s in sets.values()),
    }


def tolerance_lines(summary: dict[str, Any]) -> list[str]:
    """What the comparison shows, in words: identical, or differing only on near ties."""
    sets = summary["sets"].values()
    total = sum(s["tweets"] for s in sets)
    same = sum(s["same_label"] for s in sets)
    drift = max(s["max_abs_logit_diff"] for s in sets)
    diffs = [d for s in sets for d in s["differences"]]
    lines = [f"- {same} of {total} tweets get the same label; the largest difference of any "
             f"logit between the two is {drift:.3g}."]  # fmt: skip
    if not diffs:
        return lines
    margins = ", ".join(f"{d['reference_margin']:.3g}" for d in diffs)
    ties = all(d["reference_margin"] <= 2 * drift for d in diffs)
    lines.append(
        f"- The {len(diffs)} that differ are near ties on the reference side (top-1 minus "
        f"top-2 logit: {margins})"
        + (", each within twice the largest logit difference: the labels agree within the "
           "stated tolerance (logits within the drift above; labels identical except where "
           "the reference's top two logits are closer than twice that drift)."
           if ties else ": NOT all explained by the drift; see the differences in the JSON.")
    )  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dump")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, action="append", default=[])
    p.add_argument("--sample", type=int, default=300)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("mqtt")
    p.add_argument("--broker", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--inputs", type=Path, required=True)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--node-id", help="wait until this node's status says online")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("compare")
    p.add_argument("reference", type=Path)
    p.add_argument("other", type=Path)
    p.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    def read(path: Path) -> dict[str, Any]:
        return json.loads(path.read_text(encoding="utf-8"))

    if args.command == "dump":
        result = dump(args.model, args.data, args.sample)
    elif args.command == "mqtt":
        inputs = read(args.inputs)
        result = via_mqtt(args.broker, args.prefix, inputs, args.timeout, args.node_id)
    else:
        result = compare(read(args.reference), read(args.other))
        print(json.dumps(result, indent=2))
        if not args.out:
            return 0
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
