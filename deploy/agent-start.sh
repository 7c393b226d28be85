#!/bin/sh
# Starts the installed agent (systemd ExecStart, or the supervisor where systemd is absent). Installed by install.sh
# as /opt/cloudpilot/bin/cloudpilot-agent-start; it lives outside the releases so that it can roll an upgrade back:
#
#   <home>/current            symlink to releases/<version>, switched atomically by the installer or a self-upgrade
#   <home>/upgrade-pending    written by a self-upgrade before it switches `current` (from=, to=, previous=)
#   <home>/upgrade-attempts   starts of the new version so far; the new agent removes both files once connected
#   <home>/upgrade-failed     left here after a rollback; the previous agent reports it and removes it
#
# A new version that has not confirmed itself after 2 starts is rolled back to the previous release.
set -eu
home=${CLOUDPILOT_AGENT_HOME:-/opt/cloudpilot/agent}
pending="$home/upgrade-pending"
attempts_file="$home/upgrade-attempts"
max_attempts=2

if [ -f "$pending" ]; then
  previous=$(sed -n 's/^previous=//p' "$pending")
  attempts=$(cat "$attempts_file" 2>/dev/null || echo 0)
  case $attempts in ''|*[!0-9]*) attempts=0 ;; esac
  if [ "$attempts" -ge "$max_attempts" ] && [ -n "$previous" ] && [ -d "$home/releases/$previous" ]; then
    echo "cloudpilot-agent-start: the new version did not come up after $attempts starts; rolling back to $previous" >&2
    ln -sfn "releases/$previous" "$home/current.rollback"
    mv -T "$home/current.rollback" "$home/current"
    mv "$pending" "$home/upgrade-failed"
    rm -f "$attempts_file"
  else
    echo $((attempts + 1)) > "$attempts_file"
  fi
fi

# Settings the installer keeps beside the config (e.g. NODE_EXTRA_CA_CERTS for a pinned coordinator certificate).
# systemd reads the same file with EnvironmentFile=; here it matters for the supervisor.
if [ -z "${INVOCATION_ID:-}" ] && [ -r /etc/cloudpilot/agent.env ]; then
  set -a
  # shellcheck disable=SC1091
  . /etc/cloudpilot/agent.env
  set +a
fi

export CLOUDPILOT_AGENT_HOME="$home"
# Two malloc arenas instead of 8 per core: a little less idle RSS and less fragmentation during backups.
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
exec "$home/current/bin/node" "$home/current/lib/cloudpilot-agent.js" run "$@"
