"""A small YAML subset reader for the stand-ins (lab/test only; runs on droplets: stdlib only).

Reads what Kubernetes config files and kubeconfigs use: block mappings and sequences, plain,
single- and double-quoted scalars, one-line flow collections (``{}``, ``[a, b]``, JSON), comments
and one optional ``---``. Plain scalars become str, int, float, bool or None as in YAML 1.2's
core schema. Anchors, tags, block scalars (``|``, ``>``) and multi-line flow collections are
refused with :class:`YamlError` rather than misread.
"""

from __future__ import annotations

import json
import re
from typing import Any

_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_KEY = re.compile(
    r"""^(?P<key>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^'"\[\]{}#&*!|>%@`][^:#]*?)\s*:(?:\s+|$)"""
)


class YamlError(ValueError):
    """The text is not in the YAML subset the stand-ins read."""


def _scalar(text: str, line: int) -> Any:
    text = text.strip()
    if not text:
        return None
    if text[0] in "&*!|>%@`":
        raise YamlError(f"line {line}: unsupported YAML construct {text[:20]!r}")
    if text[0] == '"':
        try:
            value, end = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError as exc:
            raise YamlError(f"line {line}: bad double-quoted string: {exc}") from None
        _only_comment(text[end:], line)
        return value
    if text[0] == "'":
        match = re.match(r"'((?:[^']|'')*)'", text)
        if not match:
            raise YamlError(f"line {line}: unterminated single-quoted string")
        _only_comment(text[match.end() :], line)
        return match.group(1).replace("''", "'")
    if text[0] in "[{":
        return _flow(text, line)
    text = _strip_comment(text)
    if text in ("null", "Null", "NULL", "~"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text) and any(c.isdigit() for c in text):
        return float(text)
    return text


def _strip_comment(text: str) -> str:
    match = re.search(r"\s#", text)
    return (text[: match.start()] if match else text).strip()


def _only_comment(rest: str, line: int) -> None:
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise YamlError(f"line {line}: unexpected text after quoted string: {rest!r}")


def _flow(text: str, line: int) -> Any:
    """A one-line flow collection: JSON, or YAML flow with plain scalars."""
    text = _strip_comment(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    value, end = _FlowParser(text, line).parse(0)
    if text[end:].strip():
        raise YamlError(f"line {line}: unexpected text after flow collection")
    return value


class _FlowParser:
    def __init__(self, text: str, line: int) -> None:
        self.text, self.line = text, line

    def _skip(self, i: int) -> int:
        while i < len(self.text) and self.text[i] == " ":
            i += 1
        return i

    def parse(self, i: int) -> tuple[Any, int]:
        i = self._skip(i)
        if i >= len(self.text):
            raise YamlError(f"line {self.line}: unterminated flow collection")
        opener = self.text[i]
        if opener == "[":
            return self._collection(i + 1, "]", list)
        if opener == "{":
            return self._collection(i + 1, "}", dict)
        if opener in "\"'":
            match = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\']|\'\')*\'').match(self.text, i)
            if not match:
                raise YamlError(f"line {self.line}: unterminated quoted string")
            return _scalar(match.group(0), self.line), match.end()
        match = re.compile(r"[^,\[\]{}]*").match(self.text, i)
        token = match.group(0)
        if ": " in token or token.endswith(":"):
            token = token.split(":", 1)[0]
            return _scalar(token, self.line), i + len(token)
        return _scalar(token, self.line), match.end()

    def _collection(self, i: int, closer: str, kind: type) -> tuple[Any, int]:
        result: Any = kind()
        i = self._skip(i)
        if i < len(self.text) and self.text[i] == closer:
            return result, i + 1
        while True:
            item, i = self.parse(i)
            i = self._skip(i)
            if kind is dict:
                if i >= len(self.text) or self.text[i] != ":":
                    raise YamlError(f"line {self.line}: expected ':' in flow mapping")
                value, i = self.parse(i + 1)
                result[item] = value
                i = self._skip(i)
            else:
                result.append(item)
            if i < len(self.text) and self.text[i] == ",":
                i += 1
                continue
            if i < len(self.text) and self.text[i] == closer:
                return result, i + 1
            raise YamlError(f"line {self.line}: expected ',' or {closer!r} in flow collection")


