"""Signed USB provisioning, end to end on real folders standing in for the stick.

Every rejection case starts from a node that serves version 1 and checks that version 1
still serves afterwards and that the reason names the problem.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgemodel.bundle import ModelBundle
from edgemodel.canaries import DEFAULT_CANARIES, Canary, compute_canaries
from edgemodel.inference import Classifier
from provisioning.artifact import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    ArtifactError,
    ArtifactManifest,
    build_artifact,
    runtime_of,
)
from provisioning.cli import app
from provisioning.install import Installer
from provisioning.keys import generate_keypair, load_private_key, sign
from provisioning.usb import STICK_DIR, find_artifacts, write_to_stick
from provisioning.versions import VersionError, is_newer, parse_version
from provisioning.watch import MountWatcher
from trainer.tiny import build_tiny_bundle

TEXTS = list(DEFAULT_CANARIES[:3])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny models, an operator key and an attacker key, artifacts v1 and v2."""
    root = tmp_path_factory.mktemp("provisioning")
    generate_keypair(root / "operator.key", root / "operator.pub")
    generate_keypair(root / "attacker.key", root / "attacker.pub")
    old = build_tiny_bundle(root / "model-old", version="0.0.1", seed=0)
    new = build_tiny_bundle(root / "model-new", version="0.0.2", seed=1)
    key = load_private_key(root / "operator.key")
    paths = {"root": root}
    for version, bundle in (("1", old), ("2", new)):
        classifier = Classifier(bundle)
        canaries, _ = compute_canaries(classifier, TEXTS)
        paths[f"v{version}"] = build_artifact(
            bundle, key, version, root / "out", canaries, runtime_of(classifier)
        )
    return paths


def put_on_stick(artifact: Path, mount: Path) -> Path:
    mount.mkdir(parents=True, exist_ok=True)
    return write_to_stick(artifact, mount)


@pytest.fixture
def node(world: dict[str, Path], tmp_path: Path) -> Installer:
    """A node whose active model is version 1."""
    installer = Installer(tmp_path / "state", [world["root"] / "operator.pub"])
    put_on_stick(world["v1"], tmp_path / "stick-v1")
    result = installer.install_from(tmp_path / "stick-v1")
    assert result.ok, result.reason
    return installer


def stick_copy(artifact: Path, tmp_path: Path) -> Path:
    """A stick holding ``artifact``; returns the artifact folder on it, to tamper with."""
    return put_on_stick(artifact, tmp_path / "stick")


def assert_still_serves_v1(node: Installer, result) -> None:
    assert not result.ok
    assert result.classifier is None
    assert node.state()["active"] == "1"
    assert node.active_model() == node.state_dir / "slots" / "1" / "bundle"
    assert not (node.state_dir / "slots" / "2").exists()
    classifier = Classifier(ModelBundle.load(node.active_model()))
    assert classifier.bundle.manifest.version == "0.0.1"
    assert classifier.classify(["still serving"])[0].label in classifier.labels
    assert [e["event"] for e in result.events][-1] == "rejected"


def test_good_artifact_installs_and_serves(node: Installer, world, tmp_path: Path) -> None:
    stick_copy(world["v2"], tmp_path)
    events: list[dict] = []
    result = node.install_from(tmp_path / "stick", on_event=events.append)

    assert result.ok, result.reason
    assert (result.outcome, result.version) == ("installed", "2")
    assert result.bundle_path == node.active_model() == node.state_dir / "slots/2/bundle"
    assert result.classifier.bundle.identity()["version"] == "0.0.2"
    assert result.classifier.classify(["great service"])[0].label in result.classifier.labels
    assert [e["event"] for e in events] == ["install_started", "installed"]
    assert events == result.events
    assert all({"event", "version", "reason", "artifact", "time"} <= set(e) for e in events)
    # The previous slot is kept for rollback; the downgrade floor is persisted.
    assert (node.state_dir / "slots" / "1" / "bundle").is_dir()
    state = json.loads((node.state_dir / "active.json").read_text())
    assert (state["active"], state["previous"], state["highest_accepted"]) == ("2", "1", "2")

    again = node.install_from(tmp_path / "stick")
    assert (again.ok, again.outcome, again.events) == (False, "unchanged", [])

    rolled = node.rollback()
    assert rolled.ok and node.state()["active"] == "1"
    assert rolled.classifier.bundle.manifest.version == "0.0.1"
    assert node.state()["highest_accepted"] == "2"
    # Rolling back does not lower the floor: version 2 is not re-installed from the stick.
    refused = node.install_from(tmp_path / "stick")
    assert not refused.ok and "installed before and then rolled back" in refused.reason


