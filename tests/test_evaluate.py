"""trainer.evaluate on a tiny random bundle with all four variants.

The model's weights are random, so only the report's structure and its internal
consistency are checked, never how good the numbers are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgemodel.batching import encode_readable, predict_sorted
from edgemodel.bundle import BundleError, ModelBundle, update_manifest
from edgemodel.inference import Classifier
from edgemodel.report_notes import NOTES_MARKER, write_markdown_keeping_notes
from trainer.cli import app as trainer_app
from trainer.evaluate import evaluate_bundle, manifest_metrics, render_markdown, write_report
from trainer.tiny import build_tiny_bundle

ALL_VARIANTS = ("fp32", "fp16", "int8", "int8-full")

# Hand-written, not taken from any data set.
SENTENCES: list[tuple[str, str, str | None]] = [
    ("Loving the new hybrid, it is quiet and smooth on the highway", "positive", "Honda"),
    ("Best test drive I have had in years!!!", "positive", "BMW"),
    ("The dealer fixed everything in one afternoon, great service", "positive", "Audi"),
    ("So happy with my first car, thanks to the whole team", "positive", "Fiat"),
    ("That concept car at the show looked amazing", "positive", "Porsche"),
    ("Fuel economy is better than the brochure promised", "positive", "Mazda"),
    ("What a beautiful interior, I could sit in it all day", "positive", "Bentley"),
    ("Their electric model just won the safety award", "positive", "Volvo"),
    ("The engine light came on again, third time this month", "negative", "Ford"),
    ("Waited four hours at the service center and nobody called", "negative", "Nissan"),
    ("Another recall? I am done with this brand", "negative", "Chrysler"),
    ("The brakes squeak and the dealer says it is normal", "negative", "Suzuki"),
    ("Terrible customer support, nobody answers the phone", "negative", "Volkswagen"),
    ("My motorbike broke down on the first long trip", "negative", "Yamaha"),
    ("Rust on a two year old car is not acceptable", "negative", "Fiat"),
    ("The infotainment system freezes every single morning", "negative", "Audi"),
    ("The new model will be presented in Geneva next week", "neutral", "BMW"),
    ("Does anyone know the opening hours of the downtown dealer?", "neutral", "Honda"),
    ("Production moves to the new plant in the autumn", "neutral", "Volvo"),
    ("I am comparing two compact cars for my sister", "neutral", "Mazda"),
    ("The company reports quarterly results on Thursday", "neutral", "Ford"),
    ("Photos from the factory tour are on the blog now", "neutral", "Porsche"),
    ("Parking next to a red coupe at the supermarket", "neutral", None),
    ("They announced a price list for the spring lineup", "neutral", "Nissan"),
    ("It rains, the wipers work, nothing else to report", "neutral", "Suzuki"),
    ("Quiet cabin, but the seats are hard after an hour", "neutral", "Volkswagen"),
    ("Super fast delivery of spare parts, well done", "positive", "Yamaha"),
    ("The app never connects to the car", "negative", "Chrysler"),
    ("Tweet from the motor show in the morning", "neutral", "Bentley"),
    ("Ok", "neutral", None),
    ("   ", "positive", "BMW"),  # nothing readable: must count as a wrong prediction
]
TEXTS = [s[0] for s in SENTENCES]
LABELS = [s[1] for s in SENTENCES]
ENTITIES = [s[2] for s in SENTENCES]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    return build_tiny_bundle(tmp_path_factory.mktemp("eval") / "bundle", variants=ALL_VARIANTS)


@pytest.fixture(scope="session")
def report(bundle: ModelBundle) -> dict:
    return evaluate_bundle(
        bundle.root,
        TEXTS,
        LABELS,
        entities=ENTITIES,
        batch_size=4,
        threads=1,
        latency_samples=8,
        dataset="handwritten",
    )


def test_report_describes_run(report: dict) -> None:
    assert report["format"] == "repedge-eval/1"
    assert list(report["variants"]) == list(ALL_VARIANTS)
    assert report["dataset"]["name"] == "handwritten"
    assert report["dataset"]["size"] == len(TEXTS)
    assert report["dataset"]["label_counts"] == {"negative": 9, "neutral": 12, "positive": 10}
    assert report["machine"]["cpu_count"] >= 1
    assert report["runtime"]["threads"] == 1
    assert report["runtime"]["name"] in ("ai-edge-litert", "tflite-runtime")
    assert report["date"]
    # The report is what goes to disk: it must be plain JSON.
    json.dumps(report, allow_nan=False)


def test_sizes_match_the_bundle(report: dict, bundle: ModelBundle) -> None:
    for variant, r in report["variants"].items():
        info = bundle.manifest.variants[variant]
        assert r["size_bytes"] == info.size_bytes == (bundle.root / info.file).stat().st_size
        assert r["size_mb"] == pytest.approx(info.size_bytes / 1e6)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_metrics_agree_with_confusion_matrix(report: dict, variant: str) -> None:
    r = report["variants"][variant]
    cm = r["confusion_matrix"]
    matrix = np.asarray(cm["matrix"])
    missed = np.asarray(cm["unpredicted"])
    support = matrix.sum(axis=1) + missed
    assert cm["labels"] == ["negative", "neutral", "positive"]
    assert support.sum() == r["n"] == len(TEXTS)
    assert r["accuracy"] == pytest.approx(np.trace(matrix) / len(TEXTS))
    recalls, f1s = [], []
    for i, label in enumerate(cm["labels"]):
        m = r["per_class"][label]
        predicted = matrix[:, i].sum()
        assert m["support"] == support[i]
        assert m["recall"] == pytest.approx(matrix[i, i] / support[i])
        assert m["precision"] == pytest.approx(matrix[i, i] / predicted if predicted else 0.0)
        pr = m["precision"] + m["recall"]
        assert m["f1"] == pytest.approx(2 * m["precision"] * m["recall"] / pr if pr else 0.0)
        recalls.append(m["recall"])
        f1s.append(m["f1"])
    assert r["macro_recall"] == pytest.approx(np.mean(recalls))
    assert r["macro_f1"] == pytest.approx(np.mean(f1s))


def test_unreadable_text_is_counted_as_wrong(report: dict) -> None:
    assert report["dataset"]["unreadable"] == 1
    for r in report["variants"].values():
        assert r["unreadable"] == 1
        # The blank tweet is labeled positive: a miss for positive, nobody's false positive.
        assert r["confusion_matrix"]["unpredicted"] == [0, 0, 1]
        assert r["per_class"]["positive"]["support"] == 10


def test_agreement_and_timings(report: dict) -> None:
    assert report["variants"]["fp32"]["agreement_vs_fp32"] == 1.0
    for r in report["variants"].values():
        assert 0.0 <= r["agreement_vs_fp32"] <= 1.0
        lat = r["latency"]
        assert lat["samples"] == 8
        assert 0 < lat["p50_ms"] <= lat["p95_ms"]
        assert r["throughput"]["tweets"] == len(TEXTS) - 1
        assert r["throughput"]["tweets_per_s"] > 0
    assert report["encode_ms"]["samples"] == len(TEXTS)


def test_sorted_batches_keep_input_order(bundle: ModelBundle) -> None:
    clf = Classifier.from_path(bundle.root, variant="fp32", num_threads=1)
    encoded = [clf.encode(t, e) for t, e in zip(TEXTS[:-1], ENTITIES[:-1], strict=True)]
    batched = predict_sorted(clf, encoded, batch_size=4)
    one_by_one = np.concatenate([clf.predict_logits([e]) for e in encoded])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-4)


def test_encode_readable_passes_over_unreadable_texts(bundle: ModelBundle) -> None:
    clf = Classifier.from_path(bundle.root, variant="fp32", num_threads=1)
    blank = TEXTS[-1]  # nothing the model can read
    items = [(blank, None), (TEXTS[0], ENTITIES[0]), (blank, "x"), (TEXTS[1], ENTITIES[1])]
    encoded, readable = encode_readable(clf, items)
    assert readable == [1, 3]
    assert encoded == [clf.encode(TEXTS[0], ENTITIES[0]), clf.encode(TEXTS[1], ENTITIES[1])]


def test_without_fp32_there_is_no_agreement(bundle: ModelBundle) -> None:
    report = evaluate_bundle(
        bundle.root, TEXTS[:6], LABELS[:6], variants=["int8"], threads=1, latency_samples=0
    )
    r = report["variants"]["int8"]
    assert r["agreement_vs_fp32"] is None
    assert r["latency"] == {"samples": 0, "p50_ms": None, "p95_ms": None, "mean_ms": None}
    assert "| int8 |" in render_markdown(report)
    # A .tflite path selects that one variant.
    single = evaluate_bundle(bundle.root / "fp16.tflite", TEXTS[:3], LABELS[:3], threads=1)
    assert list(single["variants"]) == ["fp16"]


def test_bad_inputs_fail_before_inference(bundle: ModelBundle) -> None:
    with pytest.raises(ValueError, match="POSITIVE"):
        evaluate_bundle(bundle.root, ["great car"], ["POSITIVE"])
    with pytest.raises(BundleError, match="fp8"):
        evaluate_bundle(bundle.root, ["great car"], ["positive"], variants=["fp8"])
    with pytest.raises(ValueError, match="same length"):
        evaluate_bundle(bundle.root, ["great car"], ["positive", "negative"])


def test_write_report(report: dict, tmp_path: Path) -> None:
    json_path, md_path = write_report(report, tmp_path / "reports", "tiny-handwritten")
    assert json_path.name == "tiny-handwritten.json"
    assert json.loads(json_path.read_text()) == report
    md = md_path.read_text()
    assert "| variant | size MB | accuracy | macro-F1 | AvgRec |" in md
    for variant in ALL_VARIANTS:
        assert f"| {variant} |" in md
        assert f"## {variant}" in md
    assert "unreadable" in md
    assert "1 thread" in md


def test_regenerated_markdown_keeps_hand_written_notes(tmp_path: Path) -> None:
    doc = tmp_path / "frontier.md"
    write_markdown_keeping_notes(doc, "| table | v1 |")
    doc.write_text(doc.read_text() + "The v1 point is shipped because ...\n")
    write_markdown_keeping_notes(doc, "| table | v2 |")
    text = doc.read_text()
    assert text.startswith("| table | v2 |\n" + NOTES_MARKER)
    assert "v1 |" not in text
    assert text.endswith("The v1 point is shipped because ...\n")


def test_manifest_metrics_fit_the_manifest(report: dict, bundle: ModelBundle) -> None:
    summary = manifest_metrics(report)
    assert summary["variants"]["int8"]["macro_recall"] == report["variants"]["int8"]["macro_recall"]
    manifest = update_manifest(bundle.root, metrics=summary)
    assert manifest.metrics["dataset"] == "handwritten"
    assert ModelBundle.load(bundle.root).manifest.metrics == summary


def test_cli_scores_only_the_requested_split(bundle: ModelBundle, tmp_path: Path) -> None:
    header = "entity_id\tentity\ttweet_id\tfiltering\tpolarity\ttext\n"
    brands = ("BMW", "Honda", "Volvo", "Suzuki", "Volkswagen", "Ford")
    rows = [
        f"E{b}\t{brand}\t{b}{i}\tRELATED\tPOSITIVE\tgreat day with the {brand} {i}\n"
        for b, brand in enumerate(brands)
        for i in range(3)
    ]
    data = tmp_path / "replab.tsv"
    data.write_text(header + "".join(rows), encoding="utf-8")
    runner = CliRunner()
    args = ["evaluate", "--model", str(bundle.root), "--data", str(data), "--variants", "int8"]
    whole = runner.invoke(trainer_app, [*args, "--out", str(tmp_path / "r")])
    held_out = runner.invoke(trainer_app, [*args, "--split", "test", "--out", str(tmp_path / "r")])
    assert whole.exit_code == 0 and held_out.exit_code == 0, held_out.output
    assert "18 tweets" in whole.output
    assert "(test split, seed 13), 9 tweets" in held_out.output  # BMW, Honda, Volvo
    assert (tmp_path / "r" / "replab_test.json").is_file()
    bad = runner.invoke(trainer_app, [*args, "--split", "holdout"])
    assert bad.exit_code != 0 and "holdout" in bad.output


def test_compare_scores_both_bundles_on_the_same_tweets(bundle: ModelBundle, tmp_path: Path):
    other = build_tiny_bundle(tmp_path / "other", variants=("int8",), seed=5)
    semeval = tmp_path / "semeval.tsv"
    semeval.write_text(
        "".join(f"{i}\t{label}\t{text} {i}\n" for i, (text, label, _) in enumerate(SENTENCES * 4)),
        encoding="utf-8",
    )
    args = [str(bundle.root), "--semeval", str(semeval), "--out", str(tmp_path / "c.json")]
    runner = CliRunner()
    same = runner.invoke(trainer_app, ["compare", str(bundle.root), *args])
    assert same.exit_code == 0, same.output
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert [(r["data"], r["part"]) for r in rows] == [("semeval", "dev"), ("semeval", "test")]
    for r in rows:  # a bundle against itself: no difference, full agreement
        assert r["a"] == r["b"] and r["interval_95"] == [0.0, 0.0] and r["agreement"] == 1.0

    different = runner.invoke(trainer_app, ["compare", str(other.root), *args])
    assert different.exit_code == 0, different.output
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert any(r["agreement"] < 1.0 for r in rows)
    for r in rows:
        low, high = r["interval_95"]
        assert low <= r["b_minus_a"] <= high
    assert "| semeval | test |" in different.output
