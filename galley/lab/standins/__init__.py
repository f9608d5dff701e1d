"""galley's stand-in for flannel's CNI plugin (flannel-io/cni-plugin v1.7.1-flannel2): lab and
test code only, never on a production path.

Everything else the lab runs is real: Kubernetes' server binaries and flanneld are built from
their upstream Go modules (galley.lab.gobuild). flannel's CNI plugin is not: the Go module
proxy serves no version of github.com/flannel-io/cni-plugin ("This module version is not
available"). The stand-in (``flannel_cni.py``) does what the real plugin does, from the CNI
specification and flannel's documentation: it speaks the CNI exec protocol, reads the node's
lease from flanneld's subnet file and delegates to the real ``bridge`` plugin with
``host-local`` IPAM over that subnet. The lab's mirror serves it as a zip application under
the upstream path (galley.lab.artifacts); it runs with the droplets' python3 and its standard
library only.
"""
