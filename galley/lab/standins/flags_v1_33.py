"""Command-line flags of the Kubernetes v1.33 server binaries, for the stand-ins (lab/test only).

Facts collected from the Kubernetes command-line reference (kubernetes/website,
content/en/docs/reference/command-line-tools-reference/<binary>.md). The stored copies were of
the v1.35 (kube-apiserver) and v1.36 (kube-scheduler) pages; flags added after v1.33 were left
out and v1.33 flags removed later (JSON logging options, ``--cloud-provider``/``--cloud-config``,
``--pod-infra-container-image``) were added back. kube-controller-manager, kubelet and
kube-proxy were listed for v1.33 from the same reference's structure.

``FLAGS[binary][name]`` is True when the flag takes a value, False for a boolean flag. Every
binary also has ``-h/--help`` and ``--version`` (optional value, as ``--version=raw``), and
``-v`` is the shorthand of ``--v``.
"""

from __future__ import annotations


def _flags(values: str, bools: str = "") -> dict[str, bool]:
    table = dict.fromkeys(values.split(), True)
    table.update(dict.fromkeys(bools.split(), False))
    return table


_LOGGING = _flags(
    "log-flush-frequency log-json-info-buffer-size log-text-info-buffer-size logging-format "
    "v vmodule",
    "log-json-split-stream log-text-split-stream",
)
_METRICS = _flags(
    "allow-metric-labels allow-metric-labels-manifest disabled-metrics "
    "show-hidden-metrics-for-version"
)
_SECURE_SERVING = _flags(
    "bind-address cert-dir http2-max-streams-per-connection secure-port tls-cert-file "
    "tls-cipher-suites tls-min-version tls-private-key-file tls-sni-cert-key",
    "disable-http2-serving permit-address-sharing permit-port-sharing",
)
_REQUESTHEADER = _flags(
    "requestheader-allowed-names requestheader-client-ca-file requestheader-extra-headers-prefix "
    "requestheader-group-headers requestheader-uid-headers requestheader-username-headers"
)
_DELEGATING_AUTH = _flags(
    "authentication-kubeconfig authentication-token-webhook-cache-ttl "
    "authorization-always-allow-paths authorization-kubeconfig "
    "authorization-webhook-cache-authorized-ttl authorization-webhook-cache-unauthorized-ttl "
    "client-ca-file",
    "authentication-skip-lookup authentication-tolerate-lookup-failure",
)
_LEADER_ELECTION = _flags(
    "leader-elect-lease-duration leader-elect-renew-deadline leader-elect-resource-lock "
    "leader-elect-resource-name leader-elect-resource-namespace leader-elect-retry-period",
    "leader-elect",
)
_CLIENT = _flags("kube-api-burst kube-api-content-type kube-api-qps kubeconfig master")
_COMPONENT_VERSION = _flags("emulated-version feature-gates min-compatibility-version")

KUBE_APISERVER = {
    **_LOGGING,
    **_METRICS,
    **_SECURE_SERVING,
    **_REQUESTHEADER,
    **_COMPONENT_VERSION,
    **_flags(
        "admission-control admission-control-config-file advertise-address api-audiences "
        "apiserver-count audit-log-batch-buffer-size audit-log-batch-max-size "
        "audit-log-batch-max-wait audit-log-batch-throttle-burst audit-log-batch-throttle-qps "
        "audit-log-format audit-log-maxage audit-log-maxbackup audit-log-maxsize audit-log-mode "
        "audit-log-path audit-log-truncate-max-batch-size audit-log-truncate-max-event-size "
        "audit-log-version audit-policy-file audit-webhook-batch-buffer-size "
        "audit-webhook-batch-max-size audit-webhook-batch-max-wait "
        "audit-webhook-batch-throttle-burst audit-webhook-batch-throttle-qps "
        "audit-webhook-config-file audit-webhook-initial-backoff audit-webhook-mode "
        "audit-webhook-truncate-max-batch-size audit-webhook-truncate-max-event-size "
        "audit-webhook-version authentication-config authentication-token-webhook-cache-ttl "
        "authentication-token-webhook-config-file authentication-token-webhook-version "
        "authorization-config authorization-mode authorization-policy-file "
        "authorization-webhook-cache-authorized-ttl authorization-webhook-cache-unauthorized-ttl "
        "authorization-webhook-config-file authorization-webhook-version client-ca-file "
        "cloud-config cloud-provider coordinated-leadership-lease-duration "
        "coordinated-leadership-renew-deadline coordinated-leadership-retry-period "
        "cors-allowed-origins debug-socket-path default-not-ready-toleration-seconds "
        "default-unreachable-toleration-seconds default-watch-cache-size "
        "delete-collection-workers disable-admission-plugins egress-selector-config-file "
        "enable-admission-plugins encryption-provider-config endpoint-reconciler-type "
        "etcd-cafile etcd-certfile etcd-compaction-interval etcd-count-metric-poll-period "
        "etcd-db-metric-poll-interval etcd-healthcheck-timeout etcd-keyfile etcd-prefix "
        "etcd-readycheck-timeout etcd-servers etcd-servers-overrides event-ttl external-hostname "
        "goaway-chance kubelet-certificate-authority kubelet-client-certificate "
        "kubelet-client-key kubelet-preferred-address-types kubelet-timeout "
        "kubernetes-service-node-port lease-reuse-duration-seconds livez-grace-period "
        "max-connection-bytes-per-sec max-mutating-requests-inflight max-requests-inflight "
        "min-request-timeout oidc-ca-file oidc-client-id oidc-groups-claim oidc-groups-prefix "
        "oidc-issuer-url oidc-required-claim oidc-signing-algs oidc-username-claim "
        "oidc-username-prefix peer-advertise-ip peer-advertise-port peer-ca-file "
        "proxy-client-cert-file proxy-client-key-file request-timeout runtime-config "
        "service-account-issuer service-account-jwks-uri service-account-key-file "
        "service-account-max-token-expiration service-account-signing-endpoint "
        "service-account-signing-key-file service-cluster-ip-range service-node-port-range "
        "shutdown-delay-duration shutdown-watch-termination-grace-period storage-backend "
        "storage-initialization-timeout storage-media-type strict-transport-security-directives "
        "token-auth-file tracing-config-file watch-cache-sizes",
        "aggregator-reject-forwarding-redirect allow-privileged anonymous-auth "
        "audit-log-batch-throttle-enable audit-log-compress audit-log-truncate-enabled "
        "audit-webhook-batch-throttle-enable audit-webhook-truncate-enabled contention-profiling "
        "emulation-forward-compatible enable-aggregator-routing enable-bootstrap-token-auth "
        "enable-garbage-collector enable-logs-handler enable-priority-and-fairness "
        "encryption-provider-config-automatic-reload profiling "
        "runtime-config-emulation-forward-compatible service-account-extend-token-expiration "
        "service-account-lookup shutdown-send-retry-after watch-cache",
    ),
}

