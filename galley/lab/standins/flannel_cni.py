"""Stand-in for flannel's CNI plugin (flannel-io/cni-plugin), lab/test only (stdlib only).

The real plugin is a thin meta plugin, and so is this one: it speaks the CNI exec protocol
(``CNI_COMMAND`` and friends in the environment, the network config on stdin, a result or an
error object on stdout), reads the node's lease from flanneld's subnet file, turns the
``delegate`` section into a config for the real ``bridge`` plugin with ``host-local`` IPAM
over the node's subnet, saves it under ``dataDir`` for DEL, and runs the delegate from
``CNI_PATH``. The delegates are the real CNI plugins, so an ADD really wires a network
namespace to the node's flannel subnet.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

SUPPORTED_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"
# CNI error codes (SPEC.md, "Error"): 4 invalid config, 7 invalid env, 11 try again later.
INVALID_CONFIG, INVALID_ENVIRONMENT, TRY_AGAIN_LATER = 4, 7, 11


class CniError(Exception):
    """A CNI error result: printed as JSON on stdout, exit 1."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def load_subnet_env(path: str) -> dict[str, str]:
    """FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU and FLANNEL_IPMASQ from flanneld's file."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise CniError(
            TRY_AGAIN_LATER,
            f"failed to load flannel 'subnet.env' file: open {path}: {exc.strerror.lower()}. "
            "Check the flannel pod log for this node.",
        ) from exc
    values = dict(line.split("=", 1) for line in lines if "=" in line)
    for key in ("FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ"):
        if key not in values:
            raise CniError(
                TRY_AGAIN_LATER,
                f"failed to load flannel 'subnet.env' file: {path} is missing {key}",
            )
    return values


def delegate_config(conf: dict, lease: dict[str, str]) -> dict:
    """The delegate plugin's config: defaults filled in as the real plugin does."""
    delegate = dict(conf.get("delegate") or {})
    delegate["name"] = conf["name"]
    delegate.setdefault("type", "bridge")
    delegate.setdefault("ipMasq", lease["FLANNEL_IPMASQ"] != "true")
    delegate.setdefault("mtu", int(lease["FLANNEL_MTU"]))
    if delegate["type"] == "bridge":
        delegate.setdefault("isGateway", True)
    if conf.get("cniVersion"):
        delegate["cniVersion"] = conf["cniVersion"]
    ipam = dict(conf.get("ipam") or {})
    ipam.setdefault("type", "host-local")
    # The lease is the gateway address (".1/24"); the range is its network, as net.ParseCIDR
    # gives it to the real plugin.
    subnet = ipaddress.ip_interface(lease["FLANNEL_SUBNET"]).network
    ipam["ranges"] = [[{"subnet": str(subnet)}]]
    ipam.setdefault("routes", [{"dst": lease["FLANNEL_NETWORK"]}])
    delegate["ipam"] = ipam
    return delegate


def _find_plugin(plugin_type: str, cni_path: str) -> str:
    for directory in cni_path.split(os.pathsep):
        candidate = os.path.join(directory, plugin_type)
        if directory and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(
        INVALID_ENVIRONMENT, f'failed to find plugin "{plugin_type}" in path [{cni_path}]'
    )


def _run_delegate(delegate: dict, environ: dict[str, str]) -> str:
    plugin = _find_plugin(str(delegate["type"]), environ.get("CNI_PATH", ""))
    done = subprocess.run(
        [plugin], input=json.dumps(delegate), capture_output=True, text=True, env=environ
    )
    if done.returncode != 0:
        try:
            error = json.loads(done.stdout)
        except ValueError:
            error = {"code": 999, "msg": done.stderr.strip() or done.stdout.strip()}
        raise CniError(
            int(error.get("code", 999)), str(error.get("msg", "")), error.get("details", "")
        )
    return done.stdout


def _require(environ: dict[str, str], *names: str) -> None:
    missing = [name for name in names if not environ.get(name)]
    if missing:
        raise CniError(INVALID_ENVIRONMENT, f"required env variables [{','.join(missing)}] missing")


def handle(environ: dict[str, str], stdin: str) -> str:
    """Run one CNI command; returns what goes to stdout (raises CniError)."""
    command = environ.get("CNI_COMMAND", "")
    try:
        conf = json.loads(stdin) if stdin.strip() else {}
    except ValueError as exc:
        raise CniError(INVALID_CONFIG, f"failed to load netconf: {exc}") from exc
    if command == "VERSION":
        version = conf.get("cniVersion") or "1.1.0"
        return json.dumps({"cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS})
    if command not in ("ADD", "DEL", "CHECK"):
        raise CniError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND: {command}")
    _require(environ, "CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH")
    if "name" not in conf:
        raise CniError(INVALID_CONFIG, "failed to load netconf: missing network name")
    saved = os.path.join(conf.get("dataDir") or DEFAULT_DATA_DIR, environ["CNI_CONTAINERID"])
    if command == "DEL":
        try:
            with open(saved) as f:
                delegate = json.load(f)
        except FileNotFoundError:
            return ""  # nothing was set up, or it is already gone
        _run_delegate(delegate, environ)
        os.remove(saved)
        return ""
    _require(environ, "CNI_NETNS")
    lease = load_subnet_env(conf.get("subnetFile") or DEFAULT_SUBNET_FILE)
    delegate = delegate_config(conf, lease)
    if command == "CHECK":
        if "prevResult" in conf:
            delegate["prevResult"] = conf["prevResult"]
        return _run_delegate(delegate, environ)
    os.makedirs(os.path.dirname(saved), mode=0o700, exist_ok=True)
    with open(saved, "w") as f:
        json.dump(delegate, f)
    return _run_delegate(delegate, environ)


def main() -> None:
    """Entry point of the stand-in executable."""
    environ = dict(os.environ)
    if not environ.get("CNI_COMMAND"):  # run by hand: the plugin's "about" text, as skel prints
        from .build import VERSION

        print(f"CNI Plugin flannel version {VERSION} (linux/amd64)", file=sys.stderr)
        print(f"CNI protocol versions supported: {', '.join(SUPPORTED_VERSIONS)}", file=sys.stderr)
        return
    try:
        out = handle(environ, sys.stdin.read())
    except CniError as exc:
        error = {"cniVersion": "1.0.0", "code": exc.code, "msg": exc.msg}
        if exc.details:
            error["details"] = exc.details
        print(json.dumps(error))
        sys.exit(1)
    if out:
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
