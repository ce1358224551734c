"""How installed models reach the node: a small interface that provisioning implements.

The node knows nothing of USB sticks, signatures or install slots. A model source tells
it which model is installed (to serve at start) and, while it runs, hands it new ones:

* :class:`ModelSource`: ``active_model()``, the installed model (or None before the first
  install) with what the node needs to serve and check it: its folder, the variant that
  was signed, and the canary tweets recorded when it was packaged.
* :class:`ModelUpdates`: a model source that also runs alongside the node; ``start(sink)``
  begins watching and calls ``sink.swap_classifier(classifier)`` and
  ``sink.record_event(event)``; ``stop()`` ends it. :class:`~node.service.NodeService` is
  the sink and starts and stops the updates with itself.

provisioning/watch.py's ``MountUpdates`` implements both. Only the composition root,
node/serve.py, imports provisioning and wires it in; nothing else under node/ does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from edgemodel.inference import Classifier


class InstalledModel(Protocol):
    """What a model source says about the installed model (structural: provisioning's
    ``InstalledSlot`` has these attributes without importing node)."""

    @property
    def path(self) -> Path: ...

    @property
    def variant(self) -> str | None: ...

    # Canary tweets ({"text", "entity", "label"}) the model must still answer as recorded.
    @property
    def canaries(self) -> list[dict[str, Any]]: ...

    # The whole bundle's digest as signed (edgemodel.bundle.bundle_digest); None: unknown.
    @property
    def bundle_sha256(self) -> str | None: ...


class ModelSink(Protocol):
    def swap_classifier(self, classifier: Classifier) -> None: ...

    def record_event(self, event: dict[str, Any]) -> None: ...


class ModelSource(Protocol):
    def active_model(self) -> InstalledModel | None: ...


class ModelUpdates(ModelSource, Protocol):
    def start(self, sink: ModelSink) -> None: ...

    def stop(self) -> None: ...
