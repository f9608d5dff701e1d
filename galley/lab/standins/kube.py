"""Stand-in for the Kubernetes v1.33 server binaries, lab/test only (stdlib only).

One program answering to its name (argv[0]): kube-apiserver, kube-controller-manager,
kube-scheduler, kubelet, kube-proxy. See the package docstring for what each one checks. Its
version and whether it ever becomes healthy come from the ``build`` module that
galley.lab.artifacts writes into the zip application.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import files, serve
from .build import HEALTHY, VERSION
from .flags_v1_33 import FLAGS
from .node import NodeAgent

if TYPE_CHECKING:
    from .etcd import EtcdClient

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class UsageError(Exception):
    """The command line is not one the real binary accepts."""


class StartupError(Exception):
    """A problem the real binary would refuse to start with."""


@dataclass
class Flags:
    """Parsed flags: the last value of each flag, and every value of repeated ones."""

    values: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The flag's last value, or ``default``."""
        return self.values[name][-1] if name in self.values else default

    def all(self, name: str) -> list[str]:
        """Every value given (comma-separated lists split)."""
        return [part for value in self.values.get(name, []) for part in value.split(",") if part]

    def on(self, name: str) -> bool:
        """A boolean flag's value."""
        return self.get(name) in _TRUE


def parse_flags(binary: str, argv: list[str]) -> Flags:
    """Parse ``argv`` like pflag does for the real ``binary``; raise UsageError like cobra."""
    table = {**FLAGS[binary], "help": False}
    shorthands = {"h": "help", "v": "v"}
    flags = Flags()
    args = list(argv)
    positional = []
    while args:
        arg = args.pop(0)
        if arg == "--":
            positional.extend(args)
            break
        if arg.startswith("--"):
            name, has_value, value = arg[2:].partition("=")
            shown = f"--{name}"
        elif arg.startswith("-") and len(arg) > 1:
            letter, value = arg[1], arg[2:].removeprefix("=")
            has_value = bool(value)
            if letter not in shorthands:
                raise UsageError(f"unknown shorthand flag: '{letter}' in {arg}")
            name, shown = shorthands[letter], f"-{letter}"
        else:
            positional.append(arg)
            continue
        if name == "version":
            flags.values.setdefault(name, []).append(value if has_value else "true")
            continue
        if name not in table:
            raise UsageError(f"unknown flag: {shown}")
        if table[name]:
            if not has_value:
                if not args:
                    raise UsageError(f"flag needs an argument: {shown}")
                value = args.pop(0)
        elif not has_value:
            value = "true"
        elif value not in _TRUE + _FALSE:
            raise UsageError(
                f'invalid argument "{value}" for "{shown}" flag: strconv.ParseBool: '
                f'parsing "{value}": invalid syntax'
            )
        flags.values.setdefault(name, []).append(value)
    if positional:
        got = ", ".join(f'"{a}"' for a in positional)
        raise UsageError(f'"{binary}" does not take any arguments, got [{got}]')
    return flags


def _usage(binary: str) -> str:
    lines = [f"Usage:\n  {binary} [flags]\n\nFlags:"]
    for name, takes_value in sorted({**FLAGS[binary], "help": False, "version": True}.items()):
        lines.append(f"      --{name}{' string' if takes_value else ''}")
    return "\n".join(lines) + "\n"


# --- startup checks -------------------------------------------------------------------------


def _pair(flags: Flags, cert: str, key: str, required: bool = True) -> tuple[str, str] | None:
    """Check a --*-cert/--*-key flag pair; the stand-in needs serving certificates given."""
    cert_path, key_path = flags.get(cert), flags.get(key)
    if not cert_path and not key_path:
        if required:
            raise StartupError(
                f"--{cert} and --{key} are required by this stand-in "
                "(it does not generate self-signed serving certificates)"
            )
        return None
    if not cert_path or not key_path:
        raise StartupError(f"--{cert} and --{key} must be given together")
    files.check_pair(f"--{cert}", cert_path, f"--{key}", key_path)
    return cert_path, key_path


def _optional(flags: Flags, check: Callable[[str, str], Any], *names: str) -> None:
    for name in names:
        for path in flags.values.get(name, []):
            check(f"--{name}", path)


