"""Every model file checked before it serves (issue 20 item 4, issue 16 item 5).

Crafted bundles (an edited labels.json, a swapped tokenizer, bad per-entity heads, huge or
deep JSON) go through the three doors a model comes in by: ``ModelBundle.load`` +
``Classifier`` (what ``node start --model`` runs), ``provision bundle`` and ``provision
install``. Each is a clear one-line refusal, and an installed model keeps serving. Label
records carry the whole bundle's digest, so two adapted bundles are told apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgemodel.bundle import (
    BUNDLE_FORMAT,
    DEFAULT_BUNDLE_DIR,
    MANIFEST_FILE,
    MAX_JSON_BYTES,
    BundleError,
    ModelBundle,
    update_manifest,
    write_derived_bundle,
)
from edgemodel.canaries import DEFAULT_CANARIES, compute_canaries
from edgemodel.entity_heads import (
    ENTITY_HEADS_FILE,
    ENTITY_HEADS_FORMAT,
    MAX_ENTITY_HEADS,
    MAX_HEADS_FILE_BYTES,
    Correction,
    EntityHead,
)
from edgemodel.inference import Classifier
from harness import REPO, WAIT_S
from node.core import BatchStep, CoreConfig, Inbound
from node.messages import dumps
from node.serve import StartError, load_classifier
from provisioning.artifact import MANIFEST_NAME, build_artifact, runtime_of
from provisioning.cli import app as provision_app
from provisioning.install import Installer, installed_slot
from provisioning.keys import generate_keypair, load_private_key, sign
from trainer.tiny import build_tiny_bundle, tiny_classifier

WIDTH = 32  # the tiny model's embedding output


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as a strict consumer does."""

    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    """A tiny three-head bundle (polarity, related, embedding) with no canaries."""
    model = tiny_classifier(seed=7, task_heads=True, related_head=True)
    root = tmp_path_factory.mktemp("model-files") / "parent"
    return build_tiny_bundle(root, variants=("int8",), model=model, version="2.0.0")


def heads_doc(entities: list[str], dim: int = WIDTH, weight: float = 0.01) -> dict:
    rng = np.random.default_rng(0)
    return {
        "format": ENTITY_HEADS_FORMAT,
        "embedding_dim": dim,
        "heads": {
            " ".join(e.split()).casefold(): {
                "entity": e,
                "polarity": {
                    "weight": (rng.standard_normal((dim, 3)) * weight).tolist(),
                    "bias": [0.0, 0.1, -0.1],
                },
                "related": None,
                "info": {},
            }
            for e in entities
        },
    }


def with_heads(parent: ModelBundle, root: Path, heads: dict | bytes) -> Path:
    """A copy of ``parent`` with this heads file, its sha256 in the manifest: what a
    buggy tool or an attacker who can write the folder makes (the hashes all agree)."""
    shutil.copytree(parent.root, root)
    data = heads if isinstance(heads, bytes) else json.dumps(heads).encode()
    (root / ENTITY_HEADS_FILE).write_bytes(data)
    entry = {"file": ENTITY_HEADS_FILE, "sha256": hashlib.sha256(data).hexdigest()}
    update_manifest(root, entity_heads={**entry, "entities": []})
    return root


def adapted(parent: ModelBundle, root: Path, entity: str, seed: int) -> ModelBundle:
    """An adapted bundle of ``parent``, version 2.0.0.1, through the trainer's writer."""
    rng = np.random.default_rng(seed)
    head = EntityHead(
        entity,
        Correction(
            rng.standard_normal((WIDTH, 3)).astype(np.float32) * 0.5,
            np.zeros(3, np.float32),
        ),
    )
    from edgemodel.entity_heads import save_entity_heads

    heads = save_entity_heads(root.parent / f"{root.name}.heads.json", {"x": head}, WIDTH)
    return write_derived_bundle(
        parent,
        root,
        variant_files={"int8": parent.model_path},
        version="2.0.0.1",
        entity_heads_file=heads,
    )


def provision(*args: object):
    return CliRunner().invoke(provision_app, [str(a) for a in args])


