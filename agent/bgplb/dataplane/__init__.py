"""The dataplane seam: links, VIPs and IPVS behind one small Protocol."""
