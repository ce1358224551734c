"""`trainer adapt`: a per-brand head from labelled tweets of one brand, on a tiny
three-head bundle exported by the real path; the adapted bundle serves that brand with its
head, every other tweet exactly as before, and signs, verifies and installs like any bundle."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgemodel.bundle import EMBEDDING_OUTPUT, OUTPUT_NAME, BundleError, ModelBundle
from edgemodel.entity_heads import load_entity_heads
from edgemodel.inference import Classifier
from trainer.cli import app as trainer_app
from trainer.tiny import build_tiny_bundle, tiny_classifier

HEADER = "entity_id\tentity\ttweet_id\tfiltering\tpolarity\ttext"
WORDS = {
    "POSITIVE": ["love", "great", "brilliant", "fantastic", "happy"],
    "NEGATIVE": ["recall", "broken", "awful", "angry", "lawsuit"],
    "NEUTRAL": ["announces", "meeting", "quarterly", "report", "schedule"],
}


def brand_tsv(path: Path, entity: str, n: int = 120, seed: int = 0) -> Path:
    """Synthetic labelled tweets of one brand: the polarity word decides the label."""
    rng = random.Random(seed)
    lines = [HEADER]
    for i in range(n):
        related = rng.random() > 0.2
        polarity = rng.choice(sorted(WORDS)) if related else ""
        word = rng.choice(WORDS[polarity]) if related else "cartoon"
        text = f"{entity.lower()} {word} {rng.choice(['today', 'again', 'now'])} {i}"
        filtering = "RELATED" if related else "UNRELATED"
        lines.append(f"E1\t{entity}\t{i}\t{filtering}\t{polarity}\t{text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def acme_and_bolt_tsv(tmp_path: Path, **bolt: int) -> Path:
    """One TSV with two brands' tweets (``bolt``: brand_tsv's n/seed for Bolt's)."""
    a = brand_tsv(tmp_path / "a.tsv", "Acme").read_text().splitlines()
    b = brand_tsv(tmp_path / "b.tsv", "Bolt", **bolt).read_text().splitlines()[1:]
    both = tmp_path / "both.tsv"
    both.write_text("\n".join(a + b) + "\n")
    return both


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    model = tiny_classifier(seed=7, task_heads=True, related_head=True)
    root = tmp_path_factory.mktemp("adapt") / "parent"
    return build_tiny_bundle(root, variants=("int8",), model=model, version="2.0.0")


