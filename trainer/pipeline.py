"""The whole offline run: data -> splits -> fine-tune -> FlatBuffer variants -> bundle -> report.

Every exported variant is evaluated on the held-out test splits through the node's own
inference code (:func:`trainer.evaluate.evaluate_bundle`).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from edgemodel.bundle import ModelBundle, update_manifest, write_bundle
from edgemodel.data import POLARITY_LABELS, Example
from edgemodel.splits import DataSources, Split
from trainer.encoders import load_encoder
from trainer.evaluate import evaluate_bundle, manifest_metrics, render_markdown, write_report
from trainer.export import calibration_samples, export_variants
from trainer.settings import ALL_VARIANTS, FIRST_VERSION, MODEL_NAME
from trainer.train import EncodedSet, TrainConfig, Trainer, encode_examples, make_encoder


def _polarity_only(examples: list[Example]) -> list[Example]:
    return [e for e in examples if e.label is not None]


def run_training(
    config: TrainConfig,
    sources: DataSources,
    out_dir: Path,
    name: str = MODEL_NAME,
    version: str = FIRST_VERSION,
    variants: tuple[str, ...] = ALL_VARIANTS,
) -> ModelBundle:
    started = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = sources.load(config.seed)
    print("data:", {k: v.sizes() for k, v in splits.items()}, flush=True)

    encoder_model = load_encoder(config.base, num_layers=config.num_layers)
    tokens = make_encoder(encoder_model.tokenizer_file, config)
    combined = Split()
    for split in splits.values():
        combined = combined + split
    train = encode_examples(tokens, combined.train)
    if not config.filter_head:
        # Without the filtering head, unrelated RepLab tweets carry no training signal.
        train = _keep_labeled(train)
    # With the related head, dev keeps unrelated RepLab tweets for its accuracy.
    dev_examples = combined.dev if config.filter_head else _polarity_only(combined.dev)
    dev = encode_examples(tokens, dev_examples)

    trainer = Trainer(config, encoder_model.backbone, tokens)
    summary = trainer.fit(train, dev, out_dir / "checkpoints")

    staging = out_dir / "flatbuffers"
    calibration = calibration_samples([x for x in train.inputs if len(x) >= 24][:2000])
    paths = export_variants(trainer.model, staging, variants, calibration=calibration)
    bundle_dir = out_dir / "bundle"
    write_bundle(
        bundle_dir,
        variant_files=paths,
        tokenizer_file=encoder_model.tokenizer_file,
        labels=list(POLARITY_LABELS),
        name=name,
        version=version,
        base_model=encoder_model.name,
        architecture=encoder_model.architecture,
        max_length=config.max_length,
        entity_input=config.entity_input,
        cleaning=tokens.cleaning,
        training={
            "command": shlex.join(["trainer", *sys.argv[1:]]),
            "config": asdict(config),
            "data": {k: v.sizes() for k, v in splits.items()},
            "best_dev": summary["best"],
            "stopped_by": summary["stopped_by"],
            "minutes": round((time.time() - started) / 60, 1),
        },
    )
    for p in paths.values():
        p.unlink()
    staging.rmdir()

    metrics = evaluate_test_splits(bundle_dir, splits, out_dir / "reports", variants)
    update_manifest(bundle_dir, metrics=metrics)
    return ModelBundle.load(bundle_dir)


def _keep_labeled(data: EncodedSet) -> EncodedSet:
    keep = [i for i, p in enumerate(data.polarity) if p >= 0]
    return EncodedSet(
        [data.inputs[i] for i in keep],
        data.polarity[keep],
        data.related[keep],
        [data.source[i] for i in keep],
    )


def evaluate_test_splits(
    bundle_dir: Path, splits: dict[str, Split], report_dir: Path, variants: tuple[str, ...]
) -> dict:
    """Each variant on each held-out test split; returns the manifest's metrics block."""
    metrics: dict = {}
    for source, split in splits.items():
        test = _polarity_only(split.test)
        if not test:
            continue
        report = evaluate_bundle(
            bundle_dir,
            texts=[e.text for e in test],
            labels=[e.label for e in test],
            entities=[e.entity for e in test],
            variants=list(variants),
            dataset=f"{source} held-out test",
        )
        write_report(report, report_dir, f"test_{source}")
        print(render_markdown(report), flush=True)
        metrics[source] = manifest_metrics(report)
    (report_dir / "summary.json").write_text(json.dumps(metrics, indent=2))
    return metrics
