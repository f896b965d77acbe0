"""``bgp-lb fleet``: one fleet file -> per-node cloud-init seeds, FRR snippets, file_sd targets.

load.py (read, validate, cross-check, secrets) -> nodes.py (each node's agent config, checked
by the agent's loader) -> seed.py / network.py / frr.py / render.py (pure) -> output.py (all or
nothing on disk). docs/fleet.md is the operator's side.
"""