def _port(value: Any, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise StartupError(f"{what}: invalid port {value!r}") from None
    if not 0 < port < 65536:
        raise StartupError(f"{what}: port {port} out of range")
    return port


def _bind_host(value: str | None, default: str = "0.0.0.0") -> str:
    return (value or default).strip("[]")


@dataclass
class Plan:
    """What a stand-in serves once its checks passed: (host, port, route, TLS context), and
    loops run in threads until SIGTERM."""

    endpoints: list[tuple[str, int, serve.Route, Any]]
    loops: list[Callable[[threading.Event], None]] = field(default_factory=list)


_TEXT = "text/plain; charset=utf-8"


def _ok(request: serve.Request) -> tuple[int, str, bytes]:
    if request.path in ("/healthz", "/livez", "/readyz"):
        if not HEALTHY:
            return 500, _TEXT, b"[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\n"
        return 200, _TEXT, b"ok"
    return 404, _TEXT, b"404 page not found\n"


class _EtcdHealth:
    """The apiserver's etcd check, cached for a second."""

    def __init__(self, client: EtcdClient) -> None:
        self.client, self.lock = client, threading.Lock()
        self.checked, self.error = 0.0, None

    def error_now(self) -> str | None:
        from .etcd import EtcdError  # imported by _apiserver already

        with self.lock:
            if time.monotonic() - self.checked > 1.0:
                try:
                    self.client.health()
                    self.error = None
                except EtcdError as exc:
                    self.error = str(exc)
                    print(f"etcd health check failed: {exc}", file=sys.stderr, flush=True)
                self.checked = time.monotonic()
            return self.error


def _anonymous_paths(flags: Flags) -> frozenset[str] | None:
    """The paths anonymous requests may reach (None: every path, as far as authentication
    goes): ``--anonymous-auth``, or the ``anonymous`` section of ``--authentication-config``
    (``enabled`` and ``conditions`` of paths; setting both is refused, as upstream does)."""
    allowed = None if flags.get("anonymous-auth", "true") in _TRUE else frozenset()
    for path in flags.values.get("authentication-config", []):
        config = files.load_config(
            "--authentication-config",
            path,
            "apiserver.config.k8s.io/v1beta1",
            "AuthenticationConfiguration",
        )
        section = config.get("anonymous")
        if section is None:
            continue
        if "anonymous-auth" in flags.values:
            raise StartupError(
                "--anonymous-auth flag cannot be set when anonymous field is configured in "
                "authentication configuration file"
            )
        if not isinstance(section, dict) or not section.get("enabled"):
            allowed = frozenset()
            continue
        conditions = section.get("conditions") or []
        paths = [c.get("path") for c in conditions if isinstance(c, dict)]
        if not all(isinstance(one, str) and one for one in paths):
            raise StartupError(f"--authentication-config: {path}: anonymous condition without path")
        allowed = frozenset(paths) if paths else None
    return allowed


def _apiserver(flags: Flags) -> Plan:
    # Only the apiserver serves the API from etcd: the other binaries start without compiling
    # these modules (a zip application's modules are compiled at every start).
    from . import discovery
    from .api import KubeApi, Store
    from .etcd import EtcdClient

    servers = flags.all("etcd-servers")
    problems = []
    if not servers:
        problems.append("--etcd-servers must be specified")
    if not flags.get("service-account-issuer"):
        problems.append("service-account-issuer is a required flag")
    if not flags.get("service-account-signing-key-file"):
        problems.append(
            "--service-account-signing-key-file and --service-account-issuer are required flags"
        )
    if problems:
        raise StartupError("[" + ", ".join(problems) + "]")
    serving = _pair(flags, "tls-cert-file", "tls-private-key-file")
    _pair(flags, "etcd-certfile", "etcd-keyfile", required=False)
    _pair(flags, "kubelet-client-certificate", "kubelet-client-key", required=False)
    _pair(flags, "proxy-client-cert-file", "proxy-client-key-file", required=False)
    _optional(
        flags,
        files.check_ca_bundle,
        "client-ca-file",
        "etcd-cafile",
        "kubelet-certificate-authority",
        "requestheader-client-ca-file",
    )
    _optional(flags, files.check_private_key, "service-account-signing-key-file")
    _optional(flags, files.check_key_file, "service-account-key-file")
    for path in flags.values.get("encryption-provider-config", []):
        config = files.load_config(
            "--encryption-provider-config",
            path,
            "apiserver.config.k8s.io/v1",
            "EncryptionConfiguration",
        )
        if not isinstance(config.get("resources"), list) or not config["resources"]:
            raise StartupError(f"--encryption-provider-config: {path}: no resources")
    anonymous = _anonymous_paths(flags)
    for name in ("authorization-config", "admission-control-config-file", "audit-policy-file"):
        for path in flags.values.get(name, []):
            files.read(f"--{name}", path)
    client = EtcdClient(
        tuple(servers),
        flags.get("etcd-cafile"),
        flags.get("etcd-certfile"),
        flags.get("etcd-keyfile"),
    )
    etcd = _EtcdHealth(client)
    host = _bind_host(flags.get("bind-address"))
    port = _port(flags.get("secure-port", "6443"), "--secure-port")
    advertised = flags.get("advertise-address") or host
    address = f"[{advertised}]:{port}" if ":" in advertised else f"{advertised}:{port}"
    api = KubeApi(
        Store(client, flags.get("etcd-prefix") or "/registry"), discovery.paths(VERSION, address)
    )

    def route(request: serve.Request) -> serve.Answer:
        path = request.path
        if request.common_name is None and not (anonymous is None or path in anonymous):
            return 401, "application/json", b'{"kind":"Status","code":401,"reason":"Unauthorized"}'
        if path == "/livez":
            return 200, _TEXT, b"ok"
        if path in ("/healthz", "/readyz"):
            error = etcd.error_now()
            if error is None and HEALTHY:
                return 200, _TEXT, b"ok"
            check = "etcd" if path == "/healthz" else "etcd-readiness"
            if error is None:  # a build that never becomes healthy
                check = "poststarthook/galley-never-ready"
            body = f"[+]ping ok\n[+]log ok\n[-]{check} failed: reason withheld\n"
            return 500, _TEXT, (body + f"{path[1:]} check failed\n").encode()
        return api(request)

    context = serve.tls_context(*serving, flags.get("client-ca-file"))
    return Plan([(host, port, route, context)])


def _delegating(flags: Flags, default_port: int) -> tuple[str, int, serve.Route, Any]:
    """Checks and serving of controller-manager and scheduler: secure port with /healthz."""
    serving = _pair(flags, "tls-cert-file", "tls-private-key-file")
    _optional(flags, files.check_ca_bundle, "client-ca-file", "requestheader-client-ca-file")
    _optional(
        flags, files.check_kubeconfig, "authentication-kubeconfig", "authorization-kubeconfig"
    )
    context = serve.tls_context(*serving, flags.get("client-ca-file"))
    port = _port(flags.get("secure-port", str(default_port)), "--secure-port")
    return _bind_host(flags.get("bind-address")), port, _ok, context


def _controller_manager(flags: Flags) -> Plan:
    if not flags.get("kubeconfig") and not flags.get("master"):
        raise StartupError("--kubeconfig is required by this stand-in (no in-cluster config)")
    _optional(flags, files.check_kubeconfig, "kubeconfig")
    _pair(flags, "cluster-signing-cert-file", "cluster-signing-key-file", required=False)
    _optional(flags, files.check_ca_bundle, "root-ca-file")
    _optional(flags, files.check_private_key, "service-account-private-key-file")
    return Plan([_delegating(flags, 10257)])


def _client_kubeconfig(flags: Flags, config: dict | None, what: str) -> None:
    """The kubeconfig from the config file's clientConnection, else from --kubeconfig."""
    connection = (config or {}).get("clientConnection") or {}
    if config is not None and connection.get("kubeconfig"):
        files.check_kubeconfig(f"{what} clientConnection.kubeconfig", connection["kubeconfig"])
    elif flags.get("kubeconfig"):
        files.check_kubeconfig("--kubeconfig", flags.get("kubeconfig"))
    else:
        raise StartupError(
            f"no kubeconfig: set clientConnection.kubeconfig in {what} or --kubeconfig"
        )


def _config_file(flags: Flags, api_version: str, kind: str) -> dict | None:
    """The ``--config`` file, checked for ``api_version`` and ``kind``; None without one."""
    if not flags.get("config"):
        return None
    return files.load_config("--config", flags.get("config"), api_version, kind)


def _scheduler(flags: Flags) -> Plan:
    config = _config_file(flags, "kubescheduler.config.k8s.io/v1", "KubeSchedulerConfiguration")
    _client_kubeconfig(flags, config, "--config")
    return Plan([_delegating(flags, 10259)])


def _kubelet(flags: Flags) -> Plan:
    config = _config_file(flags, "kubelet.config.k8s.io/v1beta1", "KubeletConfiguration") or {}
    if not flags.get("kubeconfig") and not flags.get("bootstrap-kubeconfig"):
        raise StartupError("--kubeconfig is required by this stand-in (standalone mode is not)")
    if flags.get("bootstrap-kubeconfig") and not os.path.exists(flags.get("kubeconfig") or ""):
        client = files.check_kubeconfig("--bootstrap-kubeconfig", flags.get("bootstrap-kubeconfig"))
    else:
        client = files.check_kubeconfig("--kubeconfig", flags.get("kubeconfig"))
    x509 = (config.get("authentication") or {}).get("x509") or {}
    client_ca = flags.get("client-ca-file") or x509.get("clientCAFile")
    if client_ca:
        files.check_ca_bundle("clientCAFile", client_ca)
    cert = flags.get("tls-cert-file") or config.get("tlsCertFile")
    key = flags.get("tls-private-key-file") or config.get("tlsPrivateKeyFile")
    if not cert or not key:
        raise StartupError(
            "tlsCertFile and tlsPrivateKeyFile are required by this stand-in "
            "(it does not generate self-signed serving certificates)"
        )
    files.check_pair("tlsCertFile", cert, "tlsPrivateKeyFile", key)
    endpoints = []
    healthz_port = int(flags.get("healthz-port") or config.get("healthzPort", 10248))
    if healthz_port:
        host = flags.get("healthz-bind-address") or config.get("healthzBindAddress", "127.0.0.1")
        endpoints.append((_bind_host(host), _port(healthz_port, "healthzPort"), _ok, None))
    host = _bind_host(flags.get("address") or config.get("address"))
    port = _port(flags.get("port") or config.get("port", 10250), "port")
    endpoints.append((host, port, _ok, serve.tls_context(cert, key, client_ca)))
    agent = NodeAgent(
        server=client["server"],
        context=client["context"],
        name=(flags.get("hostname-override") or socket.gethostname()).strip().lower(),
        version=VERSION,
        node_ip=flags.get("node-ip"),
        port=port,
        ready=HEALTHY,
    )
    return Plan(endpoints, [agent.run])


def _kube_proxy(flags: Flags) -> Plan:
    config = _config_file(flags, "kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration")
    _client_kubeconfig(flags, config, "--config")
    address = flags.get("healthz-bind-address") or (config or {}).get(
        "healthzBindAddress", "0.0.0.0:10256"
    )
    host, _, port = str(address).rpartition(":")
    if not host:
        raise StartupError(f"healthzBindAddress {address!r} is not host:port")
    return Plan([(_bind_host(host), _port(port, "healthzBindAddress"), _ok, None)])


COMPONENTS: dict[str, Callable[[Flags], Plan]] = {
    "kube-apiserver": _apiserver,
    "kube-controller-manager": _controller_manager,
    "kube-scheduler": _scheduler,
    "kubelet": _kubelet,
    "kube-proxy": _kube_proxy,
}


def run(binary: str, argv: list[str]) -> int:
    """Run the stand-in for ``binary``; returns the exit status (serves until SIGTERM)."""
    try:
        flags = parse_flags(binary, argv)
    except UsageError as exc:
        print(f"Error: {exc}\nRun '{binary} --help' for usage.", file=sys.stderr)
        return 1
    if flags.on("help"):
        print(_usage(binary))
        return 0
    if "version" in flags.values:
        print(f"Kubernetes {VERSION}")
        return 0
    try:
        plan = COMPONENTS[binary](flags)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
        for host, port, route, context in plan.endpoints:
            serve.start(host, port, route, context)
        for loop in plan.loops:
            threading.Thread(target=loop, args=(stop,), daemon=True).start()
    except (StartupError, files.FileProblem, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(f"{binary} stand-in {VERSION} started", file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        pass
    return 0


def main() -> None:
    """Entry point: dispatch on the program name."""
    binary = os.path.basename(sys.argv[0])
    if binary not in COMPONENTS:
        known = ", ".join(sorted(COMPONENTS))
        sys.exit(f"this stand-in must be run as one of: {known} (not {binary})")
    sys.exit(run(binary, sys.argv[1:]))


if __name__ == "__main__":
    main()
