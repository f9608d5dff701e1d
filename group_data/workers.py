"""Workers: containerd, runc, CNI plugins, kubelet, kube-proxy and flanneld.

Versions here; the sha256 per version and architecture are in the download catalogue
(group_data/checksums.json): upstream's published values, cross-checked with kubespray's
checksums.yml where it lists them. kube-proxy, flanneld and flannel's CNI plugin have none yet
(kubespray runs them as images and galley could not verify upstream's values from where it was
built); validation refuses them until `galley checksums fetch` records them. The lab uses its
mirror's.
"""

containerd_version = "2.1.9"
runc_version = "1.3.6"
cni_plugins_version = "1.9.1"
flannel_version = "0.26.7"
# flannel's CNI plugin (flannel-io/cni-plugin), the conflist's "flannel" type.
flannel_cni_plugin_version = "1.7.1-flannel2"
# Also read by the workers' components, with defaults declared beside them: sandbox_image,
# registry_mirror, containerd_restrict_oom_score_adj (galley/components/containerd.py),
# kube_proxy_conntrack_max_per_core (galley/components/kube_proxy.py) and
# kubelet_node_lease_seconds (galley/components/kubelet.py).
