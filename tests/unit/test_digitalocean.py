"""Listing droplets through the DigitalOcean API, against the local stand-in."""

from __future__ import annotations

import socket

import pytest
import requests

from galley.digitalocean import DigitalOceanError, Droplet, list_droplets
from tests.standins.digitalocean_api import droplet, serve

TOKEN = "dop_v1_test"


def _fleet(count: int, tag: str = "k8s-nyc3") -> list[dict]:
    return [
        droplet(1000 + i, f"node-{i:02d}", [tag, "role:worker"], private_ip=f"10.108.0.{i + 2}")
        for i in range(count)
    ]


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep({seconds})")


def test_follows_next_links_across_three_pages_and_filters_by_tag():
    others = _fleet(5, tag="k8s-sfo3")
    with serve(_fleet(45) + others, TOKEN) as api:
        found = list_droplets(TOKEN, "k8s-nyc3", base_url=api.url, per_page=20, sleep=_no_sleep)
    assert [d.name for d in found] == [f"node-{i:02d}" for i in range(45)]
    assert [r["query"].get("page", ["1"]) for r in api.requests] == [["1"], ["2"], ["3"]]
    assert all(r["query"]["tag_name"] == ["k8s-nyc3"] for r in api.requests)


def test_a_droplet_carries_id_addresses_region_size_and_tags():
    item = droplet(7, "etcd-1", ["k8s", "role:etcd"], private_ip="10.1.0.5", public_ip="192.0.2.9")
    with serve([item], TOKEN) as api:
        (found,) = list_droplets(TOKEN, "k8s", base_url=api.url)
    assert found == Droplet(
        id=7,
        name="etcd-1",
        status="active",
        tags=("k8s", "role:etcd"),
        region="nyc3",
        size="s-2vcpu-4gb",
        private_ip="10.1.0.5",
        public_ip="192.0.2.9",
    )


def test_region_keeps_only_droplets_in_that_region():
    items = [droplet(1, "a", ["k8s"], region="nyc3"), droplet(2, "b", ["k8s"], region="sfo3")]
    with serve(items, TOKEN) as api:
        found = list_droplets(TOKEN, "k8s", region="sfo3", base_url=api.url)
    assert [d.name for d in found] == ["b"]


def test_rate_limited_requests_wait_as_told_then_succeed():
    slept: list[float] = []
    with serve(_fleet(3), TOKEN) as api:
        api.fail_next(429, count=2, retry_after=3)
        found = list_droplets(TOKEN, "k8s-nyc3", base_url=api.url, sleep=slept.append)
    assert len(found) == 3
    assert slept == [3.0, 3.0]


def test_rate_limiting_gives_up_after_max_retries_with_the_apis_message():
    slept: list[float] = []
    with serve(_fleet(1), TOKEN) as api:
        api.fail_next(429, count=10, retry_after=1)
        with pytest.raises(DigitalOceanError) as caught:
            list_droplets(TOKEN, "k8s-nyc3", base_url=api.url, max_retries=2, sleep=slept.append)
    assert slept == [1.0, 1.0]
    assert "429 too_many_requests: API rate limit exceeded." in str(caught.value)
    assert "gave up after 2 retries" in str(caught.value)


@pytest.mark.parametrize("retry_after", [3600, None], ids=["retry-after", "ratelimit-reset"])
def test_a_wait_longer_than_the_budget_fails_at_once(retry_after):
    with serve(_fleet(1), TOKEN) as api:
        api.fail_next(429, retry_after=retry_after)
        with pytest.raises(DigitalOceanError, match=r"asked for 3[56]\d\ds more"):
            list_droplets(TOKEN, "k8s-nyc3", base_url=api.url, sleep=_no_sleep)


def test_a_bad_token_gives_the_apis_401_message_without_the_token():
    with serve(_fleet(1), TOKEN) as api, pytest.raises(DigitalOceanError) as caught:
        list_droplets("dop_v1_wrong", "k8s-nyc3", base_url=api.url)
    message = str(caught.value)
    assert "401 Unauthorized: Unable to authenticate you" in message
    assert "dop_v1_wrong" not in message


def test_server_errors_are_retried_with_backoff_then_name_the_request_id():
    slept: list[float] = []
    with serve(_fleet(2), TOKEN) as api:
        api.fail_next(500, count=2)
        assert len(list_droplets(TOKEN, "k8s-nyc3", base_url=api.url, sleep=slept.append)) == 2
        assert slept == [1.0, 2.0]
        api.fail_next(500, count=10)
        with pytest.raises(DigitalOceanError) as caught:
            list_droplets(TOKEN, "k8s-nyc3", base_url=api.url, sleep=slept.append, max_retries=3)
    assert "500 server_error: Server was unable to give you a response." in str(caught.value)
    assert "(request_id " in str(caught.value) and "gave up after 3 retries" in str(caught.value)


def test_pages_are_capped(monkeypatch):
    monkeypatch.setattr("galley.digitalocean.MAX_PAGES", 2)
    pages = pytest.raises(DigitalOceanError, match="more than 2 pages")
    with serve(_fleet(5), TOKEN) as api, pages:
        list_droplets(TOKEN, "k8s-nyc3", base_url=api.url, per_page=2)


def test_an_unreachable_api_is_a_digitalocean_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DigitalOceanError, match=r"failed"):
        list_droplets(TOKEN, "k8s", base_url=f"http://127.0.0.1:{port}")


class _OnePage(requests.Session):
    """A session whose only page links to another host."""

    def request(self, method, url, **kwargs):
        response = requests.Response()
        response.request = requests.Request(method, url).prepare()
        response.status_code = 200
        response.url = url
        response._content = b'{"droplets": [], "links": {"pages": {"next": "https://evil.test/x"}}}'
        return response


def test_a_pagination_link_to_another_host_is_not_followed_with_the_token():
    with pytest.raises(DigitalOceanError, match=r"refusing to follow pagination link"):
        list_droplets(TOKEN, "k8s", session=_OnePage())
