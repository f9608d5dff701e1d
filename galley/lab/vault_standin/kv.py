"""Stand-in Vault's KV version 2 secrets engine."""

from __future__ import annotations

from typing import Any

from galley.lab.vault_standin.plumbing import Backend, Call, Mount, Resp, _route
from galley.lab.vault_standin.values import _as_int, _bad, _get, _now, _rfc3339


class KvBackend(Backend):
    """KV v2: <mount>/data/<path> and <mount>/metadata/<path>."""

    mount_type = "kv"

    def __init__(self, mount: Mount) -> None:
        super().__init__()
        self.secrets: dict[str, list[dict[str, Any]]] = {}
        self.created: dict[str, str] = {}
        self.routes = [
            _route(
                r"data/(.+)",
                exists=lambda path: path in self.secrets,
                read=self._read,
                update=self._write,
            ),
            _route(r"metadata(?:/(.*))?", read=self._metadata, list=self._list, delete=self._drop),
        ]

    @staticmethod
    def _version_meta(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: entry[k] for k in ("created_time", "deletion_time", "destroyed")}

    def _read(self, call: Call, path: str) -> Resp | None:
        versions = self.secrets.get(path)
        if not versions:
            return None
        wanted = _get(call.data, "version", _as_int, 0) or len(versions)
        if not 1 <= wanted <= len(versions):
            return None
        entry = versions[wanted - 1]
        meta = {**self._version_meta(entry), "custom_metadata": None, "version": wanted}
        return Resp({"data": entry["data"], "metadata": meta})

    def _write(self, call: Call, path: str) -> Resp:
        data = call.data.get("data")
        if not isinstance(data, dict):
            raise _bad("no data provided")
        versions = self.secrets.setdefault(path, [])
        cas = (call.data.get("options") or {}).get("cas")
        if cas is not None and _as_int(cas, "cas") != len(versions):
            raise _bad("check-and-set parameter did not match the current version")
        stamp = _rfc3339(_now())
        self.created.setdefault(path, stamp)
        versions.append(
            {"data": data, "created_time": stamp, "deletion_time": "", "destroyed": False}
        )
        return Resp(
            {
                "created_time": stamp,
                "custom_metadata": None,
                "deletion_time": "",
                "destroyed": False,
                "version": len(versions),
            }
        )

    def _metadata(self, call: Call, path: str | None) -> Resp | None:
        versions = self.secrets.get(path or "")
        if not versions:
            return None
        return Resp(
            {
                "cas_required": False,
                "created_time": self.created[path or ""],
                "current_version": len(versions),
                "custom_metadata": None,
                "delete_version_after": "0s",
                "max_versions": 0,
                "oldest_version": 0,
                "updated_time": versions[-1]["created_time"],
                "versions": {str(i): self._version_meta(v) for i, v in enumerate(versions, 1)},
            }
        )

    def _list(self, call: Call, path: str | None) -> Resp:
        prefix = f"{path.strip('/')}/" if path and path.strip("/") else ""
        keys = set()
        for name in self.secrets:
            if name.startswith(prefix):
                head, sep, _ = name[len(prefix) :].partition("/")
                keys.add(head + sep)
        return Resp({"keys": sorted(keys)})

    def _drop(self, call: Call, path: str | None) -> None:
        self.secrets.pop(path or "", None)
        self.created.pop(path or "", None)
