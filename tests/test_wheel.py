"""`pip install .` on a device: the wheel carries the default model, and `node start` without
--model serves it.

The wheel is built from a copy of the sources (the shared checkout stays clean) without
build isolation, and installed with --no-deps into a fresh venv that borrows this venv's
installed dependencies through a plain path entry; that entry is not a site folder, so this
venv's editable install of repedge is not seen. The fresh venv's own copy of repedge comes
first on sys.path, and the node runs from a folder outside the checkout, through its
console script. Together: well under a minute, no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import uuid
from pathlib import Path

import pytest

from harness import REPO, WAIT_S, Collector, Mosquitto, publish

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def code_packages() -> set[str]:
    """Every package in the checkout's top-level folders that pyproject.toml lists."""
    found = set()
    for top in {p.split(".")[0] for p in SETUPTOOLS["packages"]}:
        for init in (REPO / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(REPO).parts))
    return found


def data_folders() -> set[str]:
    """Folders with files inside a listed package: setuptools wants them listed too
    (otherwise it prints a "package would be ignored" banner for each, on every install)."""
    found = set()
    for top in {p.split(".")[0] for p in SETUPTOOLS["packages"]}:
        for folder in (REPO / top).rglob("*"):
            if (
                folder.is_dir()
                and folder.name != "__pycache__"
                and any(f.is_file() and f.suffix != ".pyc" for f in folder.iterdir())
            ):
                found.add(".".join(folder.relative_to(REPO).parts))
    return found


def test_every_package_is_listed() -> None:
    listed = set(SETUPTOOLS["packages"])
    assert code_packages() <= listed, f"add to pyproject.toml: {code_packages() - listed}"
    assert data_folders() <= listed, f"add to pyproject.toml: {data_folders() - listed}"
    # harness/ drives the tests and benchmarks from a checkout: never shipped.
    tops = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"harness"}
    assert tops <= {p.split(".")[0] for p in listed}, "a top-level package is not in the wheel"


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the repedge wheel installed; returns its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for top in {p.split(".")[0] for p in SETUPTOOLS["packages"]}:
        shutil.copytree(REPO / top, src / top, ignore=skip)
    for folder in SETUPTOOLS.get("package-dir", {}).values():
        shutil.copytree(REPO / folder, src / folder, ignore=skip)
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root), str(src)])
    (wheel,) = root.glob("repedge-*.whl")

    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)])
    site = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
    # This venv's dependencies (paho, litert, ...), after the fresh venv's own packages.
    (Path(site) / "borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REPEDGE_MODEL")}
    return {**env, "PYTHONUNBUFFERED": "1"}


def test_installed_wheel_loads_its_own_default_model(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import json, edgemodel.bundle as b, node.cli;"
        "from edgemodel.inference import Classifier;"
        "c = Classifier.from_path(b.default_bundle_path());"
        "print(json.dumps({'dir': str(b.DEFAULT_BUNDLE_DIR), 'node': node.cli.__file__,"
        "'label': c.classify(['I love my new car'])[0].label}))"
    )
    out = json.loads(
        run([str(installed / "python"), "-c", probe], cwd=tmp_path, env=clean_env()).stdout
    )
    venv = installed.parent
    assert Path(out["dir"]).is_relative_to(venv), "the model came from the checkout"
    assert Path(out["dir"]).name == "default_model"
    assert Path(out["node"]).is_relative_to(venv), "the code came from the checkout"
    assert out["label"] in {"positive", "neutral", "negative"}


def test_installed_node_start_without_model_serves_the_default(
    installed: Path, tmp_path: Path, mosquitto: Mosquitto
) -> None:
    node_id = f"w{uuid.uuid4().hex[:6]}"
    prefix = f"test/wheel/{node_id}"
    watcher = Collector(mosquitto, [f"{prefix}/labels", f"repedge/nodes/{node_id}/status"])
    log = tmp_path / "node.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(installed / "node"), "start", "--broker", mosquitto.url,
             "--node-id", node_id, "--state-dir", str(tmp_path / "state"),
             "--tweets-topic", f"{prefix}/tweets", "--labels-topic", f"{prefix}/labels",
             "--errors-topic", f"{prefix}/errors", "--threads", "1",
             "--session-expiry", "60"],
            cwd=tmp_path, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        watcher.wait_for(
            lambda msgs: any(
                m.json()["state"] == "online" for m in msgs if m.topic.endswith("/status")
            ),
            what=f"installed node online; log:\n{log.read_text(errors='replace')}",
        )
        publish(mosquitto, f"{prefix}/tweets", [json.dumps({"id": "w1", "text": "great car"})])
        (label,) = watcher.wait_count(f"{prefix}/labels", 1, WAIT_S)
        record = label.json()
        shipped = json.loads((REPO / "models" / "default" / "manifest.json").read_text())
        assert record["id"] == "w1"
        assert record["model"]["version"] == shipped["version"]
    finally:
        process.terminate()
        process.wait(WAIT_S)
        watcher.close()
