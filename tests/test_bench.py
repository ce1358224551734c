"""`node bench` on a tiny bundle: report files, sane numbers, valid plots, and accuracy
equal to `trainer evaluate`'s on the same file; the ONNX Runtime peer; the broker row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LABELLED = [
    ("positive", "I love my new car, it drives beautifully"),
    ("negative", "worst customer service ever, waited two hours on hold"),
    ("neutral", "the company publishes its results on Thursday"),
    ("positive", "great to see the new factory bringing jobs to town"),
    ("negative", "recall of 100,000 vehicles over faulty airbags"),
    ("neutral", "@someone the meeting is at 10am http://t.co/abc"),
    ("positive", "thanks for the quick reply, really appreciated 😍"),
    ("negative", "my flight was delayed again #fail"),
    ("neutral", "ᚠᚢᚦ"),  # no known token (runes): counted wrong by both tools
] * 4


def spread_predictions(model) -> None:
    """Centre and scale the random head on the test tweets' pooled vectors: a random tiny
    encoder pools every tweet to nearly the same vector, so its raw head says one class."""
    import keras

    from edgemodel.inference import TweetEncoder, pad_batch
    from edgemodel.textclean import CleaningConfig
    from trainer.encoders import minilm_folder

    encoder = TweetEncoder(minilm_folder() / "tokenizer.json", 64, CleaningConfig(), True)
    encoded = [encoder.encode(text) for _, text in LABELLED[:8]]
    x = pad_batch(encoded)
    pool = keras.Model(model.inputs, model.get_layer("mean_pool").output)
    pooled = np.asarray(pool([x["input_ids"], x["segment_ids"], x["attention_mask"]]))
    centred = pooled - pooled.mean(axis=0)
    head = model.get_layer("logits")
    kernel, _ = head.get_weights()
    scale = 1.0 / max(float(np.abs(centred @ kernel).max()), 1e-6)
    head.set_weights([kernel * scale, -(pooled.mean(axis=0) @ kernel) * scale])


@pytest.fixture(scope="module")
def bench_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 + int8 of a tiny random classifier whose head is scaled up, so that it spreads
    its predictions over the classes (the accuracy comparison then means something), plus
    its ONNX peers."""
    from trainer.onnx_export import export_onnx
    from trainer.tiny import build_tiny_bundle, tiny_classifier

    model = tiny_classifier(seed=3)
    spread_predictions(model)
    root = tmp_path_factory.mktemp("bench") / "bundle"
    build_tiny_bundle(root, variants=("fp32", "int8"), model=model)
    export_onnx(model, root)
    return root


