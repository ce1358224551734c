"""`node bench` options -> :func:`node.bench.suite.run_bench`, with clear errors for bad input."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from edgemodel.bundle import BundleError, default_bundle_path


def parse_threads(value: str | None) -> list[int]:
    cores = os.cpu_count() or 1
    if not value:
        return sorted({1, cores})
    try:
        threads = sorted({int(x) for x in value.split(",") if x.strip()})
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not threads or threads[0] < 1:
        raise typer.BadParameter("thread counts must be positive integers", param_hint="--threads")
    return threads


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise typer.BadParameter(f"must be positive, got {value}", param_hint=name)


def run_from_cli(a: dict[str, Any]) -> None:
    from node.bench.suite import BenchError, BenchOptions, run_bench
    from node.bench.tweets import labelled_tweets, plain_tweets, synthetic_tweets
    from node.serve import default_interpreter_threads

    for name in ("latency_samples", "saturation_tweets", "repeats", "rounds", "rate", "seconds",
                 "broker_tweets", "broker_repeats"):  # fmt: skip
        _positive(f"--{name.replace('_', '-')}", a[name])
    if a["sample"] is not None:
        _positive("--sample", a["sample"])
    model = a["model"] or default_bundle_path()
    if model is None:
        raise typer.BadParameter("no default model here: give --model", param_hint="--model")
    if a["split"] != "all" and not a["data"]:
        raise typer.BadParameter("--split needs --data", param_hint="--split")
    if a["data"] and a["tweets"]:
        raise typer.BadParameter("give --data or --tweets, not both", param_hint="--tweets")
    try:
        if a["data"]:
            tweets = labelled_tweets(
                a["data"], sample=a["sample"], split=a["split"], seed=a["seed"]
            )
        elif a["tweets"]:
            tweets = plain_tweets(a["tweets"])
        else:
            tweets = synthetic_tweets(1000)
    except (OSError, ValueError) as exc:  # trainer.data.DataError is a ValueError
        raise typer.BadParameter(str(exc), param_hint="--data/--tweets") from None
    threads = parse_threads(a["threads"])
    options = BenchOptions(
        threads=threads,
        latency_threads=default_interpreter_threads(),
        # trainer evaluate's default, so that the accuracy columns are the same numbers.
        eval_threads=min(4, os.cpu_count() or 1),
        latency_samples=a["latency_samples"],
        saturation_tweets=a["saturation_tweets"],
        saturation_repeats=a["repeats"],
        rounds=a["rounds"],
        accuracy_only=a["accuracy_only"],
        in_process=a["in_process"],
        variants=[v.strip() for v in a["variants"].split(",")] if a["variants"] else None,
    )
    broker = None
    if a["broker"]:
        broker = {
            "broker": a["broker"],
            "username": a["username"],
            "password": a["password"],
            "rate": a["rate"],
            "seconds": a["seconds"],
            "tweets": a["broker_tweets"],
            "repeats": a["broker_repeats"],
        }

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        run_bench(Path(model), tweets, options, Path(a["out"]), broker=broker, progress=progress)
    except BundleError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    except (BenchError, ValueError, RuntimeError) as exc:  # e.g. no tweet readable, no ORT
        typer.echo(f"node bench: {exc}", err=True)
        raise typer.Exit(1) from None
