"""The ack ledger: every in-flight publish, the connection epoch, and when a tweet may be acked.

The node receives tweets with QoS 1 and manual acknowledgement. A tweet's PUBACK goes to
the broker only once the broker has acknowledged the record that answers it, so a crash at
any moment leaves the tweet with the broker. This module is that rule, kept apart from
paho so it can be tested exhaustively (tests/test_node_ledger.py); it imports nothing from
MQTT. node/mqtt_shell.py drives it:

* ``publish(send, qos, completes)`` wraps one ``client.publish`` call. ``send`` returns the
  message id paho drew and whether paho will report the publish through ``on_publish``.
  Every publish is recorded, QoS 0 included: paho reports QoS 0 publishes too (when they
  are written to the socket), and all publishes draw their ids from one 16-bit counter
  that wraps after 65,535. An unrecorded QoS 0 id would otherwise be taken for someone
  else's acknowledgement.
* ``on_publish(mid)`` is paho's callback. It may run before ``publish`` has returned the
  id to us (paho's network thread sees the PUBACK first). Such an early report is kept
  only while a publish that could own it is still between ``send`` and registration, and
  it is dropped the moment all of those have registered. It can never outlive them, so
  it can never be claimed by a later publish that draws the same id after a wrap.
* Should a publish draw an id that is still in flight (a record unacknowledged through a
  full 65,535-id cycle), both are kept under that id and released together, once the id
  has been reported as often as it was drawn: acks may be late, never early.
* ``connection_reset()`` (before each CONNECT) forgets QoS 0 publishes: paho drops unsent
  QoS 0 packets on reconnect and never reports them. QoS 1 publishes stay: paho resends
  them on the new connection and reports them then.
* ``connected()`` starts a new epoch. A tweet is acked only on the connection that
  delivered it (its packet id may be reused on the next one); tweets of an earlier epoch
  are left to the broker, which redelivers them, and the record store answers those.
* ``wait_drained(timeout)``: until no QoS 1 publish is in flight (used by ``stop()``).

Acks are sent through the ``send_ack`` callable given to the constructor, outside the
ledger's lock, on whichever thread completed the publish.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("repedge.node")


class Ackable(Protocol):
    """An inbound message the ledger may acknowledge: which connection delivered it, and
    whether it needs an ack at all (QoS 0 deliveries do not)."""

    @property
    def epoch(self) -> int: ...

    @property
    def needs_ack(self) -> bool: ...


@dataclass
class _Entry:
    qos: int
    completes: list[Any]


@dataclass
class _Slot:
    """Publishes currently holding one message id (normally exactly one)."""

    entries: list[_Entry] = field(default_factory=list)
    reports: int = 0  # on_publish calls seen for this id while these entries were in flight


@dataclass(frozen=True)
class LedgerStats:
    in_flight: int
    in_flight_qos1: int
    early_reports: int
    id_collisions: int
    acked: int
    skipped_stale: int  # completed tweets of an earlier connection, left to redelivery
    epoch: int


class AckLedger:
    def __init__(self, send_ack: Callable[[Any], None]) -> None:
        self._send_ack = send_ack
        self._cond = threading.Condition()
        self._epoch = 0
        self._slots: dict[int, _Slot] = {}
        self._qos1 = 0
        # Publishes between send() and registration, and early reports waiting for them:
        # mid -> tokens of the publishes that were pending when the report arrived.
        self._pending: set[int] = set()
        self._early: dict[int, set[int]] = {}
        self._tokens = itertools.count(1)
        self._generation = 0  # bumped by connection_reset()
        self._collisions = 0
        self._acked = 0
        self._stale = 0

    # -- connection -------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    def connected(self) -> int:
        """A new connection is up: tweets delivered from now on carry the new epoch."""
        with self._cond:
            self._epoch += 1
            return self._epoch

    def connection_reset(self) -> None:
        """About to (re)connect: paho has dropped unsent QoS 0 packets; forget them."""
        with self._cond:
            self._generation += 1
            for mid, slot in list(self._slots.items()):
                kept = [e for e in slot.entries if e.qos > 0]
                if len(kept) == len(slot.entries):
                    continue
                if kept and slot.reports == 0:
                    slot.entries = kept
                    continue
                # Only QoS 0, or a collision whose report may have been the QoS 0 one:
                # forget the id. Whatever it completes belongs to the old connection and
                # could not be acked any more; paho still resends the QoS 1 record.
                del self._slots[mid]
                self._qos1 -= len(kept)
            self._early.clear()  # reports of the old connection can complete nothing new
            self._cond.notify_all()

    # -- publishing -------------------------------------------------------------------

    def publish(
        self, send: Callable[[], tuple[int, bool]], qos: int, completes: Iterable[Any] = ()
    ) -> bool:
        """Run ``send`` (one client publish) and record it; False if it was not taken.

        ``send`` returns ``(mid, reported)``: the message id, and whether the client will
        call ``on_publish`` for it (False: refused, or QoS 0 while disconnected). The
        ``completes`` are acked when this publish is reported, if their epoch is current.
        """
        completes = list(completes)
        with self._cond:
            token = next(self._tokens)
            self._pending.add(token)
            generation = self._generation
        mid, reported = -1, False
        try:
            mid, reported = send()
        finally:
            to_ack = self._register(token, mid, reported, qos, completes, generation)
        self._ack(to_ack)
        return reported

    def _register(
        self,
        token: int,
        mid: int,
        reported: bool,
        qos: int,
        completes: list[Any],
        generation: int,
    ) -> list[Any]:
        with self._cond:
            self._pending.discard(token)
            early = self._early.pop(mid, None) if reported else None
            to_ack: list[Any] = []
            if reported and not (qos == 0 and generation != self._generation):
                # (A QoS 0 publish sent across a reconnect may have been dropped unsent.)
                slot = self._slots.get(mid)
                if slot is None:
                    slot = self._slots[mid] = _Slot()
                elif slot.entries:
                    self._collisions += 1
                    log.warning(
                        "message id %d drawn again while still in flight; its acks wait "
                        "for both publishes",
                        mid,
                    )
                slot.entries.append(_Entry(qos, completes))
                if qos > 0:
                    self._qos1 += 1
                if early is not None:
                    slot.reports += 1
                to_ack = self._settle(mid, slot)
            # Early reports that only this publish could still have claimed are void now.
            for other in [m for m, owners in self._early.items() if token in owners]:
                owners = self._early[other]
                owners.discard(token)
                if not owners:
                    del self._early[other]
            return to_ack

    def on_publish(self, mid: int) -> None:
        """The client reports publish ``mid`` done (PUBACK for QoS 1, written for QoS 0)."""
        with self._cond:
            slot = self._slots.get(mid)
            if slot is None:
                if self._pending:
                    # Its publisher has not registered yet (or it is nobody's): keep it
                    # exactly as long as one of the publishes now pending could claim it.
                    self._early.setdefault(mid, set()).update(self._pending)
                else:
                    log.debug("report for unknown message id %d ignored", mid)
                return
            slot.reports += 1
            to_ack = self._settle(mid, slot)
        self._ack(to_ack)

    def _settle(self, mid: int, slot: _Slot) -> list[Any]:
        """Release a slot once it has been reported as often as it has entries."""
        if slot.reports < len(slot.entries):
            return []
        del self._slots[mid]
        to_ack: list[Any] = []
        for entry in slot.entries:
            if entry.qos > 0:
                self._qos1 -= 1
            for item in entry.completes:
                if not item.needs_ack:
                    continue
                if item.epoch == self._epoch:
                    to_ack.append(item)
                else:
                    self._stale += 1
        if self._qos1 == 0:
            self._cond.notify_all()
        return to_ack

    def _ack(self, items: list[Any]) -> None:
        for item in items:
            try:
                self._send_ack(item)
            except Exception:
                log.exception("ack failed; the broker redelivers the tweet")
        if items:
            with self._cond:
                self._acked += len(items)

    # -- drain and inspection ---------------------------------------------------------

    def wait_drained(self, timeout: float) -> bool:
        """Wait until no QoS 1 publish is in flight; False on timeout."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            return self._cond.wait_for(
                lambda: self._qos1 == 0, max(0.0, deadline - time.monotonic())
            )

    def stats(self) -> LedgerStats:
        with self._cond:
            return LedgerStats(
                in_flight=sum(len(s.entries) for s in self._slots.values()),
                in_flight_qos1=self._qos1,
                early_reports=len(self._early),
                id_collisions=self._collisions,
                acked=self._acked,
                skipped_stale=self._stale,
                epoch=self._epoch,
            )