@pytest.fixture(scope="module")
def labelled_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "labelled.tsv"
    rows = ["tweet_id\tlabel\ttext"] + [
        f"{1000 + i}\t{label}\t{text}" for i, (label, text) in enumerate(LABELLED)
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def run_cli(*args: object, module: str = "node") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


QUICK = ("--latency-samples", 30, "--saturation-tweets", 64, "--repeats", 1)


@pytest.fixture(scope="module")
def report(bench_bundle: Path, labelled_file: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report")
    done = run_cli("bench", "--model", bench_bundle, "--data", labelled_file,
                   "--threads", "1,2", "--out", out, *QUICK)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "fp32: latency" in done.stderr  # progress while it runs
    return out, json.loads((out / "report.json").read_text())


def test_report_files_and_sane_numbers(report) -> None:
    out, data = report
    assert (out / "report.md").is_file()
    assert set(data["variants"]) == {"fp32", "int8", "onnx-fp32", "onnx-int8"}
    for name, row in data["variants"].items():
        assert row["size_bytes"] > 0 and row["load_s"] > 0, name
        assert 0 < row["rss_idle_mib"] <= row["rss_peak_mib"], name
        lat = row["latency"]
        assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"], name
        assert len(lat["samples_ms"]) == 30
        assert set(row["throughput_tweets_per_s"]) == {"1", "2"}
        assert all(t["median"] > 0 for t in row["throughput_tweets_per_s"].values())
    device = data["device"]
    assert device["cores"] >= 1 and device["python"] and device["runtimes"]["ai-edge-litert"]
    markdown = (out / "report.md").read_text()
    assert "| int8 |" in markdown and "LiteRT vs ONNX Runtime" in markdown
    # One bundle: the report as before side by side existed (plain names, no comparison).
    assert data["format"] == "repedge-bench/1"
    assert not {"models", "comparison", "brokers"} & set(data)
    assert not {"bundle", "variant"} & set(data["variants"]["int8"])
    assert markdown.startswith(f"# node bench: tiny-random {data['model']['version']}\n")
    assert "Side by side" not in markdown


@pytest.fixture(scope="module")
def newer_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second bundle, another version with other weights: int8 only (like 2.0.0)."""
    from trainer.tiny import build_tiny_bundle, tiny_classifier

    root = tmp_path_factory.mktemp("newer") / "bundle"
    build_tiny_bundle(root, variants=("int8",), version="9.9.9", model=tiny_classifier(seed=4))
    return root


def test_side_by_side_two_bundles_in_one_run(
    bench_bundle: Path, newer_bundle: Path, labelled_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = run_cli("bench", "--model", newer_bundle, "--baseline", bench_bundle,
                   "--variants", "fp32,int8,onnx-int8", "--data", labelled_file,
                   "--threads", "1", "--out", out, *QUICK)  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads((out / "report.json").read_text())
    old = data["models"][0]["label"]
    assert old == "0.0.1" and [m["role"] for m in data["models"]] == ["baseline", "model"]
    # Unique names; the baseline's files first; every file measured.
    assert list(data["variants"]) == [f"{old}/fp32", f"{old}/int8", f"{old}/onnx-int8",
                                      "9.9.9/int8"]  # fmt: skip
    assert data["model"]["version"] == "9.9.9"  # "model": the first --model, as before
    assert data["variants"]["9.9.9/int8"]["bundle"] == "9.9.9"
    assert data["peers"][0]["litert"] == f"{old}/int8"
    (pair,) = data["comparison"]["pairs"]  # int8 matches int8; fp32 and ONNX stay unpaired
    assert (pair["target"], pair["baseline"]) == ("9.9.9/int8", f"{old}/int8")
    metrics = {m["metric"]: m for m in pair["metrics"]}
    assert {"size_mb", "latency_p50_ms", "latency_p95_ms", "throughput_1", "rss_peak_mib",
            "load_s", "accuracy", "macro_recall"} <= set(metrics)  # fmt: skip
    new_row, old_row = data["variants"]["9.9.9/int8"], data["variants"][f"{old}/int8"]
    size = metrics["size_mb"]
    assert size["ratio"] == pytest.approx(new_row["size_bytes"] / old_row["size_bytes"])
    acc = metrics["accuracy"]
    assert acc["value"] == new_row["accuracy"]["accuracy"]
    assert acc["baseline"] == old_row["accuracy"]["accuracy"]
    assert acc["difference_points"] == pytest.approx(100 * (acc["value"] - acc["baseline"]))
    assert all(m["ratio"] > 0 for m in pair["metrics"] if m["metric"] != "accuracy")
    assert metrics["throughput_1"]["better"] == "higher"
    assert metrics["latency_p50_ms"]["better"] == "lower"
    markdown = (out / "report.md").read_text()
    assert markdown.startswith(f"# node bench: tiny-random 9.9.9 against {old}\n")
    assert f"| 9.9.9/int8 vs {old}/int8 |" in markdown.split("## Side by side")[1]


def test_side_by_side_bundle_with_itself(bench_bundle: Path, tmp_path: Path) -> None:
    """The same bundle twice: names stay unique, and the ratios are near 1 (the tails, p95
    and load time, are left out: on a shared machine one preemption moves them); a ratio is
    the median over rounds of each round's own ratio."""
    done = run_cli("bench", "--model", bench_bundle, "--baseline", bench_bundle,
                   "--variants", "int8", "--threads", "1", "--rounds", 3, "--out", tmp_path,
                   "--latency-samples", 60, "--saturation-tweets", 128, "--repeats", 1,
                   )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "report.json").read_text())
    assert list(data["variants"]) == ["0.0.1#1/int8", "0.0.1#2/int8"]
    (pair,) = data["comparison"]["pairs"]
    metrics = {m["metric"]: m for m in pair["metrics"]}
    assert metrics["size_mb"]["ratio"] == 1.0
    ratios = {m["metric"]: m["ratio"] for m in pair["metrics"]}
    assert all(r > 0 for r in ratios.values()), ratios
    for key in ("size_mb", "latency_p50_ms", "throughput_1", "rss_idle_mib", "rss_peak_mib"):
        assert 0.5 <= ratios[key] <= 2, ratios
    old, new = (data["variants"][n]["latency"]["rounds_p50_ms"] for n in data["variants"])
    expected = float(np.median([a / b for a, b in zip(new, old, strict=True)]))
    assert metrics["latency_p50_ms"]["ratio"] == pytest.approx(expected)
    assert metrics["latency_p50_ms"]["value"] == pytest.approx(float(np.median(new)))


