"""kubespray / Ansible inventories: detection, variable precedence, mapping, and broken files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nodecfg.ansible_inventory import proxy_jump
from nodecfg.errors import InventoryError
from nodecfg.inventory import parse_inventory

KUBESPRAY = """\
all:
  hosts:
    cp1: {ansible_host: 10.0.0.11, ip: 10.0.0.111, access_ip: 10.0.0.211}
    cp2: {access_ip: 10.0.0.12, ip: 10.0.0.112}
    w1:  {ip: 10.0.0.13, ansible_user: admin}
    w2:  {}
  vars:
    ansible_user: deploy
    ansible_port: 22
    ansible_become: false
    nodecfg:
      registry: {port: 5001, mirrors: [docker.io]}
      images: [busybox:1.36]
  children:
    kube_control_plane:
      hosts: {cp1: , cp2: }
      vars: {ansible_become: true}
    kube_node:
      hosts: {w1: , w2: }
      vars: {ansible_port: 2222, ansible_ssh_common_args: "-o ProxyJump=root@10.0.0.11"}
    etcd:
      hosts: {cp1: }
    k8s_cluster:
      children: {kube_control_plane: , kube_node: , calico_rr: }
      vars: {ansible_port: 2200, ansible_ssh_private_key_file: /keys/id}
    calico_rr:
      hosts: {}
"""


def load(text: str, name: str = "hosts.yaml") -> object:
    return parse_inventory(text, f"/inv/{name}", check_files=False)


def test_kubespray_yaml_maps_master_nodes_and_settings() -> None:
    inv = load(KUBESPRAY)
    assert inv.master.name == "cp1" and inv.master.address == "10.0.0.11"  # ansible_host first
    by = {n.name: n for n in inv.nodes}
    assert list(by) == ["cp1", "cp2", "w1", "w2"]  # k8s_cluster: control plane, then kube_node
    assert by["cp2"].address == "10.0.0.12"  # access_ip before ip
    assert by["w1"].address == "10.0.0.13"  # ip
    assert by["w2"].address == "w2"  # the name itself
    assert inv.registry.port == 5001 and inv.registry.address == "10.0.0.11"
    assert inv.registry.mirrors == ("docker.io",)
    assert inv.images == ("busybox:1.36",)


@pytest.mark.parametrize(("host", "field", "expected"), [
    # all.vars < k8s_cluster (depth 1) < kube_node (depth 2) < host vars
    ("cp1", "port", 2200),               # k8s_cluster over all.vars
    ("w1", "port", 2222),                # kube_node (deeper) over k8s_cluster
    ("cp1", "become", True),             # kube_control_plane over all.vars
    ("w2", "become", False),             # all.vars only
    ("w1", "user", "admin"),             # host var over all.vars
    ("w2", "user", "deploy"),            # all.vars
    ("w1", "gateway", "root@10.0.0.11"),  # ansible_ssh_common_args ProxyJump
    ("cp1", "gateway", None),
    ("w2", "key", Path("/keys/id")),     # k8s_cluster's key for its children's hosts
])
def test_ansible_variable_precedence(host: str, field: str, expected: object) -> None:
    inv = load(KUBESPRAY)
    node = {n.name: n for n in inv.nodes}[host]
    assert getattr(node.ssh, field) == expected


def test_same_depth_groups_merge_by_name() -> None:
    text = """\
all:
  children:
    kube_control_plane: {hosts: {a: {ansible_host: 10.0.0.1}}}
    zeta: {hosts: {a: }, vars: {ansible_port: 2002}}
    alpha: {hosts: {a: }, vars: {ansible_port: 2001}}
"""
    assert load(text).master.ssh.port == 2002  # same depth: later name wins, as in Ansible


def test_ini_inventory() -> None:
    text = """\
# kubespray inventory.ini
[all]
cp1 ansible_host=10.0.0.11 ip=10.0.0.11 etcd_member_name=etcd1
w1  ansible_host=10.0.0.12 ansible_user=ops

[all:vars]
ansible_become=yes

[kube_control_plane]
cp1

[kube_node]
w1

[kube_node:vars]
ansible_ssh_common_args='-J jump@10.0.0.1:2022'

