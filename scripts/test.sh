#!/usr/bin/env bash
# Installs what a fresh machine needs to run Listy's tests, then `make test`.
# Expects PostgreSQL (127.0.0.1:5432, user postgres, trust auth, database
# test) and MariaDB (127.0.0.1:3306, root with no password, database test) to
# be running; starts them when they are installed but stopped and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pkg in memcached nutcracker libmemcached-dev openssl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y memcached nutcracker libmemcached-dev openssl
  else
    echo "missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
fi

if [ "$(id -u)" = 0 ]; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  # listy_sync's tests (tests/test_listy_sync.py) need a logical change
  # stream: wal_level = logical takes a restart, done once on a fresh machine.
  if command -v psql >/dev/null && command -v pg_ctlcluster >/dev/null \
      && [ "$(psql -h 127.0.0.1 -U postgres -Atc 'SHOW wal_level' 2>/dev/null)" = replica ]; then
    psql -h 127.0.0.1 -U postgres -c "ALTER SYSTEM SET wal_level = logical"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main restart
    for _ in $(seq 30); do (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && break; sleep 1; done
  fi
  if ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null && [ -x /usr/sbin/mariadbd ]; then
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    for _ in $(seq 30); do (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null && break; sleep 1; done
  fi
fi

make test-deps
make -k test