def test_side_by_side_bad_input(bench_bundle: Path, newer_bundle: Path, tmp_path: Path) -> None:
    two = run_cli("bench", "--model", bench_bundle, "--model", newer_bundle, "--out", tmp_path)
    assert two.returncode == 2 and "--baseline" in two.stderr
    unknown = run_cli("bench", "--model", newer_bundle, "--baseline", bench_bundle,
                      "--variants", "fp64", "--out", tmp_path)  # fmt: skip
    assert unknown.returncode == 2 and "no model file for ['fp64'] in any of" in " ".join(
        unknown.stderr.replace("│", " ").split()
    )
    assert "Traceback" not in two.stderr + unknown.stderr


def test_baseline_match_and_labels() -> None:
    from bench.sidebyside import bundle_labels, match_in_baseline

    assert bundle_labels(["2.0.0", "3.0.0"]) == ["2.0.0", "3.0.0"]
    assert bundle_labels(["2.0.0", "2.0.0", "3.0.0"]) == ["2.0.0#1", "2.0.0#2", "3.0.0"]
    old = [("int8", "litert"), ("fp32", "litert"), ("onnx-int8", "onnxruntime")]
    assert match_in_baseline("fp32", "litert", old, "int8") == "fp32"
    assert match_in_baseline("int4", "litert", old, "int8") == "int8"  # the served file
    assert match_in_baseline("onnx-fp32", "onnxruntime", old, "int8") == "onnx-int8"
    assert match_in_baseline("onnx-fp32", "onnxruntime", old[:2], "int8") is None


def test_plots_are_valid_pngs(report) -> None:
    import matplotlib.image

    out, data = report
    assert set(data["plots"]) == {"latency_cdf.png", "size_accuracy.png", "throughput_threads.png"}
    for name in data["plots"]:
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
        pixels = matplotlib.image.imread(out / name)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert float(np.std(pixels)) > 0  # something is drawn


def test_accuracy_equals_trainer_evaluate(report, bench_bundle, labelled_file, tmp_path) -> None:
    _, data = report
    done = run_cli("evaluate", "--model", bench_bundle, "--data", labelled_file,
                   "--out", tmp_path, module="trainer")  # fmt: skip
    assert done.returncode == 0, done.stderr
    evaluated = json.loads((tmp_path / "labelled.json").read_text())["variants"]
    for variant in ("fp32", "int8"):
        ours, theirs = data["variants"][variant]["accuracy"], evaluated[variant]
        for key in ("accuracy", "macro_f1", "macro_recall", "confusion_matrix"):
            assert ours[key] == theirs[key], (variant, key)
        assert ours["unreadable"] == theirs["unreadable"] == 4
    # The model spreads its guesses, so equal confusion matrices are not a coincidence.
    predicted = np.array(data["variants"]["fp32"]["accuracy"]["confusion_matrix"]["matrix"])
    assert (predicted.sum(axis=0) > 0).sum() >= 2


