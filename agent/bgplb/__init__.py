"""bgp-lb: health-checked BGP/ECMP load-balancer agent."""

__version__ = "0.1.0"
