"""BFD for BGP peers (``peers[].bfd``): FRR's bfdd (+ zebra) run and watched by the agent.

base.py (the Protocol, states), fake.py (in-memory), spec.py (pure: config + route lookup ->
bfdd peers, their config text, ``show bfd peers json`` -> states), lookup.py (the route
lookup), guard.py (keeps a daemon from outliving the agent), daemons.py (the supervised
processes), frr.py (the real adapter), hold.py (pure: routes held back from peers whose
BFD is not Up).
"""