def assert_clean_refusal(result, *words: str) -> None:
    """Exit 1 with a one-line ``error: ...`` naming the problem, and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output


def node_start(model: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "node", "start", "--model", str(model),
         "--broker", "mqtt://127.0.0.1:9", "--state-dir", str(tmp_path / "state"),
         "--node-id", "crafted", "--threads", "1"],
        capture_output=True, text=True, timeout=WAIT_S, cwd=REPO,
    )  # fmt: skip


@pytest.fixture(scope="module")
def operator_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    generate_keypair(root / "operator.key", root / "operator.pub")
    return root / "operator.key"


# -- 1. the bundle digest covers every file --------------------------------------------


def test_an_edited_labels_json_is_refused(parent, tmp_path) -> None:
    """Before: labels.json was in no digest, and a node served the swapped class names."""
    root = Path(shutil.copytree(parent.root, tmp_path / "edited"))
    (root / "labels.json").write_text(json.dumps(["positive", "neutral", "negative"]))
    with pytest.raises(BundleError, match=r"labels\.json does not match its manifest"):
        ModelBundle.load(root)
    done = node_start(root, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "labels.json does not match its manifest" in done.stderr
    assert "Traceback" not in done.stderr


def _swap_tokenizer(root: Path) -> None:
    tokenizer = json.loads((root / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["good"], vocab["bad"] = vocab["bad"], vocab["good"]
    (root / "tokenizer.json").write_text(json.dumps(tokenizer))


def _labels_of_another_width(root: Path) -> None:
    (root / "labels.json").write_text(json.dumps(["a", "b", "c", "d"]))
    _rehash_labels(root)


def _rehash_labels(root: Path) -> None:
    update_manifest(
        root, labels_sha256=hashlib.sha256((root / "labels.json").read_bytes()).hexdigest()
    )


def _deep_manifest(root: Path) -> None:
    (root / MANIFEST_FILE).write_text("[" * 100_000 + "]" * 100_000)


def _huge_manifest(root: Path) -> None:
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    manifest["training"] = {"padding": "x" * (MAX_JSON_BYTES + 1)}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))


def _path_in_manifest(root: Path) -> None:
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    manifest["variants"]["int8"]["file"] = "../../etc/passwd"
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))


def _no_labels_sha(root: Path) -> None:
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    del manifest["labels_sha256"]
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("craft", "message"),
    [
        (_swap_tokenizer, "tokenizer.json does not match its manifest"),
        (_labels_of_another_width, "names 4 classes"),
        (_deep_manifest, "nested too deeply"),
        (_huge_manifest, f"larger than {MAX_JSON_BYTES} bytes"),
        (_path_in_manifest, "unsafe or missing file name"),
        (_no_labels_sha, f"{BUNDLE_FORMAT} needs labels_sha256"),
    ],
    ids=["swapped-tokenizer", "labels-width", "deep-json", "huge-json", "path", "no-labels-sha"],
)
def test_crafted_bundles_are_refused_by_node_and_packaging(
    parent, operator_key, tmp_path, craft, message
) -> None:
    root = Path(shutil.copytree(parent.root, tmp_path / "crafted"))
    craft(root)
    with pytest.raises(StartError, match=message):  # what `node start --model` runs
        load_classifier(root, None, 1, [])
    result = provision(
        "bundle", root, "--key", operator_key, "--version", "9", "--out", tmp_path / "out"
    )
    assert_clean_refusal(result, message)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_labels_file_that_is_no_regular_file_is_refused_not_waited_on(parent, tmp_path):
    root = Path(shutil.copytree(parent.root, tmp_path / "fifo"))
    (root / "labels.json").unlink()
    os.mkfifo(root / "labels.json")  # opening it for reading would block forever
    with pytest.raises(BundleError, match="not a regular file"):
        ModelBundle.load(root)


def test_mutated_flatbuffers_fail_at_load_without_canaries(parent, tmp_path) -> None:
    """Issue 20: 21 of 64 mutated FlatBuffers were accepted by bundles without canaries.
    The variant's sha256 is checked at every load, also for a bundle opened with
    verify=False and then handed to a Classifier."""
    root = Path(shutil.copytree(parent.root, tmp_path / "mutated"))
    assert not ModelBundle.load(root).manifest.canaries
    model = root / "int8.tflite"
    original = model.read_bytes()
    rng = random.Random(20)
    for _ in range(64):
        mutated = bytearray(original)
        offset = rng.randrange(len(mutated))
        mutated[offset] ^= 1 << rng.randrange(8)
        model.write_bytes(bytes(mutated))
        with pytest.raises(BundleError, match="does not match its manifest"):
            ModelBundle.load(root)
        with pytest.raises(BundleError, match="does not match its manifest"):
            Classifier(ModelBundle.load(root, verify=False), num_threads=1)
    model.write_bytes(original)
    assert Classifier(ModelBundle.load(root), num_threads=1).classify(["fine"])


def test_the_bundle_digest_is_reproducible_and_covers_every_file(parent) -> None:
    bundle = ModelBundle.load(parent.root)
    files = bundle.contract_files()
    assert set(files) == {"manifest.json", "labels.json", "tokenizer.json", "int8.tflite"}
    # sha256sum FILES | LC_ALL=C sort -k 2 | sha256sum, by hand:
    listing = "".join(
        f"{hashlib.sha256((parent.root / f).read_bytes()).hexdigest()}  {f}\n"
        for f in sorted(files)
    )
    assert bundle.bundle_sha256 == hashlib.sha256(listing.encode()).hexdigest()
    assert bundle.identity()["bundle_sha256"] == bundle.bundle_sha256
    assert bundle.identity()["sha256"] == bundle.model_sha256  # kept: the FlatBuffer's


def test_two_adapted_bundles_are_told_apart_in_label_records(parent, tmp_path) -> None:
    """Issue 16 item 5: Toyota's and Kia's adapted bundles were both repedge 2.0.0.1 with
    the same FlatBuffer sha256, and their records carried identical `model` blocks."""
    toyota = adapted(parent, tmp_path / "toyota", "Toyota", seed=1)
    kia = adapted(parent, tmp_path / "kia", "Kia", seed=2)
    assert toyota.manifest.version == kia.manifest.version == "2.0.0.1"
    assert toyota.model_sha256 == kia.model_sha256
    records = {}
    for bundle in (toyota, kia):
        step = BatchStep(CoreConfig(node_id="n1"))
        tweet = json.dumps({"id": "1", "text": "the dealer was great", "entity": "Toyota"})
        (out,) = step.run([Inbound(tweet.encode())], Classifier(bundle, num_threads=1)).records
        records[bundle.manifest.entity_heads["entities"][0]] = strict_json(out.payload)["model"]
    assert records["Toyota"]["bundle_sha256"] == toyota.bundle_sha256
    assert records["Kia"]["bundle_sha256"] == kia.bundle_sha256
    assert records["Toyota"]["bundle_sha256"] != records["Kia"]["bundle_sha256"]
    assert {k: v for k, v in records["Toyota"].items() if k != "bundle_sha256"} == {
        k: v for k, v in records["Kia"].items() if k != "bundle_sha256"
    }


def test_format_1_bundles_still_load_and_a_manifest_rewrite_migrates_them(parent, tmp_path):
    root = Path(shutil.copytree(parent.root, tmp_path / "legacy"))
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    manifest["format"] = "repedge-bundle/1"
    del manifest["labels_sha256"]
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    legacy = ModelBundle.load(root)
    # labels.json is in no manifest of format 1, but the bundle digest still covers it.
    (root / "labels.json").write_text(json.dumps(["positive", "neutral", "negative"]))
    assert ModelBundle.load(root).bundle_sha256 != legacy.bundle_sha256
    migrated = update_manifest(root)  # also what `trainer copy-bundle` writes
    assert migrated.format == BUNDLE_FORMAT and migrated.labels_sha256
    (root / "labels.json").write_text(json.dumps(["negative", "neutral", "positive"]))
    with pytest.raises(BundleError, match=r"labels\.json does not match"):
        ModelBundle.load(root)


@pytest.mark.skipif(
    not (DEFAULT_BUNDLE_DIR / MANIFEST_FILE).is_file(), reason="no shipped model here"
)
def test_the_shipped_model_still_loads() -> None:
    bundle = ModelBundle.load(DEFAULT_BUNDLE_DIR)
    assert len(bundle.bundle_sha256) == 64


# -- 3. per-entity heads: one validation, at every door ---------------------------------


def _nan_heads() -> bytes:
    doc = heads_doc(["Acme"])
    doc["heads"]["acme"]["polarity"]["bias"] = [float("nan"), 0.0, 0.0]
    return json.dumps(doc).encode()  # Python writes NaN, which json.loads reads back


def _huge_weights() -> dict:
    doc = heads_doc(["Acme"])
    doc["heads"]["acme"]["polarity"]["weight"] = np.full((WIDTH, 3), 3e38).tolist()
    return doc


def _deep_heads() -> bytes:
    return b'{"format": "repedge-entity-heads/1", "heads": ' + b"[" * 100_000 + b"]" * 100_000


def _oversized_heads() -> bytes:
    return json.dumps(heads_doc(["Acme"])).encode() + b" " * MAX_HEADS_FILE_BYTES


BAD_HEADS = {
    "huge-weights": (_huge_weights, "beyond the sane bound"),
    "nan": (_nan_heads, "weights must be finite"),
    "wrong-width": (lambda: heads_doc(["Acme"], dim=WIDTH // 2), "16-wide embedding"),
    "too-many": (
        lambda: heads_doc([f"brand {i}" for i in range(MAX_ENTITY_HEADS + 1)], weight=0),
        f"more than the {MAX_ENTITY_HEADS} allowed",
    ),
    "oversized": (_oversized_heads, f"larger than the {MAX_HEADS_FILE_BYTES} bytes"),
    "deep": (_deep_heads, "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADS))
def test_bad_heads_fail_the_load_with_one_clear_line(parent, operator_key, tmp_path, case):
    """Before: 3e38 weights were signed, installed and served as NaN scores; a wrong width
    loaded and then failed every tweet of a batch; a 100k-deep file crashed packaging."""
    make, message = BAD_HEADS[case]
    root = with_heads(parent, tmp_path / case, make())
    with pytest.raises(StartError, match=message):  # node start --model
        load_classifier(root, None, 1, [])
    result = provision(
        "bundle", root, "--key", operator_key, "--version", "9", "--out", tmp_path / "out"
    )
    assert_clean_refusal(result, message)
    if case == "wrong-width":
        return  # the width is the FlatBuffer's: checked where the model is opened
    # The trainer's writer applies the same check: it never writes such a bundle.
    with pytest.raises(BundleError, match=message):
        write_derived_bundle(
            parent,
            tmp_path / "rewritten",
            variant_files={"int8": parent.model_path},
            entity_heads_file=root / ENTITY_HEADS_FILE,
        )


def test_node_start_refuses_bad_heads_without_a_traceback(parent, tmp_path) -> None:
    root = with_heads(parent, tmp_path / "huge", _huge_weights())
    done = node_start(root, tmp_path)
    assert done.returncode == 2, done.stderr
    assert "beyond the sane bound" in done.stderr and "Traceback" not in done.stderr


def test_packaging_and_install_agree_on_the_heads_cap(parent, operator_key, tmp_path) -> None:
    """Issue 20: 20,000 heads made a 6.4 MB artifact.json that `provision bundle` signed
    and `provision install` always refused. Now the cap is one number for both, and
    packaging also refuses an artifact.json larger than a node reads."""
    full = with_heads(
        parent,
        tmp_path / "full",
        heads_doc([f"brand {i}" for i in range(MAX_ENTITY_HEADS)], weight=0.001),
    )
    result = provision(
        "bundle", full, "--key", operator_key, "--version", "3", "--out", tmp_path / "art"
    )
    assert result.exit_code == 0, result.output
    artifact = next((tmp_path / "art").iterdir())
    node = Installer(tmp_path / "state", [operator_key.with_suffix(".pub")])
    installed = node.install_from(artifact)
    assert installed.ok, installed.reason
    assert len(installed.classifier.entity_heads) == MAX_ENTITY_HEADS
    # Canary texts long enough to overflow artifact.json: refused before signing.
    result = provision(
        "bundle", full, "--key", operator_key, "--version", "4", "--out", tmp_path / "art",
        "--canary", "great service " * 400, "--canary", "awful service " * 400,
    )  # fmt: skip
    assert_clean_refusal(result, "a node reads")


def test_signed_bad_heads_are_refused_at_install_and_the_old_model_serves(
    parent, operator_key, tmp_path
) -> None:
    """A packager that skipped the checks (the library, not the CLI) signs 3e38 heads:
    the node's install refuses them and keeps serving what it had."""
    key = load_private_key(operator_key)
    node = Installer(tmp_path / "state", [operator_key.with_suffix(".pub")])
    good = Classifier(parent, num_threads=1)
    canaries, _ = compute_canaries(good, list(DEFAULT_CANARIES[:2]))
    v1 = build_artifact(parent, key, "1", tmp_path / "art", canaries, runtime_of(good))
    assert node.install_from(v1).ok
    bad = ModelBundle.load(with_heads(parent, tmp_path / "bad", _huge_weights()))
    v2 = build_artifact(bad, key, "2", tmp_path / "art", canaries, runtime_of(good))
    result = node.install_from(v2)
    assert not result.ok and "beyond the sane bound" in result.reason
    assert node.state()["active"] == "1"
    slot = installed_slot(node.state_dir)
    assert slot is not None
    served = load_classifier(slot.path, slot.variant, 1, slot.canaries, slot.bundle_sha256)
    assert served.bundle.bundle_sha256 == parent.bundle_sha256


