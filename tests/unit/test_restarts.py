"""The shared health wait of rolling restarts."""

from galley.host.restarts import wait_until_healthy


def test_waits_until_healthy():
    answers = iter(["starting", "starting", None])
    assert wait_until_healthy(lambda: next(answers), timeout=10) is None


def test_gives_up_after_the_timeout_with_the_last_problem():
    answers = iter(["refused", "still refused", None])
    assert wait_until_healthy(lambda: next(answers), timeout=0) == "refused"