@pytest.fixture(scope="module")
def adapted(parent: ModelBundle, tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    tmp = tmp_path_factory.mktemp("adapted")
    data = brand_tsv(tmp / "acme.tsv", "Acme")
    result = CliRunner().invoke(
        trainer_app,
        ["adapt", "--model", str(parent.root), "--data", str(data), "--out", str(tmp / "out")],
    )
    assert result.exit_code == 0, result.output
    assert "bundle:" in result.output
    return ModelBundle.load(tmp / "out")


def test_adapted_bundle_names_its_head_and_a_newer_version(parent, adapted) -> None:
    m = adapted.manifest
    assert m.version == "2.0.0+acme"  # distinct per entity, not one "2.0.0.1" for all
    assert m.entity_heads and m.entity_heads["entities"] == ["Acme"]
    assert adapted.model_sha256 == parent.model_sha256  # the FlatBuffer is untouched
    (record,) = m.training["adapted"]
    assert record["entity"] == "Acme" and record["tweets"] == 120
    # Cross-validation never picks a correction that scores below no correction.
    cv = record["polarity"]["cv_accuracy"]
    assert max(cv.values()) >= cv["0"]
    assert record["polarity"]["before"]["total"] == record["polarity_tweets"]


def test_the_brand_gets_its_head_and_other_tweets_are_untouched(parent, adapted) -> None:
    general, special = Classifier(parent), Classifier(adapted)
    texts = ["acme recall again", "what a drive, love it"]
    heads = load_entity_heads(adapted.entity_heads_path, num_labels=3)
    for entity in ("Other brand", None):
        encoded = [general.encode(t, entity) for t in texts]
        np.testing.assert_array_equal(
            special.predict_logits(encoded), general.predict_logits(encoded)
        )
    for spelling in ("Acme", " ACME "):  # entities match case- and space-insensitively
        encoded = [special.encode(t, spelling) for t in texts]
        raw = special.run(encoded)
        expected = raw[OUTPUT_NAME] + heads["acme"].polarity(raw[EMBEDDING_OUTPUT])
        np.testing.assert_allclose(special.predict_logits(encoded), expected, rtol=1e-5)


def test_tampered_heads_file_is_refused(adapted, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(adapted.root, tmp_path / "copy"))
    heads = json.loads((copy / "entity_heads.json").read_text())
    heads["heads"]["acme"]["polarity"]["bias"] = [9.0, 0.0, 0.0]
    (copy / "entity_heads.json").write_text(json.dumps(heads))
    with pytest.raises(BundleError, match="does not match its manifest"):
        ModelBundle.load(copy)


def test_adapted_bundle_signs_verifies_and_installs(adapted, tmp_path: Path) -> None:
    from provisioning.cli import app as provision_app

    runner = CliRunner()

    def provision(*args: object) -> str:
        result = runner.invoke(provision_app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    key = tmp_path / "op.key"
    provision("keygen", key)
    provision("bundle", adapted.root, "--key", key, "--version", "5", "--out", tmp_path / "art")
    artifact = next((tmp_path / "art").iterdir())
    manifest = json.loads((artifact / "artifact.json").read_text())
    assert "entity_heads.json" in manifest["files"]
    assert any(c["entity"] == "Acme" for c in manifest["canaries"])
    pub = f"{key}.pub"
    provision("verify", artifact, "--trust-key", pub)
    state = tmp_path / "state"
    provision("install", "--from", artifact, "--state-dir", state, "--trust-key", pub)
    status = provision("status", "--state-dir", state)
    assert "5" in status and "tiny-random" in status


def test_data_of_several_brands_needs_entity(parent, tmp_path: Path) -> None:
    both = acme_and_bolt_tsv(tmp_path)
    result = CliRunner().invoke(
        trainer_app,
        ["adapt", "--model", str(parent.root), "--data", str(both), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2
    assert "give --entity" in result.output


def test_each_entity_fits_one_head_per_brand(parent, tmp_path: Path) -> None:
    both = acme_and_bolt_tsv(tmp_path, seed=1)
    out = tmp_path / "o"
    result = CliRunner().invoke(
        trainer_app,
        ["adapt", "--model", str(parent.root), "--data", str(both), "--out", str(out),
         "--each-entity"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert ModelBundle.load(out).manifest.entity_heads["entities"] == ["Acme", "Bolt"]


def test_entity_the_data_does_not_name_is_an_error_listing_those_it_does(
    parent, tmp_path: Path
) -> None:
    both = acme_and_bolt_tsv(tmp_path)
    out = tmp_path / "o"
    result = CliRunner().invoke(
        trainer_app,
        ["adapt", "--model", str(parent.root), "--data", str(both), "--out", str(out),
         "--entity", "Acm"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "names no entity 'Acm'" in result.output and "Acme, Bolt" in result.output
    assert not out.exists()


def test_entity_picks_its_tweets_name_version_words_and_curve(parent, tmp_path: Path) -> None:
    both = acme_and_bolt_tsv(tmp_path, n=50)
    out, png = tmp_path / "o", tmp_path / "curve.png"
    result = CliRunner().invoke(
        trainer_app,
        ["adapt", "--model", str(parent.root), "--data", str(both), "--out", str(out),
         "--entity", "bolt", "--name", "bolt-polarity", "--version", "7.1.0", "--curve", str(png)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    m = ModelBundle.load(out).manifest
    assert (m.name, m.version) == ("bolt-polarity", "7.1.0")
    (record,) = m.training["adapted"]
    assert record["entity"] == "Bolt" and record["tweets"] == 50  # only Bolt's tweets
    # Before and after in words, with intervals; no raw JSON dump.
    assert "current model on the labels:" in result.output
    assert "95 % interval" in result.output and "{" not in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adapting_an_adapted_bundle_adds_the_entity_to_the_version(adapted, tmp_path) -> None:
    data = brand_tsv(tmp_path / "bolt.tsv", "Bolt", seed=3)
    out = tmp_path / "o"
    result = CliRunner().invoke(
        trainer_app,
        ["adapt", "--model", str(adapted.root), "--data", str(data), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    m = ModelBundle.load(out).manifest
    assert m.version == "2.0.0+acme.bolt"
    assert m.entity_heads["entities"] == ["Acme", "Bolt"]