def resign_with(artifact: Path, crafted: Path, key_path: Path, version: str) -> Path:
    """The artifact with its bundle/ replaced by ``crafted`` and artifact.json re-signed
    over whatever is there: a packager that signs without checking (or a stolen key)."""
    out = artifact.parent / f"crafted-{version}"
    shutil.copytree(artifact, out)
    shutil.rmtree(out / "bundle")
    shutil.copytree(crafted, out / "bundle")
    doc = json.loads((out / MANIFEST_NAME).read_text())
    doc["version"] = version
    doc["files"] = {
        f.name: {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "size": f.stat().st_size}
        for f in sorted((out / "bundle").iterdir())
    }
    doc["bundle"].pop("sha256", None)
    data = (json.dumps(doc, indent=2) + "\n").encode()
    (out / MANIFEST_NAME).write_bytes(data)
    (out / "artifact.json.sig").write_bytes(sign(load_private_key(key_path), data))
    return out


def _edit_labels(parent: ModelBundle, root: Path) -> None:
    shutil.copytree(parent.root, root)
    (root / "labels.json").write_text(json.dumps(["positive", "neutral", "negative"]))


def _swapped_tokenizer(parent: ModelBundle, root: Path) -> None:
    shutil.copytree(parent.root, root)
    _swap_tokenizer(root)


