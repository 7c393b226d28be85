#!/usr/bin/env bash
# CloudPilot Backup agent installer: install, upgrade (re-run) and remove (--uninstall) the agent on a server.
#
#   curl -fsSL https://coordinator.example/install.sh | sudo bash -s -- --token <enrollment token>
#
# Served by the coordinator at GET /install.sh with its PUBLIC_URL filled in below. Everything is in functions; the
# very last line calls main with a final marker argument that main insists on: a download cut short runs nothing. Every download is checked against the
# sha256 the coordinator publishes before it is used. Run with --help for the options.

main() {
  set -euo pipefail
  umask 022
  # The last line calls `main "$@" --script-complete`: without that last argument the download was cut short.
  if [ $# -eq 0 ] || [ "${!#}" != --script-complete ]; then
    printf '%s\n' 'cloudpilot: error: the script is incomplete (download cut short?); nothing was done' >&2
    exit 1
  fi
  set -- "${@:1:$#-1}"

  local coordinator_default='__CLOUDPILOT_COORDINATOR_URL__'
  local coordinator='' token='' action='install' dry_run=0 start_agent=1 ca_fingerprint='' pinned_pem=''
  local -a grant_read=() grant_write=()

  local prefix=/opt/cloudpilot
  local agent_home=$prefix/agent
  local config_dir=/etc/cloudpilot
  local config=$config_dir/agent.json
  local env_file=$config_dir/agent.env
  local state_dir=/var/lib/cloudpilot
  local log_dir=/var/log/cloudpilot
  local spool_dir=/tmp/cloudpilot-backups
  local unit_file=/etc/systemd/system/cloudpilot-agent.service
  local dropin_dir=/etc/systemd/system/cloudpilot-agent.service.d
  local tmpfiles_file=/etc/tmpfiles.d/cloudpilot.conf
  local pid_file=/run/cloudpilot-agent.pid
  local user=cloudpilot

  say() { printf '%s\n' "cloudpilot: $*"; }
  die() { printf '%s\n' "cloudpilot: error: $*" >&2; exit 1; }

  usage() {
    cat <<'USAGE'
Usage: install.sh [options]
  --token TOKEN          enrollment token (POST /api/v1/enrollment-tokens); needed for a first install only
  --coordinator URL      coordinator base URL (filled in when the script is served by the coordinator)
  --uninstall            stop and remove the agent, its user, files and unit, and revoke the server
  --dry-run              print what would be done and change nothing
  --grant-read PATH      let the cloudpilot user read PATH (ACLs, inherited by new files); repeatable
  --grant-write PATH     let the agent write PATH (a local destination directory); repeatable
  --ca-fingerprint FP    pin the coordinator's TLS certificate by its SHA-256 fingerprint
                         (openssl x509 -noout -fingerprint -sha256 -in cert.pem) when the server cannot validate it
  --no-start             install (and enroll) but do not start the agent
  -h, --help             this text
USAGE
  }

  while [ $# -gt 0 ]; do
    case $1 in
      --token) [ $# -ge 2 ] || die "--token needs a value"; token=$2; shift 2 ;;
      --token=*) token=${1#*=}; shift ;;
      --coordinator) [ $# -ge 2 ] || die "--coordinator needs a value"; coordinator=$2; shift 2 ;;
      --coordinator=*) coordinator=${1#*=}; shift ;;
      --uninstall) action=uninstall; shift ;;
      --dry-run) dry_run=1; shift ;;
      --grant-read) [ $# -ge 2 ] || die "--grant-read needs a path"; grant_read+=("$2"); shift 2 ;;
      --grant-read=*) grant_read+=("${1#*=}"); shift ;;
      --grant-write) [ $# -ge 2 ] || die "--grant-write needs a path"; grant_write+=("$2"); shift 2 ;;
      --grant-write=*) grant_write+=("${1#*=}"); shift ;;
      --ca-fingerprint) [ $# -ge 2 ] || die "--ca-fingerprint needs a value"; ca_fingerprint=$2; shift 2 ;;
      --ca-fingerprint=*) ca_fingerprint=${1#*=}; shift ;;
      --no-start) start_agent=0; shift ;;
      -h|--help) usage; return 0 ;;
      *) usage >&2; die "unknown option: $1" ;;
    esac
  done

  if [ -z "$coordinator" ]; then
    case $coordinator_default in
      __CLOUDPILOT*) ;;
      *) coordinator=$coordinator_default ;;
    esac
  fi
  coordinator=${coordinator%/}

  # ---- platform --------------------------------------------------------------------------------------------
  # CLOUDPILOT_OS_RELEASE and CLOUDPILOT_UNAME_M exist for the installer's own tests.
  local os_release=${CLOUDPILOT_OS_RELEASE:-/etc/os-release}
  local os_id='' os_version='' os_name='' machine arch
  if [ -r "$os_release" ]; then
    os_id=$(sed -n 's/^ID=//p' "$os_release" | tr -d '"')
    os_version=$(sed -n 's/^VERSION_ID=//p' "$os_release" | tr -d '"')
    os_name=$(sed -n 's/^PRETTY_NAME=//p' "$os_release" | tr -d '"')
  fi
  case "$os_id:$os_version" in
    debian:12|ubuntu:22.04|ubuntu:24.04) ;;
    *) die "unsupported operating system: ${os_name:-${os_id:-unknown} ${os_version}} (from $os_release). Supported: Debian 12, Ubuntu 22.04 and 24.04. Nothing was changed." ;;
  esac
  machine=${CLOUDPILOT_UNAME_M:-$(uname -m)}
  case $machine in
    x86_64|amd64) arch=x64 ;;
    aarch64|arm64) arch=arm64 ;;
    *) die "unsupported architecture: $machine. Supported: x86_64 and aarch64 (arm64). Nothing was changed." ;;
  esac

  local has_systemd=0
  if [ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null || true)" = systemd ]; then has_systemd=1; fi

  local installed=0 server_id=''
  if [ -f "$config" ]; then
    installed=1
    server_id=$(sed -n 's/^ *"serverId": *"\([^"]*\)".*/\1/p' "$config" | head -n 1)
  fi

  if [ "$action" = uninstall ]; then
    uninstall
    return 0
  fi

  [ -n "$coordinator" ] || die "no coordinator URL: pass --coordinator https://your-coordinator (the script served by a coordinator has it filled in)"
  case $coordinator in http://*|https://*) ;; *) die "--coordinator must be an http(s) URL, got $coordinator" ;; esac
  if [ "$installed" -eq 0 ] && [ -z "$token" ]; then
    die "a first install needs an enrollment token: --token <token> (create one with POST /api/v1/enrollment-tokens)"
  fi

  if [ "$dry_run" -eq 1 ]; then
    print_plan
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "run as root (curl ... | sudo bash -s -- ...)"
  for tool in curl sha256sum tar gzip useradd groupadd runuser; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required (apt-get install -y curl ca-certificates)"
  done

  local work
  work=$(mktemp -d /tmp/cloudpilot-install.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT

  local -a curl_opts=(-fsSL --retry 3 --connect-timeout 20)
  # A certificate pinned by an earlier run stays pinned on re-runs (upgrades).
  if [ -z "$ca_fingerprint" ] && [ -f "$config_dir/coordinator.pem" ] && command -v openssl >/dev/null 2>&1; then
    ca_fingerprint=$(openssl x509 -in "$config_dir/coordinator.pem" -noout -fingerprint -sha256 | sed 's/^.*=//')
  fi
  if [ -n "$ca_fingerprint" ]; then pin_certificate; fi

  # ---- download and verify -----------------------------------------------------------------------------------
  say "coordinator: $coordinator"
  curl "${curl_opts[@]}" -o "$work/manifest.txt" "$coordinator/agent/manifest.txt" || die "cannot fetch $coordinator/agent/manifest.txt"
  local version file_name file_sha file_size
  version=$(awk '$1 == "version" { print $2 }' "$work/manifest.txt")
  read -r file_name file_sha file_size < <(awk -v a="$arch" '$1 == a { print $2, $3, $4 }' "$work/manifest.txt") || true
  if [ -z "$version" ] || [ -z "${file_name:-}" ] || [ -z "${file_sha:-}" ]; then die "the coordinator publishes no agent package for linux-$arch"; fi
  case $version in *[!0-9A-Za-z.+-]*) die "unexpected agent version in the manifest: $version" ;; esac
  case $file_name in */*|.*) die "unexpected package file name in the manifest: $file_name" ;; esac
  say "downloading agent $version for linux-$arch ($file_size bytes)"
  curl "${curl_opts[@]}" -o "$work/$file_name" "$coordinator/agent/files/$file_name" || die "cannot download $file_name"
  local actual_sha
  actual_sha=$(sha256sum "$work/$file_name" | awk '{ print $1 }')
  [ "$actual_sha" = "$file_sha" ] || die "sha256 of $file_name is $actual_sha, the coordinator published $file_sha: refusing to install it"
  say "verified sha256 $actual_sha"

  # ---- user, group, directories --------------------------------------------------------------------------
  local nologin
  nologin=$(command -v nologin || echo /usr/sbin/nologin)
  if ! getent group "$user" >/dev/null; then groupadd --system "$user"; say "created system group $user"; fi
  if ! getent passwd "$user" >/dev/null; then
    useradd --system --gid "$user" --home-dir "$state_dir" --no-create-home --shell "$nologin" --comment 'CloudPilot Backup agent' "$user"
    say "created system user $user (shell $nologin, no login)"
  fi
  install -d -m 0755 -o root -g root "$prefix" "$prefix/bin"
  install -d -m 0755 -o "$user" -g "$user" "$agent_home" "$agent_home/releases"
  install -d -m 0750 -o root -g "$user" "$config_dir"
  install -d -m 0700 -o "$user" -g "$user" "$state_dir"
  install -d -m 0750 -o "$user" -g "$user" "$log_dir"
  install -d -m 0700 -o "$user" -g "$user" "$spool_dir"
  if [ -n "$pinned_pem" ]; then save_pinned_certificate; fi

  # ---- unpack the release -----------------------------------------------------------------------------------
  local release=$agent_home/releases/$version staging=$agent_home/releases/.staging-$version-$$
  rm -rf "$staging"
  install -d -m 0755 -o "$user" -g "$user" "$staging"
  tar -xzf "$work/$file_name" -C "$staging" --no-same-owner
  chown -R "$user:$user" "$staging"
  local reported
  reported=$(runuser -u "$user" -- "$staging/bin/node" "$staging/lib/cloudpilot-agent.js" --version 2>&1) || die "the new agent does not start: $reported"
  [ "$reported" = "$version" ] || die "the package says it is $reported, the manifest $version"

  local previous_target=''
  if [ -L "$agent_home/current" ]; then previous_target=$(readlink "$agent_home/current"); fi

  # ---- stop a running agent (upgrade) ---------------------------------------------------------------------
  stop_agent

  if [ -d "$release" ]; then rm -rf "$release"; fi
  mv -T "$staging" "$release"
  ln -sfn "releases/$version" "$agent_home/current.new"
  mv -T "$agent_home/current.new" "$agent_home/current"
  rm -f "$agent_home/upgrade-pending" "$agent_home/upgrade-attempts" "$agent_home/upgrade-failed"
  # Keep the current and the previous release (for rollback); drop older ones.
  local keep_previous=${previous_target#releases/}
  local dir
  for dir in "$agent_home"/releases/*; do
    [ -d "$dir" ] || continue
    case ${dir##*/} in "$version"|"$keep_previous") ;; *) rm -rf "$dir" ;; esac
  done
  if [ -n "$keep_previous" ] && [ "$keep_previous" != "$version" ]; then
    say "installed agent $version in $release (current -> releases/$version; $keep_previous kept for rollback)"
  else
    say "installed agent $version in $release (current -> releases/$version)"
  fi

  install -m 0755 -o root -g root "$release/share/agent-start.sh" "$prefix/bin/cloudpilot-agent-start"
  install -m 0755 -o root -g root "$release/share/agent-supervise.sh" "$prefix/bin/cloudpilot-agent-supervise"
  cat > "$prefix/bin/cloudpilot-agent" <<EOF
