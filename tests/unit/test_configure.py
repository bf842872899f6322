"""configure-nodes' pure parts: facts parsing, the node plan, the apply and rollback scripts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from nodecfg.configure import (
    NodePlan,
    apply_script,
    parse_facts,
    plan_node,
    rollback_script,
    unified_diff,
)
from nodecfg.inventory import parse_inventory
from nodecfg.runtimes.common import FileChange, RuntimePlan

FACTS = Path(__file__).parent / "fixtures" / "facts"
INV = parse_inventory("master: {address: 172.29.77.10}\nnodes: [172.29.77.11]\n", "inv.yaml")


def test_parse_facts_from_a_real_node() -> None:
    facts = parse_facts((FACTS / "configured-bookworm.txt").read_text())
    d, c = facts.docker, facts.containerd
    assert d.service.installed and d.service.active and not d.service.masked
    assert d.service.version == "20.10.24+dfsg1" and d.service.major == 20
    assert d.cmdline[0] == "/usr/sbin/dockerd" and "--containerd=/run/containerd/containerd.sock" in d.cmdline
    assert c.service.version == "1.6.20~ds1" and c.service.major == 1
    assert c.config_toml and "config_path" in c.config_toml
    assert "/etc/containerd/certs.d/docker.io/hosts.toml" in c.hosts


def test_configured_node_plans_nothing() -> None:
    facts = parse_facts((FACTS / "configured-bookworm.txt").read_text())
    plan = plan_node(facts, INV, None)
    assert plan.files == ()
    assert plan.docker.action == plan.containerd.action == "none"


def test_fresh_node_plans_files_and_actions() -> None:
    text = (FACTS / "configured-bookworm.txt").read_text()
    fresh = "\n".join(ln for ln in text.splitlines()
                      if not ln.startswith("file\t/etc/docker/") and "/certs.d/" not in ln)
    plan = plan_node(parse_facts(fresh), INV, None)
    paths = [f.path for f in plan.files]
    assert "/etc/docker/daemon.json" in paths
    assert "/etc/containerd/certs.d/registry.k8s.io/hosts.toml" in paths
    assert "/etc/containerd/config.toml" not in paths  # config_path was already there
    assert plan.docker.action == "reload" and plan.containerd.action == "none"


def test_masked_runtime_is_skipped() -> None:
    text = (FACTS / "configured-bookworm.txt").read_text().replace(
        "unit.docker\tUnitFileState=enabled", "unit.docker\tUnitFileState=masked")
    plan = plan_node(parse_facts(text), INV, None)
    assert plan.docker.status == "masked" and plan.docker.files == ()


def _plan() -> NodePlan:
    files = (FileChange("/etc/docker/daemon.json", '{"a": 1}\n', 0o644, None, "x", validate="json"),
             FileChange("/etc/containerd/config.toml", "version = 2\n", 0o644, "old", "y",
                        validate="containerd"))
    return NodePlan(docker=RuntimePlan("docker", "configure", files=files[:1], action="reload"),
                    containerd=RuntimePlan("containerd", "configure", files=files[1:], action="restart"))


def test_apply_script_validates_before_renaming_and_is_valid_shell() -> None:
    script = apply_script(_plan(), "10.1.1.1:5000", True)
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0
    # containerd first (docker talks to it): its file is $t0, daemon.json $t1
    assert script.index("containerd -c \"$t0\" config dump") < script.index("mv -f \"$t0\"")
    assert script.index("mv -f") < script.index("systemctl restart containerd.service")
    assert script.index("systemctl restart containerd.service") < script.index("systemctl reload docker.service")


def test_rollback_restores_backups_and_removes_new_files() -> None:
    plan = _plan()
    script = rollback_script(plan.containerd, {"/etc/containerd/config.toml": "/etc/containerd/config.toml.nodecfg-1.bak"})
    assert "mv -f /etc/containerd/config.toml.nodecfg-1.bak /etc/containerd/config.toml" in script
    assert "systemctl restart containerd.service" in script
    script = rollback_script(plan.docker, {"/etc/docker/daemon.json": None})
    assert "rm -f /etc/docker/daemon.json" in script


def test_diff_hides_secrets() -> None:
    secret = FileChange("/root/.docker/config.json", "TOKEN", 0o600, None, "creds", secret=True)
    assert "TOKEN" not in unified_diff(secret)
    plain = FileChange("/etc/docker/daemon.json", '{"b": 2}\n', 0o644, '{"a": 1}\n', "x")
    assert '-{"a": 1}' in unified_diff(plain) and '+{"b": 2}' in unified_diff(plain)


def test_parse_facts_reads_the_files_archive() -> None:
    import base64 as b64
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, text in (("/etc/docker/daemon.json", '{"debug": true}\n'),
                           ("/etc/containerd/certs.d/docker.io/hosts.toml", 'server = "https://x"\n')):
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    facts = parse_facts("unit.docker\tLoadState=loaded\nbin.docker\t/usr/sbin/dockerd\n"
                        f"files\t{b64.b64encode(buf.getvalue()).decode()}\n")
    assert facts.docker.daemon_json == '{"debug": true}\n'
    assert facts.containerd.hosts["/etc/containerd/certs.d/docker.io/hosts.toml"] == 'server = "https://x"\n'
