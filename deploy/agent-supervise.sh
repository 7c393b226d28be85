#!/bin/sh
# Keeps the agent running where systemd is absent (containers, chroots): started by install.sh with
# start-stop-daemon as the cloudpilot user, pidfile /run/cloudpilot-agent.pid, log /var/log/cloudpilot/agent.log.
# Restarts the agent when it exits, like the systemd unit does (Restart=always, RestartPreventExitStatus=78):
# exit 75 is a self-upgrade (restart at once), 78 means the credential was rejected or the server revoked (stop).
# SIGTERM stops the agent gracefully and then the supervisor.
set -u
start=${CLOUDPILOT_AGENT_START:-/opt/cloudpilot/bin/cloudpilot-agent-start}
log=${CLOUDPILOT_AGENT_LOG:-/var/log/cloudpilot/agent.log}
exec >>"$log" 2>&1

child=''
stopping=0
stop() {
  stopping=1
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  exit 0
}
trap stop TERM INT

while :; do
  "$start" &
  child=$!
  code=0
  wait "$child" || code=$?
  # wait returns early (>128) when a trapped signal arrives; the trap then exits.
  [ "$stopping" -eq 1 ] && exit 0
  child=''
  case $code in
    0) echo "cloudpilot-agent-supervise: agent stopped"; exit 0 ;;
    78) echo "cloudpilot-agent-supervise: agent exited with 78 (enroll again); not restarting"; exit 78 ;;
    75) echo "cloudpilot-agent-supervise: agent exited for an upgrade; restarting" ;;
    *) echo "cloudpilot-agent-supervise: agent exited with $code; restarting in 2 s"; sleep 2 ;;
  esac
done
