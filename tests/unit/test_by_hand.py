"""Issue 16: node configs the manual recipe wrote by hand are the same setting: no duplicate entry,
no reload or restart, and the recap says "already configured (by hand)"."""

from __future__ import annotations

import json
import tomllib

import pytest

from nodecfg.runtimes.common import ServiceFacts
from nodecfg.runtimes.containerd import (
    BY_HAND,
    ContainerdFacts,
    merge_hosts,
    plan_containerd,
    render_hosts,
)
from nodecfg.runtimes.containerd_config import DEFAULT_CERTS_D
from nodecfg.runtimes.docker import DockerFacts, plan_docker, registry_key

EP = "master:5000"
SVC_DOCKER = ServiceFacts("docker", installed=True, active=True)
SVC_CONTAINERD = ServiceFacts("containerd", installed=True, active=True, version="1.6.20")
CONFIG = f'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{DEFAULT_CERTS_D}"\n'

EQUIVALENT = [
    ("insecure-registries", "master:5000", "master:5000"),
    ("insecure-registries", "http://master:5000", "master:5000"),  # dockerd strips the scheme there
    ("insecure-registries", "https://Master:5000/", "master:5000"),
    ("registry-mirrors", "http://master:5000/", "http://master:5000"),
    ("registry-mirrors", "HTTP://MASTER:5000", "http://master:5000"),
]
DIFFERENT = [
    ("insecure-registries", "10.0.0.1:5000", "master:5000"),  # another name to dockerd
    ("insecure-registries", "master:5001", "master:5000"),
    ("registry-mirrors", "https://master:5000", "http://master:5000"),
    ("registry-mirrors", "master:5000", "http://master:5000"),  # not a mirror URL at all
]


@pytest.mark.parametrize(("key", "hand", "ours"), EQUIVALENT)
def test_hand_spellings_of_the_same_registry(key: str, hand: str, ours: str) -> None:
    assert registry_key(key, hand) == registry_key(key, ours)


@pytest.mark.parametrize(("key", "hand", "ours"), DIFFERENT)
def test_other_registries_are_not_the_same(key: str, hand: str, ours: str) -> None:
    assert registry_key(key, hand) != registry_key(key, ours)


def test_recipe_daemon_json_fully_there_means_no_reload() -> None:
    hand = '{"insecure-registries": ["http://master:5000"], "registry-mirrors": ["http://master:5000/"]}\n'
    plan = plan_docker(DockerFacts(service=SVC_DOCKER, daemon_json=hand), EP, True, None)
    assert plan.files == () and plan.action == "none"
    assert plan.note == BY_HAND


def test_recipe_daemon_json_gets_the_mirror_and_one_insecure_entry() -> None:
    hand = '{"insecure-registries": ["master:5000"]}\n'
    plan = plan_docker(DockerFacts(service=SVC_DOCKER, daemon_json=hand), EP, True, None)
    (change,) = plan.files
    assert json.loads(change.content) == {"insecure-registries": ["master:5000"],
                                          "registry-mirrors": ["http://master:5000"]}
    assert plan.action == "reload" and f"insecure-registries {BY_HAND}" in plan.note
    # once nodecfg wrote the file, it is not "by hand" any more, and nothing is to do
    again = plan_docker(DockerFacts(service=SVC_DOCKER, daemon_json=change.content), EP, True, None)
    assert again.files == () and again.note == ""


HAND_HOSTS = [
    ("the recipe's", f'server = "http://{EP}"\n\n[host."http://{EP}"]\n  capabilities = ["pull", "resolve"]\n'
     "  skip_verify = true\n"),
    ("server only", f'server = "http://{EP}"\n'),
    ("another spelling", f'server = "http://{EP}"\n[host."HTTP://{EP}/"]\n  capabilities = ["pull", "resolve", '
     '"push"]\n'),
]


@pytest.mark.parametrize("text", [h[1] for h in HAND_HOSTS], ids=[h[0] for h in HAND_HOSTS])
def test_hand_hosts_toml_for_the_registry_is_the_same(text: str) -> None:
    assert merge_hosts(text, render_hosts(EP, EP, None), EP, "x") is None


def test_hand_hosts_toml_needs_nodecfg_login_when_the_registry_has_one() -> None:
    text = HAND_HOSTS[0][1]
    got = merge_hosts(text, render_hosts(EP, EP, "Basic dTpw"), EP, "x")
    assert got is not None
    hosts = tomllib.loads(got)["host"]
    assert list(hosts) == [f"http://{EP}"]  # the operator's entry replaced, not kept twice
    assert hosts[f"http://{EP}"]["header"]["Authorization"] == "Basic dTpw"


def test_hand_hosts_toml_pulling_elsewhere_first_is_merged_without_a_duplicate() -> None:
    text = ('server = "https://registry-1.docker.io"\n[host."https://mirror.corp"]\n'
            f'  capabilities = ["pull"]\n[host."HTTP://{EP}/"]\n  capabilities = ["pull", "resolve"]\n')
    got = merge_hosts(text, render_hosts("docker.io", EP, None), EP, "x")
    assert got is not None
    assert list(tomllib.loads(got)["host"]) == [f"http://{EP}", "https://mirror.corp"]


def test_containerd_plan_with_hand_hosts_changes_nothing_and_says_so() -> None:
    ours = {f"{DEFAULT_CERTS_D}/{up}/hosts.toml": render_hosts(up, EP, None)
            for up in ("docker.io", "quay.io")}
    hosts = {**ours, f"{DEFAULT_CERTS_D}/{EP}/hosts.toml": HAND_HOSTS[0][1]}
    facts = ContainerdFacts(service=SVC_CONTAINERD, config_toml=CONFIG, hosts=hosts)
    plan = plan_containerd(facts, EP, ("docker.io", "quay.io"), None)
    assert plan.files == () and plan.action == "none"
    assert plan.note == f"{BY_HAND}: hosts.toml for {EP}"
