"""Side threads come back: telemetry (and the HTTP servers' loops) restart when they die,
say so in the log, and labelling never waits for them."""

from __future__ import annotations

import errno
import json
import logging
import threading

from common.supervise import supervised_thread
from edgemodel.inference import Classifier
from harness import WAIT_S, Collector, embedded_node, publish


def test_a_dying_thread_is_restarted_and_says_so(caplog):
    stop = threading.Event()
    runs: list[int] = []
    done = threading.Event()

    def job() -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise OSError(errno.EMFILE, "Too many open files")
        done.set()
        stop.wait()

    with caplog.at_level(logging.INFO, logger="test.supervise"):
        thread = supervised_thread(job, "job", stop, logging.getLogger("test.supervise"),
                                   delay_s=0.01)  # fmt: skip
        assert done.wait(WAIT_S)
        stop.set()
        thread.join(WAIT_S)
    assert len(runs) == 3 and not thread.is_alive()
    died = [r for r in caplog.records if "job thread died" in r.getMessage()]
    assert len(died) == 2 and "Too many open files" in died[0].getMessage()
    assert any("job thread restarted" in r.getMessage() for r in caplog.records)


def test_telemetry_that_fails_comes_back_and_labelling_goes_on(
    mosquitto, tiny_bundle, tmp_path, caplog
):
    service, topics = embedded_node(
        mosquitto, tmp_path, Classifier(tiny_bundle, num_threads=1), telemetry_interval_s=0.5
    )
    real = service.telemetry
    failures = []

    def telemetry_failing_twice() -> dict:
        if len(failures) < 2:
            failures.append(1)
            raise OSError(errno.EMFILE, "Too many open files")  # what psutil hit under attack
        return real()

    service.telemetry = telemetry_failing_twice  # type: ignore[method-assign]
    telemetry_topic = service.config.node_topic("telemetry")
    watcher = Collector(mosquitto, [topics.labels, topics.errors, telemetry_topic])
    service.start()
    try:
        assert service.wait_connected(WAIT_S)
        tweets = [json.dumps({"id": f"s{i}", "text": f"good phone {i}"}) for i in range(20)]
        publish(mosquitto, topics.tweets, tweets)
        assert len(watcher.wait_count(topics.labels, 20)) == 20
        reports = watcher.wait_count(telemetry_topic, 2)  # after both failures
        assert len(failures) == 2 and reports[-1].json()["node_id"] == service.config.node_id
        died = [r for r in caplog.records if "telemetry thread died" in r.getMessage()]
        assert len(died) == 2
    finally:
        service.stop()
        watcher.close()
