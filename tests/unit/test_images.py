"""Where upstream images land in the local registry."""

from __future__ import annotations

import pytest

from nodecfg.errors import UsageError
from nodecfg.images import parse_ref, plan_targets

MAPPING = [
    ("docker.io/library/busybox:1.36", "docker.io", "library/busybox:1.36"),
    ("busybox:1.36", "docker.io", "library/busybox:1.36"),
    ("busybox", "docker.io", "library/busybox:latest"),
    ("index.docker.io/library/nginx:1.25", "docker.io", "library/nginx:1.25"),
    ("bitnami/redis:7", "docker.io", "bitnami/redis:7"),
    ("registry.k8s.io/pause:3.9", "registry.k8s.io", "pause:3.9"),
    ("registry.k8s.io/coredns/coredns:v1.11.1", "registry.k8s.io", "coredns/coredns:v1.11.1"),
    ("quay.io/org/x:1", "quay.io", "org/x:1"),
    ("localhost:5000/team/app:2", "localhost:5000", "team/app:2"),
    ("my.registry:8443/a/b/c:v2.0-rc1", "my.registry:8443", "a/b/c:v2.0-rc1"),
]


@pytest.mark.parametrize(("ref", "registry", "target"), MAPPING)
def test_target_mapping(ref: str, registry: str, target: str) -> None:
    parsed = parse_ref(ref)
    assert parsed.registry == registry
    assert parsed.target == target


@pytest.mark.parametrize("ref", ["", "Busybox:1", "busybox@sha256:abc", "a b", "busybox:-bad"])
def test_invalid_refs(ref: str) -> None:
    with pytest.raises(UsageError):
        parse_ref(ref)


def test_collisions_are_refused_before_any_push() -> None:
    with pytest.raises(UsageError, match=r"both be pushed as pause:3\.9"):
        plan_targets(["registry.k8s.io/pause:3.9", "quay.io/pause:3.9"])
    # the same image spelled two ways is one target, not a collision
    assert [t.target for t in plan_targets(["busybox:1.36", "docker.io/library/busybox:1.36"])] == [
        "library/busybox:1.36"]
