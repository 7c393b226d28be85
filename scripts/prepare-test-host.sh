#!/usr/bin/env bash
# Makes this machine able to run the test suite, idempotently: Debian client tools (pg_dump, mysqldump, zstd,
# pigz, sshd, ...), a PostgreSQL server on 127.0.0.1:5432 that trusts loopback, and a MariaDB server on
# 127.0.0.1:3306 with a password-less root. On a machine that already has them it changes nothing and takes ~1 s.
# Installing needs root (apt-get); without root it only reports what is missing.
set -euo pipefail

log() { printf 'prepare-test-host: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else log "need root for: $*"; return 1; fi; }

missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_cmd pg_dump postgresql-client
need_cmd psql postgresql-client
need_cmd mysqldump mariadb-client
need_cmd mysql mariadb-client
need_cmd zstd zstd
need_cmd pigz pigz
need_cmd /usr/sbin/sshd openssh-server
need_cmd tar tar
need_cmd gzip gzip
need_cmd shellcheck shellcheck
need_cmd debootstrap debootstrap
need_cmd systemd-nspawn systemd-container
need_cmd nsenter util-linux
[ -x /usr/lib/postgresql/*/bin/postgres ] 2>/dev/null || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)

if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing: ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# PostgreSQL: running, trusting loopback (tests create and drop their own databases).
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  if [ -z "$version" ]; then log "PostgreSQL is installed but has no cluster"; exit 1; fi
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    log "configuring $hba to trust 127.0.0.1 (test machine)"
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster "$version" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
fi
pg_isready -h 127.0.0.1 -p 5432 -q || { log "PostgreSQL does not answer on 127.0.0.1:5432"; exit 1; }

# MariaDB: running, root reachable over TCP without a password.
if ! mysqladmin -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1; then
  as_root install -d -o mysql -g mysql -m 755 /run/mysqld 2>/dev/null || true
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql || true
  for _ in $(seq 1 60); do mysqladmin -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1 && break
    # A fresh Debian install lets root in only over the unix socket: open TCP root without a password.
    mysql -u root -e "select 1" >/dev/null 2>&1 && as_root mysql -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD(''); CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;" >/dev/null 2>&1 || true
    sleep 0.5; done
fi
mysqladmin -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1 || { log "MariaDB does not answer on 127.0.0.1:3306 as root"; exit 1; }
log "ready: $(pg_dump --version | head -n1); $(mysqldump --version | head -n1)"
