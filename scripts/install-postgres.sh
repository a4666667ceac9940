#!/usr/bin/env bash
# Provides what asyncpg's own test suite (tests/third_party/run.py --suite asyncpg) needs from
# the machine: PostgreSQL's server binaries (initdb, pg_ctl, postgres; the suite starts its own
# temporary clusters with them, it uses no running server) and, when the suite runs as root,
# an unprivileged user to run it as (initdb and postgres refuse to run as root).
#
# On Debian/Ubuntu, as root: `apt-get install -y postgresql` (the distribution's supported major
# version, e.g. 15 on Debian 12; its binaries are in /usr/lib/postgresql/<major>/bin, which
# `pg_config --bindir` names), and a system user `ferroloop-tests` (no home, no login shell).
# Idempotent: does nothing that is already done. Elsewhere, install the server binaries by other
# means and set PGINSTALLATION to their directory (asyncpg's cluster code reads it); a non-root
# user running the suite needs nothing else.
set -euo pipefail

user="${FERROLOOP_PG_USER:-ferroloop-tests}"

have_server() {
    local bindir
    if [ -n "${PGINSTALLATION:-}" ]; then
        bindir="$PGINSTALLATION"
    elif command -v pg_config >/dev/null 2>&1; then
        bindir="$(pg_config --bindir)"
    else
        return 1
    fi
    [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] && [ -x "$bindir/postgres" ]
}

if have_server; then
    echo "PostgreSQL server binaries: present"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== apt-get install -y postgresql"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
    have_server || { echo "postgresql installed, but pg_config does not name its binaries" >&2; exit 1; }
else
    echo "PostgreSQL's server binaries (initdb, pg_ctl, postgres) are missing." >&2
    echo "Install them as root (Debian/Ubuntu: apt-get install -y postgresql), or set" >&2
    echo "PGINSTALLATION to the directory that holds them." >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    if id -u "$user" >/dev/null 2>&1; then
        echo "user $user: present"
    else
        echo "== useradd $user (asyncpg's suite runs as this user: initdb refuses root)"
        useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "$user"
    fi
fi
