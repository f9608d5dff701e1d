"""Custom pyinfra facts for galley, usable ad hoc: `pyinfra INVENTORY fact galley.facts.<Name>`."""

from galley.facts.api_proxy import ApiProxyBackends
from galley.facts.etcd import (
    EtcdAccess,
    EtcdClusterIdentity,
    EtcdHealth,
    EtcdLocalMemberId,
    EtcdMembers,
    EtcdSnapshots,
)
from galley.facts.files import PathStates
from galley.facts.firewall import HostFirewall
from galley.facts.fleet import ComponentVersions, FlannelLease
from galley.facts.release import InstalledReleases
from galley.facts.renewal import RenewalStatus
from galley.facts.system import OsInfo, PendingRestart, UnitStates
from galley.facts.tls import Certificate, Certificates, TlsFiles

__all__ = [
    "ApiProxyBackends",
    "Certificate",
    "Certificates",
    "ComponentVersions",
    "EtcdAccess",
    "EtcdClusterIdentity",
    "EtcdHealth",
    "EtcdLocalMemberId",
    "EtcdMembers",
    "EtcdSnapshots",
    "FlannelLease",
    "HostFirewall",
    "InstalledReleases",
    "OsInfo",
    "PathStates",
    "PendingRestart",
    "RenewalStatus",
    "TlsFiles",
    "UnitStates",
]
