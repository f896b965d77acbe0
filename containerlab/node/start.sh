#!/bin/sh
# Entry point of the bgp-lb lab node image (containerlab/Containerfile).
# Starts the local HTTP backend (answers with the node's name) and then the agent.
# BGPLB_BACKEND_ADDRS / BGPLB_BACKEND_PORT come from the node's `env` in the topology.
set -eu
: "${BGPLB_BACKEND_ADDRS:?set BGPLB_BACKEND_ADDRS (the node's own addresses) in the topology}"
: "${BGPLB_BACKEND_PORT:=8080}"
name="${BGPLB_NODE_NAME:-$(hostname)}"
# The agent wants its API token private (mode 0600); a bind mount keeps the host file's mode.
if [ -f /etc/bgp-lb/api-token.shared ]; then
    install -m 600 /etc/bgp-lb/api-token.shared /etc/bgp-lb/api-token
fi
# shellcheck disable=SC2086  # the address list is meant to be split
python3 /usr/local/lib/bgplb-lab/backend.py --name "$name" --port "$BGPLB_BACKEND_PORT" $BGPLB_BACKEND_ADDRS &
exec bgp-lb run /etc/bgp-lb/config.yaml
