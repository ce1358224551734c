"""The dashboard's settings: the one place their defaults and ranges are written.

`dashboard serve`, `top` and `collect` take their option defaults from here and build one
:class:`DashboardSettings` per run, which checks every value (issue 20 item 5).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import setting, validate


@dataclass(frozen=True)
class DashboardSettings:
    broker: str = setting("mqtt://localhost:1883", max_len=2048)
    port: int = setting(8080, min=1, max=65_535)
    host: str = setting("127.0.0.1", max_len=253)
    # The live per-minute view kept in memory, and labelled tweets kept per entity.
    history: int = setting(60, min=1, max=7 * 24 * 60)
    recent: int = setting(50, min=1, max=10_000)
    # Seconds between batched updates to the browsers; a floor keeps it from spinning.
    push_interval: float = setting(0.5, min=0.05, max=60.0)
    # Seconds between history writes; a kill -9 loses at most this much.
    flush_interval: float = setting(2.0, min=0.1, max=3600.0)
    alert_max_entities: int = setting(100, min=1, max=100_000)
    # `collect`: seconds the broker keeps its session (and queues labels) while it is down.
    session_expiry: int = setting(7 * 86400, min=0, max=365 * 86400)
    # `top --once`: seconds to collect before printing.
    wait: float = setting(2.0, min=0.0, max=3600.0)

    def __post_init__(self) -> None:
        validate(self)
        if any(c.isspace() for c in self.host):
            from common.settings import SettingsError

            raise SettingsError(f"--host: {self.host!r} is not an address")
