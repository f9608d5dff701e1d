"""Lab planning: names, roles and addresses of the droplets."""

import pytest

from galley.lab.lifecycle import inotify_needed
from galley.lab.topology import TopologyError, plan_added, plan_droplets


def test_default_lab_has_eight_droplets_with_consecutive_addresses():
    plans = plan_droplets()
    assert [p.name for p in plans] == [
        "lab-etcd-1",
        "lab-etcd-2",
        "lab-etcd-3",
        "lab-cp-1",
        "lab-cp-2",
        "lab-worker-1",
        "lab-worker-2",
        "lab-mon-1",
    ]
    assert [p.address for p in plans] == [f"198.18.0.{n}" for n in range(10, 18)]
    assert plans[0].roles == ("etcd",)
    assert plans[3].roles == ("control_plane",)
    assert plans[-2].roles == ("workers",)
    assert plans[-1].roles == ("monitoring",)


def test_stacked_etcd_puts_members_on_control_plane_droplets():
    plans = plan_droplets(etcd=3, control_plane=3, workers=1, stacked_etcd=True, monitoring=0)
    assert [(p.name, p.roles) for p in plans] == [
        ("lab-cp-1", ("control_plane", "etcd")),
        ("lab-cp-2", ("control_plane", "etcd")),
        ("lab-cp-3", ("control_plane", "etcd")),
        ("lab-worker-1", ("workers",)),
    ]


def test_zero_of_a_role_is_allowed():
    only_etcd = plan_droplets(etcd=1, control_plane=0, workers=0, monitoring=0)
    assert [p.name for p in only_etcd] == ["lab-etcd-1"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"etcd": -1}, "--etcd must be a whole number >= 0, got -1"),
        ({"workers": 51}, "--workers 51 exceeds the lab's limit of 50"),
        (
            {"etcd": 0, "control_plane": 0, "workers": 0, "monitoring": 0},
            "the lab needs at least one droplet",
        ),
        ({"etcd": 3, "control_plane": 2, "stacked_etcd": True}, "3 etcd members need at least 3"),
    ],
)
def test_impossible_shapes_are_refused(kwargs, message):
    with pytest.raises(TopologyError, match=message):
        plan_droplets(**kwargs)


def test_largest_lab_stays_inside_the_bridge_network():
    plans = plan_droplets(etcd=50, control_plane=50, workers=50, monitoring=50)
    assert len({p.address for p in plans}) == 200
    assert plans[-1].address == "198.18.0.209"


def test_default_lab_fits_the_kernels_default_inotify_limit():
    assert inotify_needed([plan.roles for plan in plan_droplets()]) <= 128  # Debian's default
    # The 38-droplet benchmark lab needs a raised limit: 5 etcd, 3 control plane, 30 workers.
    bench = [("etcd",)] * 5 + [("control_plane",)] * 3 + [("workers",)] * 30
    assert inotify_needed(bench) >= 16 + 5 * 7 + 3 * 16 + 30 * 16  # as measured, converged


def test_an_added_droplet_takes_the_next_number_and_the_lowest_free_address():
    existing = {plan.name: plan.address for plan in plan_droplets()}
    del existing["lab-cp-1"]  # removed earlier: its address is free again
    added = plan_added(existing, "control_plane")
    assert (added.name, added.address, added.roles) == (
        "lab-cp-1",
        "198.18.0.13",
        ("control_plane",),
    )
    existing["lab-cp-1"] = "198.18.0.13"
    assert plan_added(existing, "workers").name == "lab-worker-3"
    assert plan_added(existing, "etcd", "lab-etcd-9").address == "198.18.0.18"


@pytest.mark.parametrize(
    ("group", "name", "message"),
    [
        ("db", None, "unknown role 'db'"),
        ("workers", "lab-worker-1", "a droplet called lab-worker-1 already exists"),
        ("workers", "Lab_1", "'Lab_1' is not a valid droplet name"),
    ],
)
def test_impossible_additions_are_refused(group, name, message):
    existing = {plan.name: plan.address for plan in plan_droplets()}
    with pytest.raises(TopologyError, match=message):
        plan_added(existing, group, name)
