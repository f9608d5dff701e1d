"""Workers: containerd, runc, CNI plugins, kubelet, kube-proxy and flanneld.

sha256 per version and architecture, as published upstream and listed in kubespray's
roles/kubespray_defaults/vars/main/checksums.yml. kube-proxy, flanneld and flannel's CNI
plugin have no checksum here yet: kubespray does not list them (it runs them as images) and
galley could not verify upstream's values; validation refuses them until they are added. The
lab sets all of them from its mirror.
"""

kubelet_checksums = {
    "1.33.5": {
        "amd64": "8f6106b970259486c5af5cbee404d4f23406d96d99dfb92a6965b299c2a4db0e",
        "arm64": "c6ad0510c089d49244eede2638b4a4ff125258fd29a0649e7eef05c7f79c737f",
    },
}
kube_proxy_checksums: dict = {}

containerd_version = "2.1.9"
containerd_checksums = {
    "2.1.9": {
        "amd64": "0083d2a4c2e77eeb20e55b6d955822fb957ff386c0c23959c8b27f598317586c",
        "arm64": "2fbc3053b09812092f6bf316a509d849960eb0cb9332ec88c2f49676d648fd67",
    },
}
runc_version = "1.3.6"
runc_checksums = {
    "1.3.6": {
        "amd64": "3f3921dbbee7723e9868f97e88e51ffc910206e3ba55646e74d93d24ea76023c",
        "arm64": "6be27a061ef89bb14c6cb495405bba80f46cea213b8f79378a6086b1bac6b747",
    },
}
cni_plugins_version = "1.9.1"
cni_plugins_checksums = {
    "1.9.1": {
        "amd64": "b98f74a0f8522f0a83867178729c1aa70f2158f90c45a2ca8fa791db1c76b303",
        "arm64": "56171987d3947707c3563db2f4001bccaf50fd63468611b9f3cbecb1375ee7ec",
    },
}
flannel_version = "0.26.7"
flannel_checksums: dict = {}
# flannel's CNI plugin (flannel-io/cni-plugin), the conflist's "flannel" type. No checksum
# yet, for the same reason as flanneld's.
flannel_cni_plugin_version = "1.7.1-flannel2"
flannel_cni_plugin_checksums: dict = {}
# The pause image containerd runs as each pod's sandbox.
sandbox_image = "registry.k8s.io/pause:3.10"
