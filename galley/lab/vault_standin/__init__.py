"""Stand-in for HashiCorp Vault, lab/test only.

Never import this from a production code path. It serves, on 127.0.0.1, the slice of Vault's HTTP
API that galley drives through hvac 2.4, with Vault's envelopes, status codes and error texts
(modelled on Vault 1.17; see /work/shared/reference/vault-pki.md). State lives in memory only.
Like ``vault server -dev`` it starts unsealed with a KV v2 mount at ``secret/``.

Known divergences from real Vault, on purpose:
- One unseal key: any key unseals at once; there is no init/rekey, no storage, no leases.
- PKI: keys rsa/ec only, output format ``pem`` only, no CRL/OCSP, no URI or other SANs. As in
  Vault >= 1.11, generating another root adds a new issuer but leaves the default issuer alone.
- KV: version 2 only, no soft delete/undelete/destroy of single versions.
- ACL: only ``capabilities`` (and legacy ``policy``) of ``path`` blocks are honoured; parameter
  constraints are parsed and ignored. Auth methods: token and approle only.
"""

from galley.lab.vault_standin.acl import Acl, parse_policy
from galley.lab.vault_standin.core import Core
from galley.lab.vault_standin.server import StandinVault, main, serve

__all__ = ["Acl", "Core", "StandinVault", "main", "parse_policy", "serve"]