SIGNED_CRAFTS = {
    "edited-labels": (_edit_labels, "labels.json does not match its manifest"),
    "swapped-tokenizer": (_swapped_tokenizer, "tokenizer.json does not match its manifest"),
    "huge-weights": (lambda p, r: with_heads(p, r, _huge_weights()), "beyond the sane bound"),
    "nan-heads": (lambda p, r: with_heads(p, r, _nan_heads()), "weights must be finite"),
    "deep-heads": (lambda p, r: with_heads(p, r, _deep_heads()), "nested too deeply"),
    "wrong-width": (
        lambda p, r: with_heads(p, r, heads_doc(["Acme"], dim=WIDTH // 2)),
        "16-wide embedding",
    ),
}


def test_signed_crafted_bundles_are_refused_at_install(parent, operator_key, tmp_path) -> None:
    """Through `provision install`: each crafted bundle, validly signed, is refused with
    its reason, and version 1 keeps serving."""
    key = load_private_key(operator_key)
    good = Classifier(parent, num_threads=1)
    canaries, _ = compute_canaries(good, list(DEFAULT_CANARIES[:2]))
    v1 = build_artifact(parent, key, "1", tmp_path / "art", canaries, runtime_of(good))
    node = Installer(tmp_path / "state", [operator_key.with_suffix(".pub")])
    assert node.install_from(v1).ok
    for n, (case, (craft, message)) in enumerate(sorted(SIGNED_CRAFTS.items()), start=2):
        craft(parent, tmp_path / case)
        artifact = resign_with(v1, tmp_path / case, operator_key, str(n))
        result = node.install_from(artifact)
        assert not result.ok and message in result.reason, (case, result.reason)
        assert node.state()["active"] == "1", case
    slot = installed_slot(node.state_dir)
    assert slot is not None
    load_classifier(slot.path, slot.variant, 1, slot.canaries, slot.bundle_sha256)


def test_a_signed_bundle_digest_that_contradicts_the_file_list_is_refused(
    parent, operator_key, tmp_path
) -> None:
    key = load_private_key(operator_key)
    good = Classifier(parent, num_threads=1)
    canaries, _ = compute_canaries(good, list(DEFAULT_CANARIES[:2]))
    v1 = build_artifact(parent, key, "1", tmp_path / "art", canaries, runtime_of(good))
    doc = json.loads((v1 / MANIFEST_NAME).read_text())
    doc["bundle"]["sha256"] = "0" * 64
    data = json.dumps(doc).encode()
    (v1 / MANIFEST_NAME).write_bytes(data)
    (v1 / "artifact.json.sig").write_bytes(sign(key, data))
    result = Installer(tmp_path / "state", [operator_key.with_suffix(".pub")]).install_from(v1)
    assert not result.ok and "bundle sha256 does not match its file list" in result.reason


# -- 4. scores are always finite -------------------------------------------------------


def test_a_non_finite_output_is_an_error_record_and_spares_the_batch(parent, tmp_path):
    """Heads past the load checks (here put in memory) that overflow: that brand's tweets
    get `non_finite_output`, every other tweet of the same batch its label. Before: 10 of
    10 records carried "scores":{"negative":NaN,...}, which is not JSON."""
    classifier = Classifier(adapted(parent, tmp_path / "acme", "Acme", seed=3), num_threads=1)
    overflow = Correction(np.full((WIDTH, 3), 3e38, np.float32), np.zeros(3, np.float32))
    classifier.entity_heads["acme"] = EntityHead("Acme", overflow)
    tweets = [
        {"id": "a1", "text": "acme recall again", "entity": "Acme"},
        {"id": "o1", "text": "acme recall again", "entity": "Other"},
        {"id": "n1", "text": "what a lovely day"},
        {"id": "a2", "text": "love the new acme", "entity": "acme"},
    ]
    batch = [Inbound(json.dumps(t).encode()) for t in tweets]
    result = BatchStep(CoreConfig(node_id="n1")).run(batch, classifier)
    assert not result.retried_singly  # one bad row does not fail the batch
    records = {strict_json(r.payload)["id"]: r for r in result.records}
    assert {i: r.kind for i, r in records.items()} == {
        "a1": "error",
        "o1": "label",
        "n1": "label",
        "a2": "error",
    }
    assert records["a1"].reason == records["a2"].reason == "non_finite_output"


def test_records_are_never_serialised_with_nan() -> None:
    with pytest.raises(ValueError):
        dumps({"scores": {"negative": float("nan")}})
    assert dumps({"scores": {"negative": 0.5}}) == '{"scores":{"negative":0.5}}'


# -- 7. provisioning: what is installed is what was signed ------------------------------


def test_a_slot_changed_after_install_is_refused_at_node_start(
    parent, operator_key, tmp_path
) -> None:
    key = load_private_key(operator_key)
    classifier = Classifier(parent, num_threads=1)
    canaries, _ = compute_canaries(classifier, list(DEFAULT_CANARIES[:2]))
    artifact = build_artifact(parent, key, "1", tmp_path / "art", canaries, runtime_of(classifier))
    signed = json.loads((artifact / MANIFEST_NAME).read_text())
    assert signed["bundle"]["sha256"] == parent.bundle_sha256
    shown = provision("verify", artifact, "--trust-key", operator_key.with_suffix(".pub"))
    assert f"bundle sha256: {parent.bundle_sha256}" in shown.output
    # A stray file on the stick is not part of the bundle: never copied, never served.
    (artifact / "bundle" / "extra.tflite").write_bytes(parent.model_path.read_bytes())
    node = Installer(tmp_path / "state", [operator_key.with_suffix(".pub")])
    assert node.install_from(artifact).ok
    slot = installed_slot(node.state_dir)
    assert slot is not None and not (slot.path / "extra.tflite").exists()
    assert slot.bundle_sha256 == parent.bundle_sha256
    load_classifier(slot.path, slot.variant, 1, slot.canaries, slot.bundle_sha256)
    # Someone edits labels.json in the slot and rewrites the manifest's hash to match.
    (slot.path / "labels.json").write_text(json.dumps(["positive", "neutral", "negative"]))
    _rehash_labels(slot.path)
    ModelBundle.load(slot.path)  # consistent in itself ...
    with pytest.raises(StartError, match="not the one that was signed"):  # ... not signed
        load_classifier(slot.path, slot.variant, 1, slot.canaries, slot.bundle_sha256)
