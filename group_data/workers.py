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
# The pause image containerd runs as each pod's sandbox.
sandbox_image = "registry.k8s.io/pause:3.10"
# A registry every image pull tries first (a pull-through mirror, e.g. "https://mirror:5000"),
# then the image's own registry; None: pull from each image's registry.
registry_mirror = None
# Where containerd may not lower a process's oom_score_adj (it lacks CAP_SYS_RESOURCE, e.g.
# nested in a container such as the lab's droplets): True keeps every container's at or above
# containerd's own instead of failing to start them.
containerd_restrict_oom_score_adj = False
# kube-proxy's conntrack table size per CPU (it raises the kernel's nf_conntrack_max to that);
# None: kube-proxy's default (32768); 0: leave the kernel's value alone (where it cannot be
# set, e.g. without the host's sysctls, as in the lab's droplets).
kube_proxy_conntrack_max_per_core = None
