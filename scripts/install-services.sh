#!/usr/bin/env bash
# Install repedge's systemd services: the broker, the node (one instance per node id) and
# the USB model installer. Run as root on the machine that runs them:
#
#   sudo scripts/install-services.sh            # then, for example:
#   sudo systemctl enable --now repedge-broker repedge-node@$(hostname)
#
# Options:
#   --bin DIR    folder holding the `broker`, `node` and `provision` programs
#                (default: where `broker` is found on PATH, else this checkout's .venv/bin)
#   --root DIR   install below DIR instead of / (no user, no daemon-reload): for tests and
#                for building images
#
# Units go to /etc/systemd/system, example configs to /etc/repedge (existing files there are
# never overwritten), and a system user `repedge` is created if missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root=""
bin=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) root="${2:?--root needs a folder}"; shift 2 ;;
        --bin) bin="${2:?--bin needs a folder}"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
root="${root%/}"

if [[ -z "$bin" ]]; then
    if command -v broker >/dev/null 2>&1; then
        bin="$(dirname "$(command -v broker)")"
    else
        bin="$here/.venv/bin"
    fi
fi
bin="$(cd "$bin" 2>/dev/null && pwd)" || { echo "error: --bin folder not found" >&2; exit 2; }
for program in broker node provision; do
    if [[ ! -x "$bin/$program" ]]; then
        echo "error: $bin/$program is missing; install repedge there (pip install .) or pass --bin DIR" >&2
        exit 2
    fi
done
if [[ -z "$root" && "$(id -u)" != 0 ]]; then
    echo "error: run as root (sudo), or pass --root DIR to install into a folder" >&2
    exit 2
fi

units="$root/etc/systemd/system"
configs="$root/etc/repedge"
install -d -m 0755 "$units"
install -d -m 0755 "$configs"
for unit in "$here"/deploy/systemd/*.service; do
    # The unit files name the programs as @BIN@/...: systemd needs absolute paths.
    sed "s|@BIN@|$bin|g" "$unit" > "$units/$(basename "$unit")"
    chmod 0644 "$units/$(basename "$unit")"
    echo "installed $units/$(basename "$unit")"
done
for example in node.toml broker.toml; do
    if [[ -e "$configs/$example" ]]; then
        echo "kept      $configs/$example (already there)"
    else
        install -m 0644 "$here/examples/$example" "$configs/$example"
        echo "installed $configs/$example"
    fi
done

if [[ -n "$root" ]]; then
    echo "(--root: no user created, no daemon-reload)"
    exit 0
fi
if ! id repedge >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/repedge --no-create-home \
        --shell /usr/sbin/nologin repedge
    echo "created system user repedge"
fi
if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    echo "systemd reloaded; start with: systemctl enable --now repedge-broker repedge-node@$(hostname)"
else
    echo "systemd is not running here; the units take effect on the next boot"
fi