#!/bin/sh
# The agent CLI of the installed release (status, revoke, ...); run it as the $user user.
export CLOUDPILOT_AGENT_CONFIG=\${CLOUDPILOT_AGENT_CONFIG:-$config}
exec $agent_home/current/bin/cloudpilot-agent "\$@"
EOF
  chmod 0755 "$prefix/bin/cloudpilot-agent"
  if [ -d /usr/local/bin ]; then ln -sfn "$prefix/bin/cloudpilot-agent" /usr/local/bin/cloudpilot-agent; fi

  # ---- enroll (first install) or keep the enrollment (upgrade) -------------------------------------------
  if [ "$installed" -eq 1 ]; then
    chown "$user:$user" "$config"
    chmod 0600 "$config"
    say "kept the enrollment of server $server_id ($config)${token:+; the --token given was not used}"
  else
    local enroll_dir enroll_out
    enroll_dir=$(mktemp -d "$state_dir/.enroll.XXXXXX")
    chown "$user:$user" "$enroll_dir"
    # The token goes through stdin: never in a process's argv.
    if ! enroll_out=$(printf '%s\n' "$token" | runuser -u "$user" -- env ${NODE_EXTRA_CA_CERTS:+NODE_EXTRA_CA_CERTS="$NODE_EXTRA_CA_CERTS"} \
        "$release/bin/cloudpilot-agent" enroll --coordinator "$coordinator" --token-stdin --config "$enroll_dir/agent.json" \
        --state-dir "$state_dir" --spool-dir "$spool_dir" 2>&1); then
      rm -rf "$enroll_dir"
      die "enrollment failed: $enroll_out"
    fi
    install -m 0600 -o "$user" -g "$user" "$enroll_dir/agent.json" "$config"
    rm -rf "$enroll_dir"
    server_id=$(sed -n 's/^ *"serverId": *"\([^"]*\)".*/\1/p' "$config" | head -n 1)
    say "enrolled as server $server_id; wrote $config (mode 0600, owner $user)"
  fi

  local path
  if [ ${#grant_read[@]} -gt 0 ]; then for path in "${grant_read[@]}"; do grant "$path" rX; done; fi
  if [ ${#grant_write[@]} -gt 0 ]; then for path in "${grant_write[@]}"; do grant "$path" rwX; done; fi

  # ---- service --------------------------------------------------------------------------------------------
  if [ "$has_systemd" -eq 1 ]; then
    install -m 0644 -o root -g root "$release/share/cloudpilot-agent.service" "$unit_file"
    printf 'd %s 0700 %s %s -\n' "$spool_dir" "$user" "$user" > "$tmpfiles_file"
    write_dropin
    systemctl daemon-reload
    if [ "$start_agent" -eq 1 ]; then
      systemctl enable --now cloudpilot-agent.service >/dev/null 2>&1 || systemctl enable --now cloudpilot-agent.service
      systemctl restart cloudpilot-agent.service
      say "installed and started the systemd unit cloudpilot-agent.service (User=$user, NoNewPrivileges, ProtectSystem=strict)"
    else
      systemctl enable cloudpilot-agent.service >/dev/null 2>&1
      say "installed the systemd unit cloudpilot-agent.service (enabled, not started: --no-start)"
    fi
  else
    say "systemd is not running here (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)): the agent runs under its own supervisor"
    say "  start: start-stop-daemon --start --background --make-pidfile --pidfile $pid_file --chuid $user --exec $prefix/bin/cloudpilot-agent-supervise"
    say "  stop:  start-stop-daemon --stop --pidfile $pid_file --retry TERM/60/KILL/5   (log: $log_dir/agent.log)"
    say "  add the start line to your init (e.g. /etc/rc.local or the container's entrypoint) to start it at boot"
    if [ "$start_agent" -eq 1 ]; then
      start-stop-daemon --start --background --make-pidfile --pidfile "$pid_file" --chuid "$user" \
        --exec "$prefix/bin/cloudpilot-agent-supervise"
      say "started the agent (supervisor pid $(cat "$pid_file"))"
    fi
  fi

  if [ "$start_agent" -eq 1 ]; then wait_connected; fi
  say "done: agent $version on server $server_id"
  printf '%s\n' "server id: $server_id"
}

print_plan() {
  say "dry run: nothing is changed. Plan:"
  say "  platform: ${os_name:-$os_id $os_version}, linux-$arch; systemd $([ "$has_systemd" -eq 1 ] && echo present || echo absent)"
  say "  fetch $coordinator/agent/manifest.txt and the linux-$arch package; verify its sha256"
  if [ "$installed" -eq 1 ]; then
    say "  upgrade in place: keep the enrollment of server $server_id ($config)"
  else
    say "  create the system group and user $user (no login shell)"
    say "  enroll with the token (passed on stdin) and write $config (mode 0600, owner $user)"
  fi
  say "  unpack into $agent_home/releases/<version> (agent + its own Node runtime), switch $agent_home/current"
  say "  install $prefix/bin/cloudpilot-agent{,-start,-supervise} and /usr/local/bin/cloudpilot-agent"
  say "  directories: $state_dir (state), $spool_dir (spool), $log_dir"
  local p
  if [ ${#grant_read[@]} -gt 0 ]; then for p in "${grant_read[@]}"; do say "  grant $user read access to $p (ACL)"; done; fi
  if [ ${#grant_write[@]} -gt 0 ]; then for p in "${grant_write[@]}"; do say "  grant $user write access to $p (ACL, ReadWritePaths)"; done; fi
  if [ -n "$ca_fingerprint" ]; then say "  pin the coordinator certificate $ca_fingerprint"; fi
  if [ "$has_systemd" -eq 1 ]; then
    say "  install $unit_file (hardened) and $([ "$start_agent" -eq 1 ] && echo 'enable and start it' || echo 'enable it')"
  else
    say "  no systemd: $([ "$start_agent" -eq 1 ] && echo 'start' || echo 'install') the agent under $prefix/bin/cloudpilot-agent-supervise (start-stop-daemon, pidfile $pid_file)"
  fi
}

pin_certificate() {
  command -v openssl >/dev/null 2>&1 || die "--ca-fingerprint needs openssl (apt-get install -y openssl)"
  local hostport want got pin
  hostport=${coordinator#*://}
  hostport=${hostport%%/*}
  case $coordinator in https://*) ;; *) die "--ca-fingerprint needs an https coordinator URL" ;; esac
  case $hostport in *:*) ;; *) hostport=$hostport:443 ;; esac
  openssl s_client -connect "$hostport" -servername "${hostport%:*}" </dev/null 2>/dev/null | openssl x509 -outform PEM > "$work/coordinator.pem" \
    || die "cannot read the certificate of $hostport"
  want=$(printf '%s' "$ca_fingerprint" | tr -d ':' | tr 'A-F' 'a-f')
  want=${want#sha256=}
  got=$(openssl x509 -in "$work/coordinator.pem" -noout -fingerprint -sha256 | sed 's/^.*=//' | tr -d ':' | tr 'A-F' 'a-f')
  [ "$got" = "$want" ] || die "the coordinator presents a certificate with SHA-256 fingerprint $got, not the pinned $want: refusing to continue"
  pin=$(openssl x509 -in "$work/coordinator.pem" -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)
  # The chain is not validated, the key is: curl accepts only a server holding this certificate's private key.
  curl_opts+=(--insecure --pinnedpubkey "sha256//$pin")
  pinned_pem=$work/coordinator.pem
  say "pinned the coordinator certificate (sha256 $got)"
}

# After the download was verified and the directories exist: the agent trusts exactly the pinned certificate.
save_pinned_certificate() {
  install -m 0644 -o root -g root "$pinned_pem" "$config_dir/coordinator.pem"
  printf 'NODE_EXTRA_CA_CERTS=%s\n' "$config_dir/coordinator.pem" > "$env_file"
  chown "root:$user" "$env_file"
  chmod 0640 "$env_file"
  export NODE_EXTRA_CA_CERTS=$config_dir/coordinator.pem
  say "the agent trusts the pinned certificate through NODE_EXTRA_CA_CERTS ($env_file)"
}

grant() {
  local target=$1 perms=$2 parent
  if [ "$perms" = rwX ]; then install -d -m 0750 "$target"; fi
  [ -e "$target" ] || die "--grant-read: $target does not exist"
  command -v setfacl >/dev/null 2>&1 || die "granting access to $target needs setfacl (apt-get install -y acl), or add $user to the group that owns it: usermod -aG <group> $user"
  setfacl -R -m "u:$user:$perms" "$target"
  if [ -d "$target" ]; then setfacl -R -d -m "u:$user:$perms" "$target" 2>/dev/null || true; fi
  # Every directory above it must be traversable.
  parent=$(dirname "$target")
  while [ "$parent" != / ]; do
    if ! runuser -u "$user" -- test -x "$parent"; then setfacl -m "u:$user:x" "$parent"; fi
    parent=$(dirname "$parent")
  done
  grep -qxF "$target" "$config_dir/granted-paths" 2>/dev/null || printf '%s\n' "$target" >> "$config_dir/granted-paths"
  if [ "$perms" = rwX ]; then
    grep -qxF "$target" "$config_dir/writable-paths" 2>/dev/null || printf '%s\n' "$target" >> "$config_dir/writable-paths"
  fi
  say "granted $user $([ "$perms" = rwX ] && echo read-write || echo read) access to $target (ACL, also for new files)"
}

write_dropin() {
  [ -s "$config_dir/writable-paths" ] || { rm -rf "$dropin_dir"; return 0; }
  install -d -m 0755 "$dropin_dir"
  {
    echo '# Written by install.sh --grant-write: directories of local destinations.'
    echo '[Service]'
    while IFS= read -r p; do printf 'ReadWritePaths=%s\n' "$p"; done < "$config_dir/writable-paths"
  } > "$dropin_dir/writable-paths.conf"
}

stop_agent() {
  if [ "$has_systemd" -eq 1 ] && [ -f "$unit_file" ]; then
    systemctl stop cloudpilot-agent.service 2>/dev/null || true
  fi
  if [ -f "$pid_file" ]; then
    start-stop-daemon --stop --quiet --oknodo --pidfile "$pid_file" --retry TERM/60/KILL/5 || true
    rm -f "$pid_file"
    say "stopped the running agent"
  fi
}

wait_connected() {
  local out
  for _ in $(seq 1 60); do
    out=$(runuser -u "$user" -- env CLOUDPILOT_AGENT_CONFIG="$config" "$agent_home/current/bin/cloudpilot-agent" status 2>/dev/null || true)
    if printf '%s' "$out" | grep -q '"connected": true'; then
      say "the agent is connected to $coordinator"
      return 0
    fi
    sleep 1
  done
  say "warning: the agent has not connected within 60 s; check $( [ "$has_systemd" -eq 1 ] && echo 'journalctl -u cloudpilot-agent' || echo "$log_dir/agent.log" )"
}

uninstall() {
  if [ "$dry_run" -eq 1 ]; then
    say "dry run: nothing is changed. Plan:"
    [ -n "$server_id" ] && say "  revoke server $server_id on the coordinator (with its own credential)"
    say "  stop and remove the agent service; remove $prefix, $config_dir, $state_dir, $log_dir, $spool_dir"
    say "  remove the ACLs it granted, the user and group $user"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "run as root"
  # Stop the agent before revoking: a running agent that sees its credential revoked exits 78, which would leave the
  # unit failed (and the system degraded) behind.
  stop_agent
  if [ -n "$server_id" ] && [ -x "$agent_home/current/bin/cloudpilot-agent" ]; then
    local out
    local ca_env=()
    if [ -f "$config_dir/coordinator.pem" ]; then ca_env=(NODE_EXTRA_CA_CERTS="$config_dir/coordinator.pem"); fi
    if out=$(runuser -u "$user" -- env "${ca_env[@]}" CLOUDPILOT_AGENT_CONFIG="$config" "$agent_home/current/bin/cloudpilot-agent" revoke 2>&1); then
      say "revoked server $server_id on the coordinator"
    else
      say "warning: could not revoke server $server_id ($out); delete it with DELETE /api/v1/servers/$server_id"
    fi
  fi
  if [ -f "$unit_file" ]; then
    if [ "$has_systemd" -eq 1 ]; then systemctl disable --now cloudpilot-agent.service >/dev/null 2>&1 || true; fi
    rm -f "$unit_file"
    rm -rf "$dropin_dir"
    if [ "$has_systemd" -eq 1 ]; then
      systemctl daemon-reload
      systemctl reset-failed cloudpilot-agent.service >/dev/null 2>&1 || true
    fi
    say "removed the systemd unit"
  fi
  rm -f "$tmpfiles_file"
  if [ -f "$config_dir/granted-paths" ] && command -v setfacl >/dev/null 2>&1; then
    local p
    while IFS= read -r p; do
      [ -e "$p" ] || continue
      setfacl -R -x "u:$user" "$p" 2>/dev/null || true
      setfacl -R -d -x "u:$user" "$p" 2>/dev/null || true
      say "removed the ACLs for $user on $p"
    done < "$config_dir/granted-paths"
  fi
  if [ -L /usr/local/bin/cloudpilot-agent ]; then rm -f /usr/local/bin/cloudpilot-agent; fi
  rm -rf "$prefix" "$config_dir" "$state_dir" "$log_dir" "$spool_dir"
  say "removed $prefix, $config_dir, $state_dir, $log_dir and $spool_dir"
  if getent passwd "$user" >/dev/null; then userdel "$user"; say "removed user $user"; fi
  if getent group "$user" >/dev/null; then groupdel "$user"; say "removed group $user"; fi
  say "uninstalled"
}

main "$@" --script-complete
