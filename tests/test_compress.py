"""Vocabulary pruning and the int4 variant on the tiny random bundle.

Pruning drops embedding rows and renumbers token ids; a tweet whose tokens were all kept
must get the same logits from the pruned bundle as from its parent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemodel.bundle import ModelBundle
from edgemodel.data import Example
from edgemodel.inference import Classifier
from trainer.compress import (
    CompressOptions,
    compress_bundle,
    count_token_ids,
    keep_token_ids,
    select_vocab,
    special_tokens,
)
from trainer.tiny import build_tiny_bundle, tiny_classifier

# Hand-written, not taken from any data set.
CORPUS = [
    ("Loving the new hybrid, it is quiet and smooth on the highway", "Honda"),
    ("The engine light came on again, third time this month", "Ford"),
    ("Waited four hours at the service center and nobody called", "Nissan"),
    ("The new model will be presented in Geneva next week", "BMW"),
    ("Fuel economy is better than the brochure promised", None),
]
UNSEEN = "Xylophones quizzically juxtapose zebras"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelBundle, ModelBundle]:
    root = tmp_path_factory.mktemp("compress")
    model = tiny_classifier(seed=0)
    parent = build_tiny_bundle(root / "parent", variants=("fp32",), model=model)
    corpus = [Example(text=t, label="neutral", entity=e) for t, e in CORPUS]
    pruned = compress_bundle(
        model, parent, corpus, root / "pruned", CompressOptions(variants=("fp32", "int4"))
    )
    return parent, pruned


def _logits(bundle: ModelBundle, variant: str, texts: list[tuple[str, str | None]]) -> np.ndarray:
    clf = Classifier.from_path(bundle.root, variant=variant, num_threads=1)
    return clf.predict_logits([clf.encode(t, e) for t, e in texts])


def test_pruned_vocabulary_is_smaller(bundles: tuple[ModelBundle, ModelBundle]) -> None:
    parent, pruned = bundles
    info = pruned.manifest.training["compression"]
    assert info["vocabulary"]["kept"] < info["vocabulary"]["original"] // 10
    sizes = (b.manifest.variants["fp32"].size_bytes for b in (parent, pruned))
    assert next(sizes) > 2 * next(sizes)


def test_pruned_bundle_classifies_identically(bundles: tuple[ModelBundle, ModelBundle]) -> None:
    parent, pruned = bundles
    np.testing.assert_allclose(
        _logits(pruned, "fp32", CORPUS), _logits(parent, "fp32", CORPUS), atol=1e-5
    )


def test_unseen_words_still_tokenize(bundles: tuple[ModelBundle, ModelBundle]) -> None:
    parent, pruned = bundles
    before = Classifier.from_path(parent.root, variant="fp32").encoder
    after = Classifier.from_path(pruned.root, variant="fp32").encoder
    old, new = before.encode(UNSEEN), after.encode(UNSEEN)
    assert before.unk_id not in old.input_ids and after.unk_id not in new.input_ids
    assert len(new) >= len(old)  # smaller pieces, never unknown


def test_int4_variant_runs_close_to_fp32(bundles: tuple[ModelBundle, ModelBundle]) -> None:
    _, pruned = bundles
    assert pruned.manifest.variants["int4"].size_bytes < pruned.manifest.variants["fp32"].size_bytes
    fp32, int4 = _logits(pruned, "fp32", CORPUS), _logits(pruned, "int4", CORPUS)
    assert int4.shape == fp32.shape and np.isfinite(int4).all()
    assert np.corrcoef(fp32.ravel(), int4.ravel())[0, 1] > 0.9


def test_pruned_tokenizer_keeps_special_tokens(bundles: tuple[ModelBundle, ModelBundle]) -> None:
    _, pruned = bundles
    encoder = Classifier.from_path(pruned.root, variant="fp32").encoder
    ids = encoder.encode("quiet highway", "Honda").input_ids
    vocab = {i: t for t, i in encoder._tokenizer.get_vocab().items()}
    tokens = [vocab[i] for i in ids]
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2
    assert encoder.pad_id == 0


@pytest.mark.slow
def test_min_count_zero_keeps_whole_vocabulary(tmp_path: Path) -> None:
    # min_count 0 keeps the whole vocabulary: only positions (and layers) shrink.
    model = tiny_classifier(seed=1)
    parent = build_tiny_bundle(tmp_path / "p", variants=("fp32",), model=model)
    options = CompressOptions(min_count=0, variants=("fp32",))
    full = compress_bundle(model, parent, [], tmp_path / "f", options)
    info = full.manifest.training["compression"]
    assert info["vocabulary"]["kept"] == info["vocabulary"]["original"]


def test_keep_texts_survive_pruning(bundles: tuple[ModelBundle, ModelBundle]) -> None:
    parent, _ = bundles
    encoder = Classifier.from_path(parent.root, variant="fp32").encoder
    original = json.loads(parent.tokenizer_path.read_text(encoding="utf-8"))
    vocab = original["model"]["vocab"]
    counts = count_token_ids(encoder, [Example(text=t, label=None, entity=e) for t, e in CORPUS])
    keep = keep_token_ids(encoder, ["Volvo"])
    pruned = select_vocab(vocab, counts, 1, special_tokens(original), keep)
    assert "volvo" in pruned.tokens and "highway" in pruned.tokens
    assert "volvo" not in select_vocab(vocab, counts, 1, special_tokens(original)).tokens


def _run_flatbuffer(model: bytes, encoded) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model).get_signature_runner()
    rows = []
    for e in encoded:
        out = runner(
            input_ids=np.asarray([e.input_ids], np.int32),
            segment_ids=np.asarray([e.segment_ids], np.int32),
            attention_mask=np.ones((1, len(e)), np.int32),
        )
        rows.append(out["logits"][0])
    return np.asarray(rows)


def test_gptq_and_mixed_precision_int4(bundles: tuple[ModelBundle, ModelBundle]) -> None:
    """GPTQ (calibrated on tweets) and int8 scopes (mixed precision) give working int4
    FlatBuffers; the int8 layers cost bytes and bring the logits closer to fp32."""
    from trainer.int4 import Int4Recipe, quantize_int4

    parent, _ = bundles
    clf = Classifier.from_path(parent.root, variant="fp32", num_threads=1)
    encoded = [clf.encode(t, e) for t, e in CORPUS]
    fp32_bytes = (parent.root / parent.manifest.variants["fp32"].file).read_bytes()
    fp32 = _run_flatbuffer(fp32_bytes, encoded)
    made = {
        name: quantize_int4(fp32_bytes, recipe, calibration=encoded * 4)
        for name, recipe in {
            "gptq": Int4Recipe(algorithm="gptq", embedding_bits=8),
            # Every dense layer matches the int8 rule: the last matching rule wins.
            "mixed": Int4Recipe(
                algorithm="gptq", int8_scopes=("transformer_layer_",), embedding_bits=8
            ),
        }.items()
    }
    error = {k: float(np.abs(_run_flatbuffer(m, encoded) - fp32).mean()) for k, m in made.items()}
    assert len(made["gptq"]) < len(made["mixed"]) < len(fp32_bytes)
    assert error["mixed"] < error["gptq"] < 0.1 * float(np.abs(fp32).mean()) + 0.05
    with pytest.raises(ValueError, match="calibration"):
        quantize_int4(fp32_bytes, Int4Recipe(algorithm="gptq"))
    with pytest.raises(ValueError, match="not one of"):
        Int4Recipe(algorithm="adaround")
