"""Stand-ins for the Kubernetes v1.33 server binaries and flanneld v0.26.7: lab/test only.

The lab cannot install the real binaries, so its mirror serves these programs under the
upstream download paths (built by galley.lab.artifacts as self-contained ``#!/usr/bin/python3``
zip applications). They run on the droplets with Debian 12's python3 and its standard library
only. They make a deploy and a rolling kubelet upgrade prove their wiring; they run no pods.

Each zip application carries a generated ``build`` module (so the package runs only as built):
``VERSION``, the release of the upstream path it is served under (the mirror carries every
server binary in v1.33.5, v1.33.6 and ``v1.33.7-galley.broken``), and ``HEALTHY``. A build
with ``HEALTHY = False`` (the ``-galley.broken`` one, a test build) starts and passes its
checks but answers ``/healthz`` (and an apiserver ``/readyz``) with HTTP 500, while an
apiserver still serves the API and ``/version``; its kubelet reports its Node NotReady.

Every Kubernetes stand-in (``kube.py``, dispatching on its program name):

- accepts exactly the v1.33 flags of its binary (``flags_v1_33``) with pflag's syntax; anything
  else exits 1 with cobra's message (``Error: unknown flag: --foo``);
- prints ``Kubernetes <VERSION>`` for ``--version``;
- checks every file it is given before serving, and exits 1 naming the flag and file when one
  is missing or unusable: certificate/key pairs must match (loaded with :mod:`ssl`), CA bundles
  must load, keys must be PEM keys, config files must be YAML with the right apiVersion and
  kind, and kubeconfigs (``v1``/``Config``) must have a current context whose cluster has an
  https server and a CA, and whose user has a matching client certificate and key (inline
  ``*-data`` or files) or a token;
- serves its health endpoint until SIGTERM. The stand-ins do not generate self-signed serving
  certificates, so TLS endpoints need their certificate and key given.

Per binary:

- kube-apiserver: requires ``--etcd-servers``, ``--service-account-issuer`` and
  ``--service-account-signing-key-file`` (as the real one does); checks the serving, etcd
  client, kubelet client and proxy client pairs, the CA files, the service-account keys and the
  EncryptionConfiguration (apiserver.config.k8s.io/v1). Serves HTTPS on ``--bind-address``:
  ``--secure-port`` (6443). Client certificates are verified against ``--client-ca-file``
  (a certificate from another CA fails the handshake); anonymous requests may read ``/healthz``,
  ``/livez``, ``/readyz`` and ``/version`` (JSON), as with RBAC's system:public-info-viewer,
  unless ``--anonymous-auth=false`` or the ``anonymous`` section of ``--authentication-config``
  (AuthenticationConfiguration v1beta1: ``enabled``, ``conditions`` of paths) says otherwise:
  a path anonymous requests may not reach answers 401.
  ``/healthz`` and ``/readyz`` ask the real etcd (``GET /health`` with the etcd client
  certificate, at most once a second): ``ok``, or HTTP 500 with ``[-]etcd failed``. It serves
  the slice of the Kubernetes API a rollout needs (``api``: nodes, pods, evictions that respect
  PodDisruptionBudgets), storing the objects in that etcd so all apiservers agree; a Node
  whose kubelet stopped heartbeating for 10 s is served Ready ``Unknown`` (there is no node
  lifecycle controller). With it come the discovery documents (``discovery``: ``/version``,
  aggregated and legacy ``/api`` and ``/apis``) and server-side Tables (``tables``), so the
  real kubectl works against it (``kubectl get nodes``, ``get pods -A``, ``cordon``).
- kube-controller-manager: ``--kubeconfig`` and the authentication/authorization kubeconfigs,
  the cluster-signing pair, ``--root-ca-file``, ``--service-account-private-key-file``; HTTPS
  ``/healthz`` on ``--secure-port`` (10257).
- kube-scheduler: KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1) from
  ``--config`` and its ``clientConnection.kubeconfig`` (or ``--kubeconfig``); HTTPS ``/healthz``
  on ``--secure-port`` (10259).
- kubelet: KubeletConfiguration (kubelet.config.k8s.io/v1beta1) from ``--config``,
  ``--kubeconfig``, the client CA (``authentication.x509.clientCAFile``) and the serving pair
  (``tlsCertFile``/``tlsPrivateKeyFile``); plain HTTP ``/healthz`` on ``healthzBindAddress``:
  ``healthzPort`` (127.0.0.1:10248) and HTTPS on ``address``:``port`` (10250). With the
  kubeconfig's identity it registers its Node (``--hostname-override`` or the host name;
  ``--node-ip`` as InternalIP) and heartbeats its status every 2 s (``node``): Ready and
  ``nodeInfo.kubeletVersion``. On SIGTERM it stops heartbeating.
- kube-proxy: KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) from ``--config`` and
  its ``clientConnection.kubeconfig`` (or ``--kubeconfig``); plain HTTP ``/healthz`` on
  ``healthzBindAddress`` (0.0.0.0:10256).

flanneld (``flanneld.py``): flanneld's own flags (Go flag syntax; unknown flag: exit 2), prints
``v0.26.7`` for ``-version``. In etcd mode it checks the etcd client pair and CA, waits for
``<etcd-prefix>/config`` in etcd (v3 JSON gateway, with the client certificate); with
``--kube-subnet-mgr`` it checks ``--kubeconfig-file`` and reads ``--net-config-path``. Either
way it picks the node's subnet deterministically from the node IP (``--public-ip``, ``--iface``,
or the default route) and writes ``--subnet-file`` (FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU,
FLANNEL_IPMASQ). Plain HTTP ``/healthz`` on ``--healthz-ip``:``--healthz-port`` when the port
is set. No vxlan device or iptables rule is created.
"""
