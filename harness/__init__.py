"""One harness for the tests and the benchmarks: real processes, real broker, no mocks.

- a private Mosquitto with repedge's config (``start_mosquitto``, ``Mosquitto``: from
  broker.local, which `node bench --broker local` uses too);
- ``free_port`` and ``wait_listening`` (common.ports);
- ``wait_until``: poll a condition instead of sleeping for a guess; ``holds_for``: a
  condition that must stay true (nothing more arrives); ``settled``: a value that stopped
  changing;
- ``Collector`` / ``publish``: watch and feed MQTT topics; ``subscriber``: a client
  subscribed before it returns, for a benchmark's own message handler;
- ``NodeProcess`` / ``embedded_node``: a node as `python -m node start`, or in process;
- ``DashboardProcess``: `dashboard serve` on a free port, subscribed;
- ``harness.postgres``: a throwaway PostgreSQL server.

A real package rather than helpers imported from tests/conftest.py: the name ``tests``
also belongs to tf2onnx's installed test folder, so ``from tests.conftest import`` broke
plain ``pytest``. pytest finds it through ``pythonpath = ["."]`` (pyproject.toml); a
benchmark puts the repository on sys.path first. It is not shipped in the wheel.
"""

from broker.local import Mosquitto, start_mosquitto
from common.ports import free_port, wait_listening
from harness.dashboard import DashboardProcess
from harness.mqtt import Collector, Received, publish, subscriber
from harness.node import REPO, NodeProcess, Topics, embedded_node
from harness.waiting import WAIT_S, holds_for, settled, wait_until

__all__ = [
    "REPO",
    "WAIT_S",
    "Collector",
    "DashboardProcess",
    "Mosquitto",
    "NodeProcess",
    "Received",
    "Topics",
    "embedded_node",
    "free_port",
    "holds_for",
    "publish",
    "settled",
    "start_mosquitto",
    "subscriber",
    "wait_listening",
    "wait_until",
]