def test_flipped_model_byte_is_rejected(node: Installer, world, tmp_path: Path) -> None:
    model = stick_copy(world["v2"], tmp_path) / "bundle" / "int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))

    result = node.install_from(tmp_path / "stick")
    assert_still_serves_v1(node, result)
    assert "int8.tflite does not match its sha256" in result.reason


def test_edited_manifest_is_rejected(node: Installer, world, tmp_path: Path) -> None:
    manifest = stick_copy(world["v2"], tmp_path) / MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace('"version": "2"', '"version": "7"'))

    result = node.install_from(tmp_path / "stick")
    assert_still_serves_v1(node, result)
    assert result.reason.startswith("bad signature")


def test_wrong_key_is_rejected_even_if_artifact_names_its_own(
    node: Installer, world, tmp_path: Path
) -> None:
    """An attacker signs with their key and claims "alg"/"key" in the manifest: ignored."""
    artifact = stick_copy(world["v2"], tmp_path)
    doc = json.loads((artifact / MANIFEST_NAME).read_bytes())
    doc["alg"] = "none"
    doc["public_key"] = (world["root"] / "attacker.pub").read_text()
    data = json.dumps(doc).encode()
    (artifact / MANIFEST_NAME).write_bytes(data)
    attacker = load_private_key(world["root"] / "attacker.key")
    (artifact / SIGNATURE_NAME).write_bytes(sign(attacker, data))
    shutil.copy(world["root"] / "attacker.pub", artifact / "signing.pub")

    result = node.install_from(tmp_path / "stick")
    assert_still_serves_v1(node, result)
    assert result.reason.startswith("bad signature")
    assert "not signed by a trusted key" in result.reason


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "unsigned artifact"),
        (b"", "not a 64-byte Ed25519 signature"),
        (b"x" * 65, "not a 64-byte Ed25519 signature"),
    ],
)
def test_missing_or_empty_signature_is_rejected(
    node: Installer, world, tmp_path: Path, signature: bytes | None, reason: str
) -> None:
    sig = stick_copy(world["v2"], tmp_path) / SIGNATURE_NAME
    if signature is None:
        sig.unlink()
    else:
        sig.write_bytes(signature)

    result = node.install_from(tmp_path / "stick")
    assert_still_serves_v1(node, result)
    assert reason in result.reason


def test_downgrade_is_refused_and_the_floor_survives_restart(world, tmp_path: Path) -> None:
    keys = [world["root"] / "operator.pub"]
    node = Installer(tmp_path / "state", keys)
    put_on_stick(world["v2"], tmp_path / "stick-v2")
    assert node.install_from(tmp_path / "stick-v2").ok
    put_on_stick(world["v1"], tmp_path / "stick-v1")

    for installer in (node, Installer(tmp_path / "state", keys)):  # a restarted node too
        result = installer.install_from(tmp_path / "stick-v1")
        assert not result.ok
        assert result.reason.startswith("downgrade refused: version 1 is not newer than 2")
        assert installer.state()["active"] == "2"
        assert [e["event"] for e in result.events] == ["rejected"]


