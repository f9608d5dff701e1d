"""The DigitalOcean API v2, as galley uses it: droplets (read) and Cloud Firewalls.

Every request goes through `Api.call`: Bearer authentication, rate limiting (429) and server
errors (5xx) retried within a bound, any other failure one line (`DigitalOceanError`);
listings follow the API's pagination links (`Api.pages`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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


@dataclass
class Api:
    """A DigitalOcean API client for ``token`` at ``base_url``.

    Rate limiting (429) and server errors (5xx) are retried at most ``max_retries`` times per
    call, waiting as the API asks (429) or backing off (5xx), never more than
    ``max_total_wait`` seconds in all; any other failure raises DigitalOceanError.
    """

    token: str
    base_url: str = DEFAULT_API_URL
    session: requests.Session | None = None
    max_retries: int = 5
    sleep: Callable[[float], None] = time.sleep
    max_total_wait: float = MAX_TOTAL_WAIT
    http: requests.Session = field(init=False)
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        if not self.token:
            raise DigitalOceanError("no DigitalOcean API token given")
        self.http = self.session or requests.Session()
        self.headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}

    def url(self, path: str) -> str:
        """The absolute URL of an API ``path`` (``/v2/...``)."""
        return f"{self.base_url.rstrip('/')}{path}"

    def call(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> requests.Response:
        """``method`` ``url`` (retried as the class says); the response, its status in ``ok``."""
        waited = 0.0
        retries = 0
        while True:
            response = _send(self.http, method, url, params, body, self.headers)
            if response.status_code == 429 or response.status_code >= 500:
                limited = response.status_code == 429
                delay = _retry_delay(response, retries) if limited else float(2**retries)
                if retries >= self.max_retries or waited + delay > self.max_total_wait:
                    raise DigitalOceanError(
                        f"{_describe(response)}; gave up after {retries} retries and "
                        f"{waited:.0f}s of waiting (the API asked for {delay:.0f}s more)"
                    )
                self.sleep(delay)
                waited += delay
                retries += 1
                continue
            if response.status_code not in ok:
                raise DigitalOceanError(_describe(response))
            return response

    def pages(self, path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of the listing ``path`` (its list under ``key``), following all pages;
        at most `MAX_PAGES`, and only links back to the same API."""
        url: str | None = self.url(path)
        query: dict[str, Any] | None = params
        origin = urlsplit(self.url(path))[:2]
        seen: set[str] = set()
        items: list[dict[str, Any]] = []
        while url:
            response = self.call("GET", url, query)
            body = _json(response)
            page = body.get(key)
            if not isinstance(page, list):
                raise DigitalOceanError(f"GET {response.url}: the response has no {key} list")
            items += page
            seen.add(response.url)
            url = ((body.get("links") or {}).get("pages") or {}).get("next")
            if url and len(seen) >= MAX_PAGES:
                raise DigitalOceanError(
                    f"GET {response.url}: more than {MAX_PAGES} pages of {key}; refusing to go on"
                )
            query = None
            if url and (urlsplit(url)[:2] != origin or url in seen):
                raise DigitalOceanError(f"refusing to follow pagination link {url!r}")
        return items


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
    """Every droplet tagged `tag` (and in `region`, if given), following all pages (`Api`)."""
    api = Api(token, base_url, session, max_retries, sleep, max_total_wait)
    items = api.pages("/v2/droplets", "droplets", {"tag_name": tag, "per_page": per_page})
    # By id: a droplet created mid-listing shifts pages.
    droplets = {d.id: d for d in map(droplet_from_api, items)}
    return [d for d in droplets.values() if region is None or d.region == region]


def _send(
    http: requests.Session,
    method: str,
    url: str,
    params: dict[str, Any] | None,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> requests.Response:
    try:
        return http.request(method, url, params=params, json=body, headers=headers, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise DigitalOceanError(f"{method} {url} failed: {exc}") from exc


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
            f"{response.request.method} {response.url}: expected a JSON object, "
            f"got {response.text[:200]!r}"
        )
    return body


def _describe(response: requests.Response) -> str:
    """One line naming the request, status, the API's error id/message and request id."""
    body = _body(response) or {}
    error_id = body.get("id") or response.reason
    message = body.get("message") or response.text[:200]
    method = response.request.method if response.request is not None else "GET"
    text = f"DigitalOcean API {method} {response.url}: {response.status_code} {error_id}: {message}"
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