def test_onnx_peer_same_weights(report, bench_bundle) -> None:
    from bench.runners import LITERT, OnnxRunner, open_runner
    from edgemodel.bundle import ModelBundle

    _, data = report
    pairs = {p["onnxruntime"]: p for p in data["peers"]}
    assert set(pairs) == {"onnx-fp32", "onnx-int8"}
    for pair in pairs.values():
        assert pair["latency_p50_speedup"] > 0
        assert all(v > 0 for v in pair["throughput_speedup"].values())
    assert pairs["onnx-fp32"]["label_agreement"] == 1.0
    # The same fp32 weights in both runtimes give the same logits, to float rounding.
    lite = open_runner(LITERT, bench_bundle, "fp32.tflite", 1)
    peer = OnnxRunner(
        ModelBundle.load(bench_bundle, verify=False), bench_bundle / "onnx-fp32.onnx", 1
    )
    batch = [lite.encode(text, "BMW") for _, text in LABELLED[:8]]
    np.testing.assert_allclose(lite.predict_logits(batch), peer.predict_logits(batch), atol=1e-4)


def test_bench_imports_no_tensorflow(
    bench_bundle: Path, labelled_file: Path, tmp_path: Path
) -> None:
    """A node has no TensorFlow: the whole bench (here in one process), its data readers,
    split and metrics included, must need neither TensorFlow nor the trainer package."""
    code = (
        "import sys; from node.cli import app\n"
        f"app(['bench', '--model', {str(bench_bundle / 'int8.tflite')!r}, '--out', "
        f"{str(tmp_path)!r}, '--in-process', '--threads', '1', '--latency-samples', '20', "
        f"'--data', {str(labelled_file)!r}, '--split', 'train', "
        "'--saturation-tweets', '32', '--repeats', '1'], standalone_mode=False)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "assert 'trainer' not in sys.modules, 'trainer was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "report.json").read_text())
    assert list(data["variants"]) == ["int8"] and data["tweets"]["labelled"]


def test_node_start_does_not_import_bench() -> None:
    """`node bench` is mounted by name: resolving `node start` leaves bench unimported."""
    code = (
        "import sys; from node.cli import app\n"
        "try:\n    app(['start', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'bench' not in sys.modules, 'bench was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--threads", "1,x"), "comma-separated list of integers"),
        (("--threads", "0"), "positive"),
        (("--variants", "fp64"), "no model file for ['fp64']"),
        (("--data", "/nonexistent.tsv"), "no such file"),
        (("--split", "test"), "--split needs --data"),
    ],
)
def test_bad_input_is_a_clear_error(bench_bundle, tmp_path, args, message) -> None:
    done = run_cli("bench", "--model", bench_bundle, "--out", tmp_path, *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_unreadable_tweets_are_a_clear_error(bench_bundle, tmp_path) -> None:
    tweets = tmp_path / "runes.txt"
    tweets.write_text("ᚠᚢᚦ\nᚠᚦ\n", encoding="utf-8")
    done = run_cli("bench", "--model", bench_bundle, "--tweets", tweets, "--out", tmp_path, *QUICK)
    assert done.returncode == 1
    assert "none of the tweets is readable" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_broker_row_through_mosquitto(bench_bundle, mosquitto, tmp_path) -> None:
    done = run_cli(
        "bench", "--model", bench_bundle, "--variants", "int8", "--out", tmp_path,
        "--threads", "1", *QUICK, "--broker", mosquitto.url, "--broker-tweets", 40,
        "--rate", 20, "--seconds", 2, "--broker-repeats", 1,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = json.loads((tmp_path / "report.json").read_text())["broker"]
    assert row["e2e_saturation_tweets_per_s"]["median"] > 0
    assert row["bare_tweets_per_s"]["median"] > 0
    rate = row["fixed_rate"]
    assert rate["runs"][0]["complete"]
    assert 0 < rate["p50_ms"] <= rate["p99_ms"]
    assert 0 < row["node_idle_rss_mib"] <= row["node_peak_rss_mib"]
    assert "End to end through the broker" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_broker_rows_side_by_side(bench_bundle, newer_bundle, mosquitto, tmp_path) -> None:
    """--broker with --baseline: the end-to-end row for each bundle, and their ratios."""
    done = run_cli(
        "bench", "--model", newer_bundle, "--baseline", bench_bundle, "--variants", "int8",
        "--out", tmp_path, "--threads", "1", *QUICK, "--broker", mosquitto.url,
        "--broker-tweets", 40, "--rate", 20, "--seconds", 2, "--broker-repeats", 1,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "report.json").read_text())
    assert list(data["brokers"]) == ["9.9.9", "0.0.1"]  # the --model's first
    assert data["broker"]["model"]["version"] == "9.9.9"
    assert data["brokers"]["0.0.1"]["model"]["version"] == "0.0.1"
    (pair,) = data["broker_comparison"]
    assert (pair["target"], pair["baseline"]) == ("9.9.9", "0.0.1")
    for m in pair["metrics"]:
        assert m["ratio"] == pytest.approx(m["value"] / m["baseline"]) and m["ratio"] > 0
    markdown = (tmp_path / "report.md").read_text()
    assert "## End to end through the broker (9.9.9)" in markdown
    assert "## End to end through the broker (0.0.1)" in markdown


def test_compare_labels_across_devices(bench_bundle, labelled_file, tmp_path) -> None:
    """bench_compare, as scripts/arm64_check.sh uses it: the same dump twice is identical;
    a changed label is reported with its index, and the summary holds no tweet text."""
    from bench.compare import compare, dump

    first = dump(bench_bundle, [labelled_file], sample=20)
    same = compare(first, dump(bench_bundle, [labelled_file], sample=20))
    assert same["all_identical"]
    assert {k: v["tweets"] for k, v in same["sets"].items()} == {"canaries": 5, "labelled.tsv": 20}
    assert same["sets"]["labelled.tsv"]["max_abs_logit_diff"] == 0.0
    changed = json.loads(json.dumps(first))
    item = next(i for i in changed["items"] if i["set"] == "labelled.tsv" and i["label"])
    item["label"] = "neutral" if item["label"] != "neutral" else "positive"
    result = compare(first, changed)
    assert not result["all_identical"]
    (difference,) = result["sets"]["labelled.tsv"]["differences"]
    assert difference["index"] == changed["items"].index(item)
    assert all(text not in json.dumps(result) for _, text in LABELLED)


@pytest.mark.slow
def test_export_onnx_from_run_folder(tmp_path: Path) -> None:
    """`trainer export-onnx --run`: a run's best checkpoint, rebuilt as the run built it,
    becomes ONNX beside a copy of the run's bundle; the ONNX model is that checkpoint."""
    import keras

    from bench.runners import OnnxRunner
    from edgemodel.bundle import ModelBundle, update_manifest
    from trainer.tiny import build_tiny_bundle, tiny_classifier

    model = tiny_classifier(seed=5)
    run = tmp_path / "run"
    build_tiny_bundle(run / "bundle", variants=("int8",), model=model)
    update_manifest(run / "bundle", training={"config": {"base": "tiny-bert"}})
    (run / "checkpoints").mkdir()
    model.save_weights(run / "checkpoints" / "best.weights.h5")
    out = tmp_path / "peer"
    done = run_cli("export-onnx", "--run", run, "--out", out, module="trainer")
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.glob("*.onnx")} == {"onnx-fp32.onnx", "onnx-int8.onnx"}
    bundle = ModelBundle.load(out)  # the copied bundle still verifies
    peer = OnnxRunner(bundle, out / "onnx-fp32.onnx", 1)
    batch = [peer.encode(text, "BMW") for _, text in LABELLED[:4]]
    from edgemodel.inference import pad_batch

    x = pad_batch(batch)
    expected = keras.ops.convert_to_numpy(
        model([x["input_ids"], x["segment_ids"], x["attention_mask"]], training=False)["logits"]
    )
    np.testing.assert_allclose(peer.predict_logits(batch), expected, atol=1e-4)
    missing = run_cli("export-onnx", "--run", tmp_path / "nothing", module="trainer")
    message = " ".join(missing.stderr.replace("│", " ").split())  # rich wraps the box
    assert missing.returncode == 2 and "best.weights.h5" in message
