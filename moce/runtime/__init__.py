"""Runtime: a backend-agnostic plan executor, graph runners, image I/O and tiling."""
