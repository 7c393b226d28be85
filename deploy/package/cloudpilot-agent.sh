#!/bin/sh
# Launcher shipped in the agent package as bin/cloudpilot-agent: the agent bundle on the Node runtime it brings.
here=$(dirname "$(readlink -f "$0")")
exec "$here/node" "$here/../lib/cloudpilot-agent.js" "$@"
