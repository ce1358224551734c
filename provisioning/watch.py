"""Watch a mount point for a USB stick carrying an artifact; install it in the background.

Each poll takes a fingerprint of the stick's artifact files (names, sizes, mtimes). The
installer runs only when the fingerprint is new and has been the same on two polls in a row
(so a copy still in progress is not judged half-written), and never twice for the same
fingerprint: an artifact that was installed or rejected is not retried in a loop. When the
stick goes away the memory is cleared, so re-inserting it tries again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.timestamps import utc_now
from edgemodel.inference import Classifier
from provisioning.install import InstalledSlot, Installer, InstallResult
from provisioning.usb import find_artifacts

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


def stick_fingerprint(mount: Path) -> Fingerprint:
    """What is on the stick, cheaply: (path, size, mtime) of every file in every artifact."""
    found = []
    for artifact in find_artifacts(mount):
        for folder, _dirs, files in os.walk(artifact):
            for name in files:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue  # vanished while we looked: the next poll sees the new state
                found.append((path, st.st_size, st.st_mtime_ns))
    return tuple(sorted(found))


class MountWatcher(threading.Thread):
    def __init__(
        self,
        mount: Path,
        installer: Installer,
        on_installed: Callable[[Classifier, InstallResult], None],
        on_event: Callable[[dict[str, Any]], None],
        interval: float = 2.0,
    ) -> None:
        super().__init__(name=f"mount-watcher:{mount}", daemon=True)
        self.mount = Path(mount)
        self.installer = installer
        self.on_installed = on_installed
        self.on_event = on_event
        self.interval = interval
        self._stop_event = threading.Event()
        self._handled: Fingerprint | None = None
        self._last_seen: Fingerprint = ()

    def stop(self, timeout: float | None = None) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.poll()
            except Exception:  # the watcher must outlive any one bad stick
                log.exception("mount watcher poll failed")
            self._stop_event.wait(self.interval)

    def poll(self) -> InstallResult | None:
        """One look at the mount; returns the install result if an install was attempted."""
        current = stick_fingerprint(self.mount)
        settled = current == self._last_seen
        self._last_seen = current
        if not current:
            self._handled = None  # stick gone: a re-inserted stick is looked at afresh
            return None
        if not settled or current == self._handled:
            return None
        self._handled = current
        held: list[dict[str, Any]] = []

        def forward(event: dict[str, Any]) -> None:
            # "installed" goes out only after the node has switched, so whoever sees it
            # knows that tweets sent from then on are labelled by the new model.
            if event["event"] == "installed":
                held.append(event)
            else:
                self._emit(event)

        result = self.installer.install_from(self.mount, on_event=forward)
        if result.ok and result.classifier is not None:
            try:
                self.on_installed(result.classifier, result)
            except Exception as exc:
                log.exception("on_installed callback failed")
                self._emit(
                    {
                        "event": "swap_failed",
                        "version": result.version,
                        "reason": f"installed but the node could not switch: {exc}",
                        "artifact": str(result.artifact),
                        "time": utc_now(),
                    }
                )
        for event in held:
            self._emit(event)
        return result

    def _emit(self, event: dict[str, Any]) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("on_event callback failed")


class MountUpdates:
    """The node's model-updates interface (node/updates.py, ``ModelUpdates``) over a mount
    point: ``active_model()`` is the installed slot, and between ``start(sink)`` and
    ``stop()`` a :class:`MountWatcher` installs what appears on the stick and hands each
    new model to ``sink.swap_classifier``, every event to ``sink.record_event``.

    node/serve.py builds it; the node itself never imports provisioning.
    """

    def __init__(self, mount: Path, installer: Installer, interval: float = 2.0) -> None:
        self.mount = Path(mount)
        self.installer = installer
        self.interval = interval
        self._watcher: MountWatcher | None = None

    def active_model(self) -> InstalledSlot | None:
        return self.installer.active_slot()

    def start(self, sink: Any) -> None:
        self._watcher = MountWatcher(
            mount=self.mount,
            installer=self.installer,
            on_installed=lambda new, _result: sink.swap_classifier(new),
            on_event=sink.record_event,
            interval=self.interval,
        )
        self._watcher.start()

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