def test_truncated_copy_is_rejected(node: Installer, world, tmp_path: Path) -> None:
    model = stick_copy(world["v2"], tmp_path) / "bundle" / "int8.tflite"
    with open(model, "r+b") as f:
        f.truncate(model.stat().st_size // 2)

    result = node.install_from(tmp_path / "stick")
    assert_still_serves_v1(node, result)
    assert "truncated copy: bundle/int8.tflite" in result.reason


def test_oversized_file_is_rejected(node: Installer, world, tmp_path: Path) -> None:
    model = stick_copy(world["v2"], tmp_path) / "bundle" / "int8.tflite"
    with open(model, "ab") as f:
        f.write(b"\0" * 4096)

    result = node.install_from(tmp_path / "stick")
    assert_still_serves_v1(node, result)
    assert result.reason.startswith("oversized file: bundle/int8.tflite")


def test_symlinked_file_is_rejected_even_with_the_right_content(
    node: Installer, world, tmp_path: Path
) -> None:
    model = stick_copy(world["v2"], tmp_path) / "bundle" / "int8.tflite"
    model.unlink()
    model.symlink_to(world["v2"] / "bundle" / "int8.tflite")

    result = node.install_from(tmp_path / "stick")
    assert_still_serves_v1(node, result)
    assert "bundle/int8.tflite is missing or not a regular file" in result.reason


def test_symlinked_bundle_folder_is_rejected(node: Installer, world, tmp_path: Path) -> None:
    """bundle/ linking to a genuine bundle elsewhere: the folder link itself is refused."""
    artifact = stick_copy(world["v2"], tmp_path)
    shutil.rmtree(artifact / "bundle")
    (artifact / "bundle").symlink_to(world["v2"] / "bundle", target_is_directory=True)

    result = node.install_from(tmp_path / "stick")
    assert_still_serves_v1(node, result)
    assert result.reason == f"{artifact / 'bundle'} is a symlink; symlinked folders are refused"


def test_symlinked_stick_folder_is_rejected(node: Installer, world, tmp_path: Path) -> None:
    """MOUNT/repedge linking to a folder of genuine artifacts elsewhere is refused."""
    elsewhere = put_on_stick(world["v2"], tmp_path / "elsewhere").parent
    mount = tmp_path / "stick"
    mount.mkdir()
    (mount / STICK_DIR).symlink_to(elsewhere, target_is_directory=True)

    result = node.install_from(mount)
    assert_still_serves_v1(node, result)
    assert result.reason == f"{mount / STICK_DIR} is a symlink; symlinked folders are refused"
    with pytest.raises(ArtifactError, match="is a symlink"):
        write_to_stick(world["v2"], mount)  # the writer does not follow it either


def test_symlinked_artifact_folder_is_rejected(node: Installer, world, tmp_path: Path) -> None:
    elsewhere = put_on_stick(world["v2"], tmp_path / "elsewhere")
    mount = tmp_path / "stick"
    (mount / STICK_DIR).mkdir(parents=True)
    (mount / STICK_DIR / elsewhere.name).symlink_to(elsewhere, target_is_directory=True)

    result = node.install_from(mount)
    assert_still_serves_v1(node, result)
    assert "is a symlink; symlinked folders are refused" in result.reason


def test_model_failing_its_self_test_is_rejected(node: Installer, world, tmp_path: Path) -> None:
    """A correctly signed artifact whose canary labels are not what the model says."""
    bundle = ModelBundle.load(world["root"] / "model-new")
    classifier = Classifier(bundle)
    real, _ = compute_canaries(classifier, TEXTS)
    labels = classifier.labels
    wrong = [
        Canary(text=c.text, label=labels[(labels.index(c.label) + 1) % len(labels)]) for c in real
    ]
    artifact = build_artifact(
        bundle,
        load_private_key(world["root"] / "operator.key"),
        "2",
        tmp_path / "out",
        wrong,
        runtime_of(classifier),
    )
    put_on_stick(artifact, tmp_path / "stick")

    result = node.install_from(tmp_path / "stick")
    assert_still_serves_v1(node, result)
    assert result.reason.startswith("self-test failed: canary")
    assert f"manifest expects {wrong[0].label!r}" in result.reason
    assert [e["event"] for e in result.events] == ["install_started", "rejected"]


def test_private_key_is_created_0600_and_never_overwritten(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # the mode must come from creation, not from a friendly umask
    try:
        generate_keypair(tmp_path / "k" / "signing.key", tmp_path / "k" / "signing.pub")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "k" / "signing.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    assert b"PRIVATE" not in (tmp_path / "k" / "signing.pub").read_bytes()
    before = (tmp_path / "k" / "signing.key").read_bytes()
    with pytest.raises(Exception, match="refusing to overwrite"):
        generate_keypair(tmp_path / "k" / "signing.key", tmp_path / "k" / "other.pub")
    assert (tmp_path / "k" / "signing.key").read_bytes() == before


def test_write_to_stick_is_atomic_and_read_back(world, tmp_path: Path) -> None:
    mount = tmp_path / "stick"
    copy = put_on_stick(world["v2"], mount)
    assert copy == mount / STICK_DIR / "tiny-random-2"
    assert find_artifacts(mount) == [copy]
    assert [p.name for p in (mount / STICK_DIR).iterdir()] == ["tiny-random-2"]  # no temp left
    assert write_to_stick(world["v2"], mount) == copy  # an identical copy is kept

    broken = tmp_path / "broken"
    shutil.copytree(world["v1"], broken)
    (broken / "bundle" / "labels.json").write_text('["x"]')
    with pytest.raises(ArtifactError, match=r"labels\.json"):
        write_to_stick(broken, mount)
    # A half-written copy under a hidden temp name is not an artifact.
    (mount / STICK_DIR / ".tiny-random-3.tmp").mkdir()
    assert find_artifacts(mount) == [copy]


def test_versions_compare_numerically() -> None:
    assert parse_version("1.10") > parse_version("1.9")
    assert parse_version("1.0") == parse_version("1")
    assert is_newer("10", "9") and not is_newer("2", "2.0") and is_newer("1", None)
    for bad in ("01", "1.a", "", "-1", "1..2", "v1"):
        with pytest.raises(VersionError):
            parse_version(bad)


def test_manifest_with_unsafe_file_name_is_refused(world) -> None:
    doc = json.loads((world["v1"] / MANIFEST_NAME).read_bytes())
    doc["files"]["../../etc/cron.d/x"] = doc["files"]["labels.json"]
    with pytest.raises(ArtifactError, match="unsafe file name"):
        ArtifactManifest.from_bytes(json.dumps(doc).encode())


def test_watcher_installs_once_and_does_not_retry_a_rejection(
    node: Installer, world, tmp_path: Path
) -> None:
    mount = tmp_path / "mnt"
    mount.mkdir()
    installed: list[str] = []
    events: list[dict] = []
    watcher = MountWatcher(
        mount, node, lambda clf, res: installed.append(res.version), events.append, interval=0.05
    )
    assert watcher.poll() is None  # empty mount point: no stick

    copy = put_on_stick(world["v2"], mount)
    assert watcher.poll() is None  # first sight: wait one poll for the copy to settle
    result = watcher.poll()
    assert result is not None and result.ok
    assert installed == ["2"]
    assert watcher.poll() is None  # same stick: not looked at again

    # A second, unsigned artifact appears: rejected once, not retried on later polls.
    bad = mount / STICK_DIR / "tiny-random-3"
    shutil.copytree(copy, bad)
    (bad / SIGNATURE_NAME).unlink()
    watcher.poll()
    result = watcher.poll()
    assert result is not None and result.outcome == "unchanged"
    assert [e["event"] for e in events][-1] == "rejected"
    count = len(events)
    for _ in range(3):
        assert watcher.poll() is None
    assert len(events) == count

    # Stick removed and re-inserted: looked at afresh (the artifact is rejected again).
    shutil.move(mount / STICK_DIR, tmp_path / "pulled")
    watcher.poll()
    shutil.move(tmp_path / "pulled", mount / STICK_DIR)
    watcher.poll()
    assert watcher.poll() is not None
    assert len(events) == count + 1


def test_watcher_thread_reports_events(node: Installer, world, tmp_path: Path) -> None:
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = threading.Event()
    events: list[dict] = []
    swapped: list[Classifier] = []

    def on_event(event: dict) -> None:
        events.append(event)
        if event["event"] == "installed":
            done.set()

    def on_installed(classifier: Classifier, result) -> None:
        assert not done.is_set()  # the node switches before "installed" is announced
        swapped.append(classifier)

    watcher = MountWatcher(mount, node, on_installed, on_event, interval=0.05)
    watcher.start()
    try:
        put_on_stick(world["v2"], mount)
        assert done.wait(60), events
    finally:
        watcher.stop(timeout=10)
    assert not watcher.is_alive()
    assert swapped[0].bundle.manifest.version == "0.0.2"
    assert [e["event"] for e in events] == ["install_started", "installed"]
    assert events[-1]["model"]["version"] == "0.0.2"


def test_cli_end_to_end(world, tmp_path: Path) -> None:
    runner = CliRunner()
    key = tmp_path / "keys" / "op.key"

    def run(*args: str):
        result = runner.invoke(app, [str(a) for a in args])
        return result.exit_code, result.output

    code, out = run("keygen", key)
    assert code == 0 and "fingerprint: ed25519:" in out
    code, out = run(
        "bundle", world["root"] / "model-new", "--key", key, "--version", "3",
        "--out", tmp_path / "out", "--canary", "lovely day", "--canary", "awful service",
    )  # fmt: skip
    assert code == 0, out
    artifact = tmp_path / "out" / "tiny-random-3"
    assert [c["text"] for c in json.loads((artifact / MANIFEST_NAME).read_text())["canaries"]] == [
        "lovely day",
        "awful service",
    ]
    code, out = run("bundle", world["root"] / "model-new", "--key", key, "--version", "03")
    assert code == 1 and "invalid version" in out

    (tmp_path / "usb").mkdir()
    code, out = run("write", artifact, "--to", tmp_path / "usb")
    assert code == 0 and "written and verified" in out
    code, out = run("verify", tmp_path / "usb/repedge/tiny-random-3", "--trust-key", f"{key}.pub")
    assert code == 0 and "version 3" in out

    state = tmp_path / "state"
    install = ("install", "--from", tmp_path / "usb", "--state-dir", state)
    code, out = run(*install, "--trust-key", world["root"] / "operator.pub")
    assert code == 1 and "bad signature" in out and "active model unchanged" in out
    code, out = run(*install, "--trust-key", f"{key}.pub")
    assert code == 0 and "installed version 3" in out
    code, out = run("status", "--state-dir", state)
    assert code == 0 and '"active": "3"' in out
    code, out = run("--help")
    assert code == 0 and all(c in out for c in ("keygen", "bundle", "write", "install"))


def test_node_without_model_serves_the_installed_one(tmp_path):
    """After `provision install`, `node start` with no --model picks the installed slot."""
    from edgemodel.bundle import DEFAULT_BUNDLE_DIR
    from node.serve import installed_or_default_model
    from provisioning.install import installed_model

    state = tmp_path / "prov"
    assert installed_model(state) is None
    assert installed_or_default_model(state) == DEFAULT_BUNDLE_DIR
    slot = state / "slots" / "3" / "bundle"
    slot.mkdir(parents=True)
    (state / "active.json").write_text('{"active": "3"}')
    assert installed_model(state) == slot
    assert installed_or_default_model(state) == slot
