"""Stand-in Vault: ACL policies (a small HCL subset parser) and Vault's path matching."""

from __future__ import annotations

import json
import re
from typing import Any

from galley.lab.vault_standin.values import _bad

CAPABILITIES = ("create", "read", "update", "delete", "list", "sudo", "deny")
_LEGACY_POLICIES = {
    "deny": ("deny",),
    "read": ("read", "list"),
    "write": ("create", "read", "update", "delete", "list"),
    "sudo": ("create", "read", "update", "delete", "list", "sudo"),
}
_HCL_TOKEN = re.compile(
    r"""(?P<skip>\s+|\#[^\n]*|//[^\n]*|/\*.*?\*/)
      | (?P<string>"(?:[^"\\\n]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_.-]*)
      | (?P<punct>[{}\[\]=,:])""",
    re.VERBOSE | re.DOTALL,
)


class _HclParser:
    """Parse HCL bodies into {key: [(labels, value), ...]}; values are str, list or dict."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            match = _HCL_TOKEN.match(text, pos)
            if match is None:
                raise ValueError(f"unexpected character {text[pos]!r} at offset {pos}")
            pos = match.end()
            kind = match.lastgroup or ""
            if kind == "string":
                self.tokens.append((kind, json.loads(match.group())))
            elif kind != "skip":
                self.tokens.append((kind, match.group()))
        self.pos = 0

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("eof", "")

    def _take(self, value: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if token[0] == "eof" or (value is not None and token[1] != value):
            raise ValueError(f"expected {value or 'a token'}, found {token[1] or 'end of input'}")
        self.pos += 1
        return token

    def body(self, closing: str | None = None) -> dict[str, list[tuple[list[str], Any]]]:
        items: dict[str, list[tuple[list[str], Any]]] = {}
        while self._peek() not in (("eof", ""), ("punct", closing)):
            kind, key = self._take()
            if kind not in ("ident", "string"):
                raise ValueError(f"unexpected {key!r}")
            labels = []
            while self._peek()[0] == "string":
                labels.append(self._take()[1])
            if self._peek()[1] in ("=", ":"):
                self._take()
                value = self.value()
            else:
                self._take("{")
                value = self.body("}")
                self._take("}")
            items.setdefault(key, []).append((labels, value))
            if self._peek()[1] == ",":
                self._take()
        return items

    def value(self) -> Any:
        kind, text = self._take()
        if text == "[":
            values = []
            while self._peek()[1] != "]":
                values.append(self.value())
                if self._peek()[1] == ",":
                    self._take()
            self._take("]")
            return values
        if text == "{":
            inner = self.body("}")
            self._take("}")
            return inner
        if kind in ("string", "number", "ident"):
            return text
        raise ValueError(f"unexpected {text!r}")


def parse_policy(text: str) -> dict[str, frozenset[str]]:
    """Parse an ACL policy (HCL subset or JSON) into {path pattern: capabilities}."""
    try:
        if text.lstrip().startswith("{"):
            document = json.loads(text)
            blocks = [([p], b) for p, b in (document.get("path") or {}).items()]
        else:
            blocks = _HclParser(text).body().get("path", [])
    except (ValueError, AttributeError) as exc:
        raise _bad(f"failed to parse policy: {exc}") from None
    rules: dict[str, frozenset[str]] = {}
    for labels, block in blocks:
        if len(labels) != 1 or not isinstance(block, dict):
            raise _bad("failed to parse policy: a path block needs exactly one path string")
        pattern = labels[0].lstrip("/")
        caps = set(_block_value(block, "capabilities") or [])
        legacy = _block_value(block, "policy")
        if legacy is not None:
            if legacy not in _LEGACY_POLICIES:
                raise _bad(f'failed to parse policy: path "{pattern}": invalid policy "{legacy}"')
            caps.update(_LEGACY_POLICIES[legacy])
        for cap in caps:
            if cap not in CAPABILITIES:
                raise _bad(f'failed to parse policy: path "{pattern}": invalid capability "{cap}"')
        merged = rules.get(pattern, frozenset()) | caps
        rules[pattern] = frozenset({"deny"}) if "deny" in merged else frozenset(merged)
    return rules


def _block_value(block: dict[str, Any], key: str) -> Any:
    """A key's value in an HCL body (list of (labels, value)) or a JSON object."""
    value = block.get(key)
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return value[-1][1]
    return value


def _glob_regex(pattern: str) -> re.Pattern[str]:
    body = pattern[:-1] if pattern.endswith("*") else pattern
    parts = ["[^/]+" if seg == "+" else re.escape(seg) for seg in body.split("/")]
    return re.compile("/".join(parts) + (".*" if pattern.endswith("*") else ""), re.DOTALL)


def _priority(pattern: str) -> tuple[int, bool, int, int, str]:
    """Vault's ordering of wildcard paths; the highest tuple is the most specific rule."""
    segments = pattern.split("/")
    plus_offsets = [sum(len(s) + 1 for s in segments[:i]) for i, s in enumerate(segments)
                    if s == "+"]  # fmt: skip
    wild = plus_offsets + ([len(pattern) - 1] if pattern.endswith("*") else [])
    return (min(wild), not pattern.endswith("*"), -len(plus_offsets), len(pattern), pattern)


class Acl:
    """Merged rules of a token's policies, answering capabilities per request path."""

    def __init__(self, rules: dict[str, frozenset[str]]) -> None:
        self.exact = {
            p: c for p, c in rules.items() if not p.endswith("*") and "+" not in p.split("/")
        }
        self.wild = sorted(
            ((_priority(p), _glob_regex(p), c) for p, c in rules.items() if p not in self.exact),
            key=lambda item: item[0],
            reverse=True,
        )

    def capabilities(self, path: str) -> frozenset[str]:
        """Capabilities of the most specific rule matching ``path`` (empty when none)."""
        if path in self.exact:
            return self.exact[path]
        if path.endswith("/") and path[:-1] in self.exact:  # LIST on an exact rule
            return self.exact[path[:-1]]
        for _, regex, caps in self.wild:
            if regex.fullmatch(path):
                return caps
        return frozenset()


_DEFAULT_POLICY = """\
# Granted to every token unless created with no_default_policy (stand-in's short version).
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
path "sys/capabilities-self" { capabilities = ["update"] }
path "sys/internal/ui/resultant-acl" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/lookup" { capabilities = ["update"] }
path "cubbyhole/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "sys/wrapping/wrap" { capabilities = ["update"] }
path "sys/wrapping/lookup" { capabilities = ["update"] }
path "sys/wrapping/unwrap" { capabilities = ["update"] }
path "sys/tools/hash" { capabilities = ["update"] }
path "sys/tools/hash/*" { capabilities = ["update"] }
"""


def _needs_sudo(path: str) -> bool:
    return path == "sys/seal" or path.startswith("sys/auth/")
