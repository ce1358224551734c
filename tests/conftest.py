"""Shared fixtures, thin wrappers over the harness package (harness/): a real Mosquitto
from repedge's own config, the tiny bundle, node processes on their own topics.

Fixture names are a contract with other test files: ``mosquitto`` (.host, .port,
.data_dir, .url), ``tiny_bundle`` (a ModelBundle), ``topics`` and ``node_factory``.
Helpers (Collector, publish, wait_until, ...) are imported from ``harness``, never from
this file.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import Mosquitto, NodeProcess, Topics, start_mosquitto


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory):
    from trainer.tiny import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture
def topics(request: pytest.FixtureRequest) -> Topics:
    return Topics(f"test/{request.node.name}/{uuid.uuid4().hex[:6]}")


@pytest.fixture
def node_factory(
    tmp_path: Path, topics: Topics, tiny_bundle, mosquitto: Mosquitto
) -> Iterator[Callable[..., NodeProcess]]:
    """Make NodeProcess objects (not started); every one left running is killed afterwards."""
    made: list[NodeProcess] = []

    def make(
        broker: Mosquitto | None = None, model: Path | None = None, extra: list[str] | None = None
    ) -> NodeProcess:
        node_id = f"t{uuid.uuid4().hex[:8]}"
        node = NodeProcess(
            model=model or tiny_bundle.root,
            broker=broker or mosquitto,
            node_id=node_id,
            topics=topics,
            state_dir=tmp_path / node_id / "state",
            extra=extra or [],
        )
        made.append(node)
        return node

    yield make
    for node in made:
        if node.alive():
            node.kill()
