"""The broker's password file, managed through Mosquitto's own ``mosquitto_passwd``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from broker.config import find_program


class UserError(RuntimeError):
    """mosquitto_passwd refused a change."""


def _run_passwd(args: list[str], mosquitto_passwd: str | None) -> None:
    program = find_program("mosquitto_passwd", mosquitto_passwd)
    result = subprocess.run([program, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UserError((result.stderr or result.stdout).strip() or f"exit {result.returncode}")


def add_user(
    password_file: Path, name: str, password: str, mosquitto_passwd: str | None = None
) -> None:
    """Add ``name`` or change its password (the file is created if needed)."""
    if not name or ":" in name or name != name.strip():
        raise UserError(f"invalid user name {name!r}")
    password_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # -b takes the password as an argument: it is visible to `ps` for the few
    # milliseconds mosquitto_passwd runs, which is acceptable on a single-user edge box.
    create = [] if password_file.exists() and password_file.stat().st_size else ["-c"]
    _run_passwd([*create, "-b", str(password_file), name, password], mosquitto_passwd)
    os.chmod(password_file, 0o600)


def remove_user(password_file: Path, name: str, mosquitto_passwd: str | None = None) -> None:
    if name not in list_users(password_file):
        raise UserError(f"no user {name!r} in {password_file}")
    _run_passwd(["-D", str(password_file), name], mosquitto_passwd)


def list_users(password_file: Path) -> list[str]:
    if not password_file.exists():
        return []
    lines = password_file.read_text(encoding="utf-8").splitlines()
    return [line.split(":", 1)[0] for line in lines if ":" in line and not line.startswith("#")]
