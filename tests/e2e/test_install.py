"""Issue 11: the e2e suite runs what users install — the wheel, non-editable — never the source tree."""

from __future__ import annotations

import json
import re
import subprocess
import zipfile
from pathlib import Path

from tests.e2e.conftest import cli, nodecfg

SOURCE_TREE = Path(__file__).resolve().parents[2]


def test_the_cli_under_test_is_the_installed_wheel() -> None:
    script = Path(cli()[0])
    python = script.parent / "python"
    probe = ("import importlib.metadata as m, json, nodecfg, nodecfg.render as r; "
             "d = m.distribution('nodecfg'); "
             "print(json.dumps({'file': nodecfg.__file__, 'direct_url': d.read_text('direct_url.json'), "
             "'templates': str(r.templates_root())}))")
    # run from / so that no working directory can put a source tree on sys.path
    out = json.loads(subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                                    check=True, cwd="/").stdout)
    installed = Path(out["file"]).resolve()
    assert "site-packages" in installed.parts, installed
    assert installed.parent != SOURCE_TREE / "nodecfg", f"{installed} is the source tree, not the wheel"
    direct = json.loads(out["direct_url"]) if out["direct_url"] else {}
    assert not direct.get("dir_info", {}).get("editable"), direct
    assert str(SOURCE_TREE / "templates") not in out["templates"], out["templates"]


def test_installed_package_renders_its_templates(tmp_path: Path) -> None:
    """The bug users hit: in the installed wheel every node failed with
    TemplateNotFound('daemon.json.j2'). Rendered here by the installed package itself, outside any
    source tree (the configure e2e tests then render them for real nodes)."""
    script = Path(cli()[0])
    code = ("from nodecfg.render import render; "
            "print(render('daemon.json.j2', insecure=['m:5000'], mirrors=['m:5000'], scheme='http')); "
            "print(render('hosts.toml.j2', upstream='docker.io', hosts=['m:5000'], scheme='http', ca=None, "
            "server='https://registry-1.docker.io', capabilities=['pull'], authorization=None, replicas=False, "
            "dial_timeout=None))")
    proc = subprocess.run([str(script.parent / "python"), "-c", code], capture_output=True, text=True,
                          check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"registry-mirrors": ["http://m:5000"]' in proc.stdout, proc.stdout
    assert 'server = "https://registry-1.docker.io"' in proc.stdout, proc.stdout
    assert nodecfg("--help").returncode == 0


def test_the_wheel_holds_no_lab() -> None:
    """Issue 21: the dev lab (privileged containers, writes under /proc/sys) is a package of its own,
    lab/, never in what users install; `nodecfg lab` is a one-line usage error naming it."""
    wheels = sorted((SOURCE_TREE / "dist").glob("nodecfg-*.whl"))
    assert len(wheels) == 1, f"{wheels}: scripts/test.sh builds exactly one wheel into dist/"
    with zipfile.ZipFile(wheels[0]) as whl:
        names = whl.namelist()
        assert any(n.startswith("nodecfg/") for n in names), names
        assert [n for n in names if re.search(r"(^|/)(nodecfg_)?lab(\.py|/|$)", n)] == []
        for name in (n for n in names if n.endswith(".py")):
            text = whl.read(name).decode()
            assert "cap_add" not in text and "/proc/sys" not in text, name
    proc = nodecfg("lab", "up", "--flavors", "jessie")  # a wheel that still had the lab starts nothing
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert proc.stderr.count("\n") == 1 and "`nodecfg-lab`" in proc.stderr, proc.stderr