KUBE_CONTROLLER_MANAGER = {
    **_LOGGING,
    **_METRICS,
    **_SECURE_SERVING,
    **_REQUESTHEADER,
    **_DELEGATING_AUTH,
    **_LEADER_ELECTION,
    **_CLIENT,
    **_COMPONENT_VERSION,
    **_flags(
        "attach-detach-reconcile-sync-period cidr-allocator-type cloud-config cloud-provider "
        "cluster-cidr cluster-name cluster-signing-cert-file cluster-signing-duration "
        "cluster-signing-key-file cluster-signing-kube-apiserver-client-cert-file "
        "cluster-signing-kube-apiserver-client-key-file cluster-signing-kubelet-client-cert-file "
        "cluster-signing-kubelet-client-key-file cluster-signing-kubelet-serving-cert-file "
        "cluster-signing-kubelet-serving-key-file cluster-signing-legacy-unknown-cert-file "
        "cluster-signing-legacy-unknown-key-file concurrent-cron-job-syncs "
        "concurrent-daemonset-syncs concurrent-deployment-syncs concurrent-endpoint-syncs "
        "concurrent-ephemeralvolume-syncs concurrent-gc-syncs "
        "concurrent-horizontal-pod-autoscaler-syncs concurrent-job-syncs "
        "concurrent-namespace-syncs concurrent-rc-syncs concurrent-replicaset-syncs "
        "concurrent-resource-quota-syncs concurrent-service-endpoint-syncs "
        "concurrent-service-syncs concurrent-serviceaccount-token-syncs "
        "concurrent-statefulset-syncs concurrent-ttl-after-finished-syncs "
        "concurrent-validating-admission-policy-status-syncs controller-start-interval "
        "controllers endpoint-updates-batch-period endpointslice-updates-batch-period "
        "external-cloud-volume-plugin flex-volume-plugin-dir "
        "horizontal-pod-autoscaler-cpu-initialization-period "
        "horizontal-pod-autoscaler-downscale-stabilization "
        "horizontal-pod-autoscaler-initial-readiness-delay horizontal-pod-autoscaler-sync-period "
        "horizontal-pod-autoscaler-tolerance large-cluster-size-threshold "
        "leader-migration-config legacy-service-account-token-clean-up-period "
        "max-endpoints-per-slice min-resync-period mirroring-concurrent-service-endpoint-syncs "
        "mirroring-endpointslice-updates-batch-period mirroring-max-endpoints-per-subset "
        "namespace-sync-period node-cidr-mask-size node-cidr-mask-size-ipv4 "
        "node-cidr-mask-size-ipv6 node-eviction-rate node-monitor-grace-period "
        "node-monitor-period node-startup-grace-period pv-recycler-increment-timeout-nfs "
        "pv-recycler-minimum-timeout-hostpath pv-recycler-minimum-timeout-nfs "
        "pv-recycler-pod-template-filepath-hostpath pv-recycler-pod-template-filepath-nfs "
        "pv-recycler-timeout-increment-hostpath pvclaimbinder-sync-period "
        "resource-quota-sync-period root-ca-file route-reconciliation-period "
        "secondary-node-eviction-rate service-account-private-key-file "
        "service-cluster-ip-range terminated-pod-gc-threshold unhealthy-zone-threshold",
        "allocate-node-cidrs configure-cloud-routes contention-profiling "
        "disable-attach-detach-reconcile-sync disable-force-detach-on-timeout "
        "enable-dynamic-provisioning enable-garbage-collector enable-hostpath-provisioner "
        "enable-leader-migration profiling use-service-account-credentials",
    ),
}

