"""Control-plane hosts: kube-apiserver, kube-controller-manager and kube-scheduler.

The binaries are raw downloads from dl.k8s.io (version: ``kubernetes_version``). Their
sha256 are upstream's ``<binary>.sha256`` files next to each binary; galley pins them here per
version and architecture. No checksum is listed yet for these three: galley could not verify
upstream's values from where it was built (kubespray's checksums.yml lists kubelet, kubectl
and kubeadm only), and an invented checksum is worse than none. Until they are added (from
https://dl.k8s.io/release/v<version>/bin/linux/<arch>/<binary>.sha256), validation refuses the
control plane with "no sha256 for kube_apiserver 1.33.5 on amd64". The lab sets them from its
mirror.
"""

kube_apiserver_checksums: dict = {}
kube_controller_manager_checksums: dict = {}
kube_scheduler_checksums: dict = {}
