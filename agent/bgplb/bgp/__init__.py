"""The BGP speaker seam: the whole wanted route set per peer, MetalLB style."""
