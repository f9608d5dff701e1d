"""Control-plane hosts: kube-apiserver, kube-controller-manager and kube-scheduler.

Their version is ``kubernetes_version`` (group_data/all.py); their sha256 per version and
architecture live in the download catalogue, group_data/checksums.json. No checksum is listed
there yet for these three: galley could not verify upstream's values from where it was built
(kubespray's checksums.yml lists kubelet, kubectl and kubeadm only), and an invented checksum
is worse than none. Record upstream's with `galley checksums fetch kubernetes <version>`;
until then validation refuses the control plane with "no sha256 for kube_apiserver 1.33.5 on
amd64". The lab uses its mirror's.

Also read, with its default declared beside it: node_monitor_grace_seconds
(galley/components/kube_controller_manager.py).
"""
