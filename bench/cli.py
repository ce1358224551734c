"""`node bench`: its options, checked with clear errors, -> :func:`bench.suite.run_bench`.

The node CLI mounts ``app`` by name (node/cli.py), so `node start` never imports bench;
this module imports only typer and edgemodel at load time, so `node --help` stays quick.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edgemodel.bundle import BundleError, default_bundle_path
from edgemodel.splits import SPLIT_SEED

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


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
    from bench.suite import BenchError, BenchOptions, run_bench
    from bench.tweets import labelled_tweets, plain_tweets, synthetic_tweets
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
    except (OSError, ValueError) as exc:  # edgemodel.data.DataError is a ValueError
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
            "cafile": a["cafile"],
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


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.json and the plots.")],
    model: Annotated[
        Path | None,
        typer.Option(
            help="Bundle folder (every variant in it, plus *.onnx peers), or one .tflite/.onnx "
            "file of a bundle. Default: the shipped models/default.",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Labelled tweets (SemEval TSV, RepLab TSV, CSV, JSONL; as `trainer evaluate` "
            "reads them): timing on them, plus accuracy, macro-F1 and AvgRec.",
            show_default=False,
        ),
    ] = None,
    tweets: Annotated[
        Path | None,
        typer.Option(
            help="Unlabelled tweets to time on (text lines or JSON lines with text/entity). "
            "Default without --data: built-in synthetic tweets.",
            show_default=False,
        ),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(help="Use a seeded random sample of this many --data tweets."),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="all | train | dev | test: only that part of --data, split as `trainer "
            "train` splits it (RepLab by entity, others stratified with --seed)."
        ),
    ] = "all",
    seed: Annotated[int, typer.Option(help="Seed of --split.")] = SPLIT_SEED,
    threads: Annotated[
        str | None,
        typer.Option(help="Thread counts for throughput, e.g. 1,2,4. Default: 1 and all cores."),
    ] = None,
    variants: Annotated[
        str | None,
        typer.Option(help="Only these model files, e.g. int8,onnx-int8.", show_default=False),
    ] = None,
    latency_samples: Annotated[int, typer.Option(help="Batch-1 calls timed per file.")] = 200,
    saturation_tweets: Annotated[int, typer.Option(help="Tweets per throughput run.")] = 1000,
    repeats: Annotated[int, typer.Option(help="Throughput runs per thread count.")] = 3,
    rounds: Annotated[
        int, typer.Option(help="Passes over all files (alternating them); medians reported.")
    ] = 1,
    accuracy_only: Annotated[
        bool, typer.Option(help="Skip timing: size and accuracy only (e.g. under emulation).")
    ] = False,
    in_process: Annotated[
        bool,
        typer.Option(help="Measure every file in this process (no subprocess; RSS not clean)."),
    ] = False,
    broker: Annotated[
        str | None,
        typer.Option(
            help="Also measure end to end through a broker: mqtt://host:port, or 'local' for "
            "a private Mosquitto.",
            show_default=False,
        ),
    ] = None,
    username: Annotated[str | None, typer.Option(help="Broker user name.")] = None,
    password: Annotated[
        str | None, typer.Option(help="Broker password.", envvar="REPEDGE_MQTT_PASSWORD")
    ] = None,
    cafile: Annotated[
        Path | None,
        typer.Option(
            help="With an mqtts:// --broker: the CA certificate that signed the broker's.",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[float, typer.Option(help="With --broker: offered tweets/s.")] = 50.0,
    seconds: Annotated[float, typer.Option(help="With --broker: length of a rate run.")] = 20.0,
    broker_tweets: Annotated[
        int, typer.Option(help="With --broker: tweets per saturation run.")
    ] = 2000,
    broker_repeats: Annotated[
        int, typer.Option(help="With --broker: repeats (bare, saturation, rate), medians.")
    ] = 3,
) -> None:
    """Measure a model on this device: size, load time, RSS, latency, throughput, accuracy."""
    run_from_cli(locals())