[k8s_cluster:children]
kube_control_plane
kube_node
"""
    inv = load(text, "inventory.ini")
    assert inv.master.address == "10.0.0.11"
    by = {n.name: n for n in inv.nodes}
    assert by["w1"].ssh.user == "ops" and by["w1"].ssh.become is True
    assert by["w1"].ssh.gateway == "jump@10.0.0.1:2022"


def test_without_k8s_cluster_nodes_are_control_plane_plus_kube_node() -> None:
    text = "kube_control_plane: {hosts: {m: {ansible_host: 10.0.0.1}}}\n" \
           "kube_node: {hosts: {n: {ansible_host: 10.0.0.2}}}\n"
    assert [n.name for n in load(text).nodes] == ["m", "n"]


@pytest.mark.parametrize(("args", "expected"), [
    ("-o ProxyJump=root@m1", "root@m1"),
    ("-o ProxyJump root@m1", None),
    ("-o 'ProxyJump=u@h:22'", "u@h:22"),
    ("-J bastion", "bastion"),
    ("-Jbastion", "bastion"),
    ("-J a@b,c@d", "a@b"),
    ("-o StrictHostKeyChecking=no", None),
    ("-o ProxyCommand='ssh -W %h:%p j'", None),
    (None, None),
])
def test_proxy_jump(args: str | None, expected: str | None) -> None:
    assert proxy_jump(args) == expected


BROKEN = [
    ("no-control-plane", "all:\n  hosts:\n    a: {ansible_host: 10.0.0.1}\n",
     "without a kube_control_plane group"),
    ("empty-control-plane", "all:\n  children:\n    kube_control_plane: {hosts: {}}\n"
     "    kube_node: {hosts: {b: }}\n", "kube_control_plane has no hosts"),
    ("bad-port", "kube_control_plane:\n  hosts:\n    a: {ansible_host: 10.0.0.1, ansible_port: http}\n",
     ":3: a.ansible_port: expected a whole number"),
    ("bad-address", "kube_control_plane:\n  hosts:\n    a: {ansible_host: 'not an address'}\n",
     "a.ansible_host: not an IP address or host name"),
    ("group-var-port", "all:\n  vars:\n    ansible_port: 70000\n  children:\n"
     "    kube_control_plane: {hosts: {a: {ansible_host: 10.0.0.1}}}\n",
     ":3: all: ansible_port: must be between 1 and 65535"),
    ("bad-group-key", "all:\n  children:\n    kube_control_plane:\n      host: {a: }\n",
     "unknown key 'host'"),
    ("hosts-list", "kube_control_plane:\n  hosts: [a, b]\n", "hosts must be a mapping"),
    ("nodecfg-typo", "all:\n  vars:\n    nodecfg:\n      registy: {port: 5000}\n  children:\n"
     "    kube_control_plane: {hosts: {a: {ansible_host: 10.0.0.1}}}\n",
     ":4: all.vars.nodecfg.registy: unknown key (did you mean 'registry'?)"),
    ("nodecfg-bad-port", "all:\n  vars:\n    nodecfg:\n      registry: {port: 0}\n  children:\n"
     "    kube_control_plane: {hosts: {a: {ansible_host: 10.0.0.1}}}\n",
     "all.vars.nodecfg.registry.port: must be between 1 and 65535"),
    ("ini-bad-var", "[kube_control_plane]\na ansible_host=10.0.0.1 junk\n", ":2: host a: expected key=value"),
    ("ini-no-plane", "[kube_node]\na ansible_host=10.0.0.1\n", "without a kube_control_plane group"),
    ("ini-bad-port", "[kube_control_plane]\na ansible_host=10.0.0.1 ansible_port=x\n",
     ":2: a.ansible_port: expected a whole number"),
    # issue 12: the same grammar as nodecfg's own format, named by the Ansible variable
    ("hostile-ansible-host", "kube_control_plane:\n  hosts:\n    a: {ansible_host: '10.0.0.1;id'}\n",
     ":3: a.ansible_host: not an IP address or host name: '10.0.0.1;id'"),
    ("hostile-ansible-user", 'kube_control_plane:\n  hosts:\n    a: {ansible_host: 10.0.0.1, '
     'ansible_user: "root\\nid"}\n', ":3: a.ansible_user: not a login name: 'root\\nid'"),
    ("hostile-proxyjump-user", "kube_control_plane:\n  hosts:\n    a: {ansible_host: 10.0.0.1, "
     "ansible_ssh_common_args: \"-J 'u$(id)@h'\"}\n", ":3: a.ansible_ssh_common_args: expected a jump host"),
    ("hostile-host-name", 'kube_control_plane:\n  hosts:\n    "a\\nb": {ansible_host: 10.0.0.1}\n',
     ":3: master.name: names may hold letters, digits"),
    ("hostile-group-name", 'all:\n  children:\n    "g\\nx": [1]\n',
     ":3: all.children.g\\nx: group g\\nx: expected a mapping"),
    ("hostile-nodecfg-username", "all:\n  vars:\n    nodecfg:\n      registry:\n        auth: "
     '{username: "u\\ntouch /tmp/p", password_env: P}\n  children:\n'
     "    kube_control_plane: {hosts: {a: {ansible_host: 10.0.0.1}}}\n",
     ":5: all.vars.nodecfg.registry.auth.username: must not contain control characters"),
    ("hostile-nodecfg-mirror", "all:\n  vars:\n    nodecfg:\n      registry: {mirrors: ['docker.io:x$(id)']}\n"
     "  children:\n    kube_control_plane: {hosts: {a: {ansible_host: 10.0.0.1}}}\n",
     ":4: all.vars.nodecfg.registry.mirrors[0]: expected a registry host"),
    ("ini-hostile-host", "[kube_control_plane]\na ansible_host='10.0.0.1;id'\n",
     ":2: a.ansible_host: not an IP address or host name"),
    ("ini-hostile-group-user", "[kube_control_plane]\na ansible_host=10.0.0.1\n[kube_control_plane:vars]\n"
     "ansible_user=a b\n", ":4: kube_control_plane: ansible_user: not a login name: 'a b'"),
    # INI keeps `nodecfg={...}` on one line: keys inside it are named and placed on that line
    ("ini-nodecfg-mirror", "[all:vars]\nnodecfg={'registry': {'mirrors': ['docker.io:x$(id)']}}\n"
     "[kube_control_plane]\na ansible_host=10.0.0.1\n",
     ":2: all.vars.nodecfg.registry.mirrors[0]: expected a registry host"),
    ("ini-nodecfg-username", "[all:vars]\nnodecfg={'registry': {'auth': {'username': 'u\\nx', "
     "'password_env': 'P'}}}\n[kube_control_plane]\na ansible_host=10.0.0.1\n",
     ":2: all.vars.nodecfg.registry.auth.username: must not contain control characters"),
]


@pytest.mark.parametrize(("text", "words"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_ansible_inventories(text: str, words: str) -> None:
    with pytest.raises(InventoryError) as err:
        load(text, "hosts.yaml")
    assert words in str(err.value)
    assert str(err.value).isprintable()  # one line, whatever the names and values hold


@pytest.mark.parametrize(("text", "words"), [b[1:] for b in BROKEN[:3]], ids=[b[0] for b in BROKEN[:3]])
def test_broken_ansible_inventory_cli_exit_2_one_line(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "nodecfg", "configure-nodes", "-i", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and words in proc.stderr and "Traceback" not in proc.stderr


def test_replicas_from_a_group_are_its_hosts_but_the_master() -> None:
    """`nodecfg: {registry: {replicas: kube_control_plane}}`: every control-plane host but the master,
    with their Ansible connection settings, each a replica (issue 22)."""
    text = KUBESPRAY.replace("registry: {port: 5001, mirrors: [docker.io]}",
                             "registry: {port: 5001, mirrors: [docker.io], replicas: kube_control_plane}")
    inv = load(text)
    assert [(r.name, r.address) for r in inv.registry.replicas] == [("cp2", "10.0.0.12")]
    assert inv.registry.replicas[0].ssh.become is True  # kube_control_plane's vars
    assert inv.replica_endpoints == ("10.0.0.11:5001", "10.0.0.12:5001")
    bad = KUBESPRAY.replace("registry: {port: 5001, mirrors: [docker.io]}",
                            "registry: {port: 5001, replicas: control_plane}")
    with pytest.raises(InventoryError, match=r"registry\.replicas names the group 'control_plane'"):
        load(bad)
