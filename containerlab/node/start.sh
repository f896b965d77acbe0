#!/bin/sh
# Entry point of the bgp-lb lab node image (containerlab/Containerfile).
# Starts the local HTTP backend (answers with the node's name) and then the agent; a node
# without an agent config (a real server of the pool lab) runs only the backend.
# BGPLB_BACKEND_ADDRS / BGPLB_BACKEND_PORT come from the node's `env` in the topology.
set -eu
: "${BGPLB_BACKEND_ADDRS:?set BGPLB_BACKEND_ADDRS (the node's own addresses) in the topology}"
: "${BGPLB_BACKEND_PORT:=8080}"
name="${BGPLB_NODE_NAME:-$(hostname)}"
# The agent wants its API token private (mode 0600); a bind mount keeps the host file's mode.
if [ -f /etc/bgp-lb/api-token.shared ]; then
    install -m 600 /etc/bgp-lb/api-token.shared /etc/bgp-lb/api-token
fi
if [ ! -f /etc/bgp-lb/config.yaml ]; then  # a real server (pool lab): the backend only
    echo_opt=""
    [ -n "${BGPLB_ECHO_PORT:-}" ] && echo_opt="--echo-port $BGPLB_ECHO_PORT"
    # shellcheck disable=SC2086  # the lists are meant to be split
    exec python3 /usr/local/lib/bgplb-lab/backend.py --name "$name" --port "$BGPLB_BACKEND_PORT" $echo_opt $BGPLB_BACKEND_ADDRS
fi
# shellcheck disable=SC2086  # the address list is meant to be split
python3 /usr/local/lib/bgplb-lab/backend.py --name "$name" --port "$BGPLB_BACKEND_PORT" $BGPLB_BACKEND_ADDRS &
exec bgp-lb run /etc/bgp-lb/config.yaml
