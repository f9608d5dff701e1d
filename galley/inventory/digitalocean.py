"""List droplets through the DigitalOcean API v2 (read-only)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

DEFAULT_API_URL = "https://api.digitalocean.com"
API_URL_ENV = "DIGITALOCEAN_API_URL"
MAX_TOTAL_WAIT = 60.0
# 200 droplets a page: far beyond any region, and a bound on a misbehaving API.
MAX_PAGES = 100
TIMEOUT = (10, 60)


class DigitalOceanError(Exception):
    """The DigitalOcean API refused or failed a request."""


@dataclass(frozen=True)
class Droplet:
    """The parts of a droplet an inventory needs."""

    id: int
    name: str
    status: str
    tags: tuple[str, ...]
    region: str
    size: str
    private_ip: str | None
    public_ip: str | None


def api_url(environ: Mapping[str, str] = os.environ) -> str:
    """The API base URL: env DIGITALOCEAN_API_URL, else the public API."""
    return environ.get(API_URL_ENV) or DEFAULT_API_URL


def droplet_from_api(item: Mapping[str, Any]) -> Droplet:
    """Build a Droplet from one element of the API's `droplets` list."""
    addresses: dict[str, str] = {}
    for network in item.get("networks", {}).get("v4", []):
        addresses.setdefault(network.get("type", ""), network.get("ip_address"))
    region = item.get("region") or {}
    return Droplet(
        id=int(item["id"]),
        name=item["name"],
        status=item.get("status", ""),
        tags=tuple(item.get("tags") or ()),
        region=region.get("slug", "") if isinstance(region, Mapping) else str(region),
        size=item.get("size_slug", ""),
        private_ip=addresses.get("private"),
        public_ip=addresses.get("public"),
    )


def list_droplets(
    token: str,
    tag: str,
    region: str | None = None,
    base_url: str = DEFAULT_API_URL,
    session: requests.Session | None = None,
    per_page: int = 200,
    max_retries: int = 5,
    sleep: Callable[[float], None] = time.sleep,
    max_total_wait: float = MAX_TOTAL_WAIT,
) -> list[Droplet]:
    """Every droplet tagged `tag` (and in `region`, if given), following all pages.

    Rate limiting (429) and server errors (5xx) are retried at most `max_retries` times,
    waiting as the API asks (429) or backing off (5xx), never more than `max_total_wait`
    seconds in all; at most `MAX_PAGES` pages are read; any other failure raises
    DigitalOceanError.
    """
    if not token:
        raise DigitalOceanError("no DigitalOcean API token given")
    http = session or requests.Session()
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    url: str | None = f"{base_url.rstrip('/')}/v2/droplets"
    params: dict[str, Any] | None = {"tag_name": tag, "per_page": per_page}
    origin = urlsplit(url)[:2]
    seen: set[str] = set()
    droplets: dict[int, Droplet] = {}  # by id: a droplet created mid-listing shifts pages
    waited = 0.0
    retries = 0
    pages = 0
    while url:
        response = _get(http, url, params, headers)
        if response.status_code == 429 or response.status_code >= 500:
            limited = response.status_code == 429
            delay = _retry_delay(response, retries) if limited else float(2**retries)
            if retries >= max_retries or waited + delay > max_total_wait:
                raise DigitalOceanError(
                    f"{_describe(response)}; gave up after {retries} retries and "
                    f"{waited:.0f}s of waiting (the API asked for {delay:.0f}s more)"
                )
            sleep(delay)
            waited += delay
            retries += 1
            continue
        if response.status_code != 200:
            raise DigitalOceanError(_describe(response))
        body = _json(response)
        items = body.get("droplets")
        if not isinstance(items, list):
            raise DigitalOceanError(f"GET {response.url}: the response has no droplets list")
        droplets.update((d.id, d) for d in map(droplet_from_api, items))
        seen.add(response.url)
        pages += 1
        url = ((body.get("links") or {}).get("pages") or {}).get("next")
        if url and pages >= MAX_PAGES:
            raise DigitalOceanError(
                f"GET {response.url}: more than {MAX_PAGES} pages of droplets; refusing to go on"
            )
        params = None
        if url and (urlsplit(url)[:2] != origin or url in seen):
            raise DigitalOceanError(f"refusing to follow pagination link {url!r}")
    return [d for d in droplets.values() if region is None or d.region == region]


def _get(
    http: requests.Session, url: str, params: dict[str, Any] | None, headers: dict[str, str]
) -> requests.Response:
    try:
        return http.get(url, params=params, headers=headers, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise DigitalOceanError(f"GET {url} failed: {exc}") from exc


def _body(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _json(response: requests.Response) -> dict[str, Any]:
    body = _body(response)
    if body is None:
        raise DigitalOceanError(
            f"GET {response.url}: expected a JSON object, got {response.text[:200]!r}"
        )
    return body


def _describe(response: requests.Response) -> str:
    """One line naming the request, status, the API's error id/message and request id."""
    body = _body(response) or {}
    error_id = body.get("id") or response.reason
    message = body.get("message") or response.text[:200]
    text = f"DigitalOcean API GET {response.url}: {response.status_code} {error_id}: {message}"
    request_id = body.get("request_id") or response.headers.get("x-request-id")
    return f"{text} (request_id {request_id})" if request_id else text


def _retry_delay(response: requests.Response, retries: int) -> float:
    """Seconds to wait before retrying a 429: retry-after, else ratelimit-reset, else backoff."""
    retry_after = response.headers.get("retry-after", "").strip()
    if retry_after.isdigit():
        return float(retry_after)
    reset = response.headers.get("ratelimit-reset", "").strip()
    if reset.isdigit():
        return max(0.0, int(reset) - time.time())
    return float(2**retries)
