"""polymesh: the mesh runtime, the xDS control plane, the local runner and meshctl."""
