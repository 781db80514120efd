"""meshctl: what the running mesh is doing, from the places that know (Consul, the control plane's
CSDS, each instance's own CSDS and reflection, Jaeger). `meshctl --help`; `python -m mesh`."""