def loads(text: str) -> Any:
    """Parse one YAML document of the supported subset."""
    lines: list[tuple[int, int, str]] = []  # (line number, indent, content)
    started = False
    for number, raw in enumerate(text.splitlines(), start=1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlError(f"line {number}: tabs are not allowed in indentation")
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped == "---" and raw.startswith("---"):
            if started or lines:
                raise YamlError(f"line {number}: only one YAML document is supported")
            started = True
            continue
        if stripped in ("...",):
            break
        lines.append((number, len(raw) - len(raw.lstrip(" ")), raw.strip(" ")))
    if not lines:
        return None
    value, end = _Block(lines).parse(0, lines[0][1])
    if end != len(lines):
        raise YamlError(f"line {lines[end][0]}: unexpected indentation")
    return value


class _Block:
    def __init__(self, lines: list[tuple[int, int, str]]) -> None:
        self.lines = lines

    def parse(self, i: int, indent: int) -> tuple[Any, int]:
        number, _, content = self.lines[i]
        if content == "-" or content.startswith("- "):
            return self._sequence(i, indent)
        if _KEY.match(content):
            return self._mapping(i, indent)
        if i + 1 < len(self.lines) and self.lines[i + 1][1] >= indent:
            raise YamlError(f"line {number}: multi-line scalars are not supported")
        return _scalar(content, number), i + 1

    def _value(self, i: int, rest: str, number: int, indent: int) -> tuple[Any, int]:
        """The value after ``key:`` or ``-``: inline, or a nested block on the next lines."""
        rest = rest.strip()
        if rest and not rest.startswith("#"):
            if rest[0] in "|>":
                raise YamlError(f"line {number}: block scalars are not supported")
            return _scalar(rest, number), i + 1
        nxt = i + 1
        if nxt < len(self.lines):
            child_indent = self.lines[nxt][1]
            child = self.lines[nxt][2]
            is_item = child == "-" or child.startswith("- ")
            if child_indent > indent or (child_indent == indent and is_item):
                return self.parse(nxt, child_indent)
        return None, nxt

    def _mapping(self, i: int, indent: int) -> tuple[dict, int]:
        result: dict = {}
        while i < len(self.lines):
            number, line_indent, content = self.lines[i]
            if line_indent < indent:
                break
            if line_indent > indent:
                raise YamlError(f"line {number}: unexpected indentation")
            match = _KEY.match(content)
            if not match:
                raise YamlError(f"line {number}: expected 'key: value'")
            key = _scalar(match.group("key"), number)
            if key in result:
                raise YamlError(f"line {number}: duplicate key {key!r}")
            result[key], i = self._value(i, content[match.end() :], number, indent)
        return result, i

    def _sequence(self, i: int, indent: int) -> tuple[list, int]:
        result: list = []
        while i < len(self.lines):
            number, line_indent, content = self.lines[i]
            is_item = content == "-" or content.startswith("- ")
            if line_indent < indent or (line_indent == indent and not is_item):
                break  # the end of the sequence (which may sit at its parent key's indent)
            if line_indent > indent:
                raise YamlError(f"line {number}: expected '- ' sequence item")
            rest = content[1:]
            inner = rest.lstrip(" ")
            if inner and _KEY.match(inner) and not inner.startswith(("[", "{")):
                # "- key: value" starts a mapping indented to the key's column.
                column = indent + 1 + (len(rest) - len(inner))
                self.lines[i] = (number, column, inner)
                item, i = self._mapping(i, column)
            else:
                item, i = self._value(i, rest, number, indent)
            result.append(item)
        return result, i
