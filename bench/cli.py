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

from bench.settings import BenchSettings
from common.cli import PasswordOption, UsernameOption
from common.settings import SettingsError
from edgemodel.bundle import BundleError, default_bundle_path
from edgemodel.defaults import evaluation_threads, serving_threads

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


def run_from_cli(a: dict[str, Any]) -> None:
    from bench.suite import BenchError, BenchOptions, run_bench
    from bench.tweets import labelled_tweets, plain_tweets, synthetic_tweets

    try:  # ranges and types, from bench/settings.py: one line and exit 2 when wrong
        BenchSettings(**{k: a[k] for k in BenchSettings.__dataclass_fields__ if k in a})
    except SettingsError as exc:
        typer.echo(f"node bench: error: {exc}", err=True)
        raise typer.Exit(2) from None
    models = a["model"] or [default_bundle_path()]
    if models[0] is None:
        raise typer.BadParameter("no default model here: give --model", param_hint="--model")
    if len(models) > 1 and not a["baseline"]:
        raise typer.BadParameter(
            "several --model bundles are compared with a --baseline: give one",
            param_hint="--baseline",
        )
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
        latency_threads=serving_threads(),
        # trainer evaluate's default, so that the accuracy columns are the same numbers.
        eval_threads=evaluation_threads(),
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
        run_bench(
            [Path(m) for m in models], tweets, options, Path(a["out"]), broker=broker,
            progress=progress, baseline=a["baseline"],
        )  # fmt: skip
    except BundleError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model/--baseline") from None
    except (BenchError, ValueError, RuntimeError) as exc:  # e.g. no tweet readable, no ORT
        typer.echo(f"node bench: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.json and the plots.")],
    model: Annotated[
        list[Path] | None,
        typer.Option(
            help="Bundle folder (every variant in it, plus *.onnx peers), or one .tflite/.onnx "
            "file of a bundle. Default: the shipped models/default. Repeatable with "
            "--baseline.",
            show_default=False,
            metavar="PATH",
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            help="A bundle (folder or file) to compare --model with, side by side in the same "
            "run: every file of both measured in alternating rounds; the report adds each "
            "--model file's ratio to the baseline's matching file.",
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
    ] = BenchSettings.split,
    seed: Annotated[int, typer.Option(help="Seed of --split.")] = BenchSettings.seed,
    threads: Annotated[
        str | None,
        typer.Option(help="Thread counts for throughput, e.g. 1,2,4. Default: 1 and all cores."),
    ] = None,
    variants: Annotated[
        str | None,
        typer.Option(help="Only these model files, e.g. int8,onnx-int8.", show_default=False),
    ] = None,
    latency_samples: Annotated[int, typer.Option(help="Batch-1 calls timed per file.")] = (
        BenchSettings.latency_samples
    ),
    saturation_tweets: Annotated[int, typer.Option(help="Tweets per throughput run.")] = (
        BenchSettings.saturation_tweets
    ),
    repeats: Annotated[int, typer.Option(help="Throughput runs per thread count.")] = (
        BenchSettings.repeats
    ),
    rounds: Annotated[
        int, typer.Option(help="Passes over all files (alternating them); medians reported.")
    ] = BenchSettings.rounds,
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
    username: UsernameOption = None,
    password: PasswordOption = None,
    cafile: Annotated[
        Path | None,
        typer.Option(
            help="With an mqtts:// --broker: the CA certificate that signed the broker's.",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        float, typer.Option(help="With --broker: offered tweets/s.")
    ] = BenchSettings.rate,
    seconds: Annotated[float, typer.Option(help="With --broker: length of a rate run.")] = (
        BenchSettings.seconds
    ),
    broker_tweets: Annotated[
        int, typer.Option(help="With --broker: tweets per saturation run.")
    ] = BenchSettings.broker_tweets,
    broker_repeats: Annotated[
        int, typer.Option(help="With --broker: repeats (bare, saturation, rate), medians.")
    ] = BenchSettings.broker_repeats,
) -> None:
    """Measure a model on this device: size, load time, RSS, latency, throughput, accuracy;
    with --baseline, side by side with an older bundle."""
    run_from_cli(locals())