KUBE_SCHEDULER = {
    **_LOGGING,
    **_METRICS,
    **_SECURE_SERVING,
    **_REQUESTHEADER,
    **_DELEGATING_AUTH,
    **_LEADER_ELECTION,
    **_CLIENT,
    **_COMPONENT_VERSION,
    **_flags(
        "config pod-max-in-unschedulable-pods-duration write-config-to",
        "contention-profiling profiling",
    ),
}

KUBELET = {
    **_LOGGING,
    **_flags(
        "address allowed-unsafe-sysctls authentication-token-webhook-cache-ttl "
        "authorization-mode authorization-webhook-cache-authorized-ttl "
        "authorization-webhook-cache-unauthorized-ttl boot-id-file bootstrap-kubeconfig "
        "cert-dir cgroup-driver cgroup-root client-ca-file cloud-config cloud-provider "
        "cluster-dns cluster-domain config config-dir container-log-max-files "
        "container-log-max-size container-log-max-workers container-log-monitor-interval "
        "container-runtime-endpoint cpu-cfs-quota-period cpu-manager-policy "
        "cpu-manager-policy-options cpu-manager-reconcile-period enforce-node-allocatable "
        "event-burst event-qps eviction-hard eviction-max-pod-grace-period "
        "eviction-minimum-reclaim eviction-pressure-transition-period eviction-soft "
        "eviction-soft-grace-period experimental-mounter-path feature-gates "
        "file-check-frequency hairpin-mode healthz-bind-address healthz-port hostname-override "
        "http-check-frequency image-credential-provider-bin-dir "
        "image-credential-provider-config image-gc-high-threshold image-gc-low-threshold "
        "image-service-endpoint kube-api-burst kube-api-content-type kube-api-qps "
        "kube-reserved kube-reserved-cgroup kubeconfig kubelet-cgroups lock-file manifest-url "
        "manifest-url-header max-open-files max-pods maximum-dead-containers "
        "maximum-dead-containers-per-container memory-manager-policy "
        "minimum-container-ttl-duration minimum-image-ttl-duration node-ip node-labels "
        "node-status-max-images node-status-update-frequency oom-score-adj pod-cidr "
        "pod-infra-container-image pod-manifest-path pod-max-pids pods-per-core port "
        "provider-id qos-reserved read-only-port register-with-taints registry-burst "
        "registry-qps reserved-cpus reserved-memory resolv-conf root-dir runtime-cgroups "
        "runtime-request-timeout streaming-connection-idle-timeout sync-frequency "
        "system-cgroups system-reserved system-reserved-cgroup tls-cert-file tls-cipher-suites "
        "tls-min-version tls-private-key-file topology-manager-policy "
        "topology-manager-policy-options topology-manager-scope volume-plugin-dir "
        "volume-stats-agg-period",
        "anonymous-auth authentication-token-webhook cgroups-per-qos contention-profiling "
        "cpu-cfs-quota enable-controller-attach-detach enable-debugging-handlers enable-server "
        "exit-on-lock-contention experimental-allocatable-ignore-eviction fail-cgroupv1 "
        "fail-swap-on kernel-memcg-notification local-storage-capacity-isolation "
        "make-iptables-util-chains protect-kernel-defaults register-node register-schedulable "
        "rotate-certificates rotate-server-certificates runonce seccomp-default "
        "serialize-image-pulls",
    ),
}

KUBE_PROXY = {
    **_LOGGING,
    **_flags(
        "bind-address cluster-cidr config config-sync-period conntrack-max-per-core "
        "conntrack-min conntrack-tcp-timeout-close-wait conntrack-tcp-timeout-established "
        "conntrack-udp-timeout conntrack-udp-timeout-stream detect-local-mode feature-gates "
        "healthz-bind-address hostname-override iptables-masquerade-bit "
        "iptables-min-sync-period iptables-sync-period ipvs-exclude-cidrs ipvs-min-sync-period "
        "ipvs-scheduler ipvs-sync-period ipvs-tcp-timeout ipvs-tcpfin-timeout ipvs-udp-timeout "
        "kube-api-burst kube-api-content-type kube-api-qps kubeconfig master "
        "metrics-bind-address nodeport-addresses oom-score-adj pod-bridge-interface "
        "pod-interface-name-prefix proxy-mode show-hidden-metrics-for-version write-config-to",
        "bind-address-hard-fail cleanup conntrack-tcp-be-liberal init-only "
        "iptables-localhost-nodeports ipvs-strict-arp masquerade-all profiling",
    ),
}

FLAGS: dict[str, dict[str, bool]] = {
    "kube-apiserver": KUBE_APISERVER,
    "kube-controller-manager": KUBE_CONTROLLER_MANAGER,
    "kube-scheduler": KUBE_SCHEDULER,
    "kubelet": KUBELET,
    "kube-proxy": KUBE_PROXY,
}
