"""Issue 23, part 3: `configure-nodes --undo` takes nodecfg's settings off every node, byte for byte.

The registry has a login (auth on: root's ~/.docker/config.json, hosts.toml headers, auth.json).
node1  bookworm     docker 20.10, containerd 1.6; daemon.json with keys of its own (log-level and a
                    hand-made insecure registry); reached as `deploy`, a sudo user (become: true);
                    a container running from before the undo
node2  containerd2  docker 28, containerd 2.1, podman 5.4; its own `containerd config default`
                    (version 3) with a comment and an edited setting
node3  containerd2  no config.toml at all (nodecfg writes one) and no daemon.json

Every file under the dirs nodecfg may touch is captured (sha256) before configure-nodes; after
--undo every one is byte-identical and nothing else is there (files nodecfg created, its record,
its backups: gone). Then someone edits daemon.json after nodecfg: --undo takes out only nodecfg's
entries and keeps theirs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Lab, by_name, nodecfg, run_json, start_lab

FLAVORS = ("bookworm", "containerd2", "containerd2")
NODES = ("node1", "node2", "node3")
PASSWORD = "und0-S3cret-pw"
ENV = {"NODECFG_E2E_PW": PASSWORD}
# every dir nodecfg may write in (daemon.json, certs.d, config.json, config.toml, hosts.toml, the
# drop-in, auth.json, its record), whole: files it created or left behind show up too
TREES = "/etc/docker /etc/containerd /etc/containers /root/.docker /var/lib/nodecfg"
DAEMON_JSON = '{\n    "log-level": "warn",\n    "insecure-registries": ["hand.example:5000"]\n}\n'
UNITS = "docker containerd"


def files(lab: Lab, name: str) -> dict[str, str]:
    """path -> sha256 of every file in TREES on a node."""
    out = lab.ssh(name, f"find {TREES} -type f -exec sha256sum {{}} + 2>/dev/null; true").stdout
    return {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in out.splitlines() if "  " in line}


def units(lab: Lab, name: str) -> dict[str, tuple[str, str, str]]:
    """unit -> (ActiveState, MainPID, ActiveEnterTimestampMonotonic)."""
    out = lab.ssh(name, f"systemctl show -p Id -p ActiveState -p MainPID -p ActiveEnterTimestampMonotonic {UNITS}").stdout
    got: dict[str, tuple[str, str, str]] = {}
    for block in out.strip().split("\n\n"):
        kv = dict(line.split("=", 1) for line in block.splitlines())
        got[kv["Id"].removesuffix(".service")] = (kv["ActiveState"], kv["MainPID"], kv["ActiveEnterTimestampMonotonic"])
    return got


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lab, str]:
    lab = start_lab(len(NODES), flavors=FLAVORS)
    keys = "install -d -o deploy -m 700 /home/deploy/.ssh && install -o deploy -m 600 /root/.ssh/authorized_keys /home/deploy/.ssh/"
    lab.ssh("node1", "useradd -m -s /bin/bash deploy && echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/deploy && "
                     f"{keys} && cat > /etc/docker/daemon.json && systemctl restart docker", stdin=DAEMON_JSON)
    lab.ssh("node2", "containerd config default > /etc/containerd/config.toml && "
                     "sed -i '1i # site config, owned by the platform team' /etc/containerd/config.toml && "
                     "sed -i \"s|sandbox = '.*'|sandbox = 'registry.k8s.io/pause:3.9'|\" /etc/containerd/config.toml && "
                     "systemctl restart containerd")
    lab.ssh("node3", "rm -f /etc/containerd/config.toml /etc/docker/daemon.json && systemctl restart containerd docker")
    data = lab.inventory_data()
    data["registry"]["auth"] = {"username": "puller", "password_env": "NODECFG_E2E_PW"}
    data["nodes"][0].update({"user": "deploy", "become": True})
    inv = str(lab.write_inventory(tmp_path_factory.mktemp("undo") / "inventory.yaml", data))
    proc = nodecfg("registry-up", "-i", inv, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return lab, inv


def test_undo_puts_every_file_back_byte_for_byte(fleet: tuple[Lab, str]) -> None:
    lab, inv = fleet
    before = {n: files(lab, n) for n in NODES}
    rc, data, err = run_json("configure-nodes", "-i", inv, env=ENV)
    assert rc == 0, (err, data)
    assert all(h["result"]["changed"] for h in data["hosts"]), data
    configured = {n: files(lab, n) for n in NODES}
    for name in NODES:
        assert configured[name] != before[name], name
        # the record: root only, under /var/lib/nodecfg; the original bytes of each edited file beside it
        modes = lab.ssh(name, "find /var/lib/nodecfg -type f -exec stat -c '%a %U' {} +").stdout.split("\n")
        assert modes and all(m == "600 root" for m in modes if m), (name, modes)
    assert any(p.startswith("/var/lib/nodecfg/orig/") for p in configured["node1"]), configured["node1"]
    # a container that runs through the undo: docker is reloaded, never restarted
    assert lab.ssh("node1", "docker pull -q busybox:1.36 >/dev/null && "
                            "docker run -d --name keep busybox:1.36 sleep 3600", check=False).returncode == 0
    cid = lab.ssh("node1", "docker inspect -f '{{.Id}} {{.State.StartedAt}}' keep").stdout.strip()
    states = {n: units(lab, n) for n in NODES}

    proc = nodecfg("configure-nodes", "-i", inv, "--undo", "--check", "--diff", env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RECAP of --undo (check mode: nothing was changed)" in proc.stdout
    assert "-    \"log-level\": \"warn\"" not in proc.stdout and "/etc/containerd/config.toml" in proc.stdout
    assert PASSWORD not in proc.stdout + proc.stderr
    assert {n: files(lab, n) for n in NODES} == configured  # --check changed nothing

    rc, data, err = run_json("configure-nodes", "-i", inv, "--undo", env=ENV)
    assert rc == 0, (err, data)
    hosts = by_name(data)
    for name in NODES:
        assert files(lab, name) == before[name], name  # every file as before; nothing of nodecfg's left
        now = units(lab, name)
        assert all(now[u][0] == "active" for u in ("docker", "containerd")), (name, now)
        assert now["docker"][1] == states[name]["docker"][1], f"{name}: docker was restarted"
        result = hosts[name]["result"]
        assert result["docker"]["action"] == "reloaded", result
    # containerd restarted where config.toml changed (config_path is read at start only)
    for name in NODES:
        assert hosts[name]["result"]["containerd"]["action"] == "restarted", hosts[name]
    assert lab.ssh("node1", "docker inspect -f '{{.Id}} {{.State.StartedAt}}' keep").stdout.strip() == cid
    # nodecfg's registry is in no runtime's effective config any more; the hand-made one stays
    info = json.loads(lab.ssh("node1", "docker info --format '{{json .RegistryConfig}}'").stdout)
    endpoint = f"{lab.hosts['master']}:5000"
    assert endpoint not in info["IndexConfigs"] and "hand.example:5000" in info["IndexConfigs"], info
    assert not [m for m in info["Mirrors"] if endpoint in m], info
    for name in NODES:
        dump = lab.ssh(name, "containerd config dump").stdout
        assert "/etc/containerd/certs.d" not in dump, name
    assert "/etc/containerd/certs.d" not in lab.ssh("node2", "podman info --format json").stdout

    # a second --undo changes nothing and restarts nothing
    states = {n: units(lab, n) for n in NODES}
    rc, again, err = run_json("configure-nodes", "-i", inv, "--undo", env=ENV)
    assert rc == 0, (err, again)
    for name in NODES:
        assert by_name(again)[name]["result"]["changed"] is False, by_name(again)[name]
        assert units(lab, name) == states[name], f"{name}: a second --undo touched a runtime"
        assert files(lab, name) == before[name]


def test_undo_keeps_what_someone_changed_after_nodecfg(fleet: tuple[Lab, str]) -> None:
    lab, inv = fleet
    rc, _, err = run_json("configure-nodes", "-i", inv, "--limit", "node1", env=ENV)
    assert rc == 0, err
    endpoint = f"{lab.hosts['master']}:5000"
    ours = json.loads(lab.ssh("node1", "cat /etc/docker/daemon.json").stdout)
    assert endpoint in ours["insecure-registries"]
    # an operator adds settings of their own, after nodecfg
    theirs = {**ours, "debug": True, "insecure-registries": [*ours["insecure-registries"], "late.example:5000"]}
    lab.ssh("node1", "cat > /etc/docker/daemon.json && systemctl reload docker", stdin=json.dumps(theirs, indent=2))
    rc, data, err = run_json("configure-nodes", "-i", inv, "--limit", "node1", "--undo", env=ENV)
    assert rc == 0, (err, data)
    kept = json.loads(lab.ssh("node1", "cat /etc/docker/daemon.json").stdout)
    assert kept["debug"] is True and kept["log-level"] == "warn", kept
    assert kept["insecure-registries"] == ["hand.example:5000", "late.example:5000"], kept
    assert not [m for m in kept.get("registry-mirrors", []) if endpoint in m], kept
    info = json.loads(lab.ssh("node1", "docker info --format '{{json .RegistryConfig}}'").stdout)
    assert endpoint not in info["IndexConfigs"] and "late.example:5000" in info["IndexConfigs"], info
    # root's docker credentials for the registry went; nodecfg's record too
    config = lab.ssh("node1", "cat /root/.docker/config.json 2>/dev/null || echo '{}'").stdout
    assert endpoint not in config
    assert lab.ssh("node1", "test -e /var/lib/nodecfg", check=False).returncode == 1
    assert PASSWORD not in json.dumps(data) + err
    print(Path(inv).name, "ok")


def test_a_masked_runtime_gets_its_files_back_and_stays_masked(fleet: tuple[Lab, str]) -> None:
    """docker masked after configure-nodes: --undo gives its files back (a daemon.json nodecfg
    created: removed, no step through a reload) and leaves it masked and stopped; containerd, running,
    is restarted for its config.toml."""
    lab, inv = fleet
    before = files(lab, "node3")
    rc, _, err = run_json("configure-nodes", "-i", inv, "--limit", "node3", env=ENV)
    assert rc == 0, err
    lab.ssh("node3", "systemctl mask --now docker.service docker.socket")
    try:
        rc, data, err = run_json("configure-nodes", "-i", inv, "--limit", "node3", "--undo", env=ENV)
        assert rc == 0, (err, data)
        result = by_name(data)["node3"]["result"]
        assert (result["docker"]["status"], result["docker"]["action"]) == ("changed", "none"), result
        assert "/etc/docker/daemon.json" in result["docker"]["files"]
        assert result["containerd"]["action"] == "restarted", result
        state = lab.ssh("node3", "systemctl show -p ActiveState -p UnitFileState docker").stdout.split()
        assert sorted(state) == ["ActiveState=inactive", "UnitFileState=masked"], state
        assert files(lab, "node3") == before
    finally:
        lab.ssh("node3", "systemctl unmask docker.service docker.socket && systemctl start docker", check=False)
