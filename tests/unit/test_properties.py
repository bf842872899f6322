"""Issue 12, as a property: no inventory value becomes shell code on a host.

Hypothesis writes inventories whose values come from a hostile alphabet (quotes, $(), backticks,
newlines, ;, |, &, spaces, NUL, unicode line separators...). Each one either is refused with a
one-line InventoryError, or loads and yields node scripts that `sh -n` accepts and in which every
value is data: free-text values (username, password, data_dir) appear only `shlex.quote`d or
base64-encoded, and values with a strict grammar (addresses, mirrors, images) hold no shell
metacharacter at all.

Free-text values carry a marker with a '_' in it. base64 has no '_', so a marker found in a script
outside the value's `shlex.quote` form is the value itself, raw: the very bug.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nodecfg import configure, smoke
from nodecfg.credentials import Credentials
from nodecfg.errors import InventoryError
from nodecfg.images import parse_ref
from nodecfg.inventory import Inventory, Secret, parse_inventory
from nodecfg.registry import container
from nodecfg.scripts import NodeScript

PATH = "/inv/inventory.yaml"
MARK_USER, MARK_DIR, MARK_PW = "qU_", "qD_", "qP_"
HOSTILE = list("'\"$()`;|&<>*?[]{}~#!\\ \t\n\r\x00\x7f\x85\u2028\u202e\u00e9\u65e5:/@%=,.-_aZ09")
SAFE = re.compile(r"[A-Za-z0-9._:/@\[\]-]*")  # what a strict-grammar value may hold when it loads

# half the time only characters that free-text values may hold, so that many inventories load
hostile = st.one_of(
    st.text(alphabet=st.sampled_from([c for c in HOSTILE if c.isprintable() and c != ":"]), max_size=16),
    st.text(alphabet=st.sampled_from(HOSTILE), max_size=16))


def _near(*good: str) -> st.SearchStrategy[str]:
    """Hostile text, alone or after a value that would pass, so both verdicts get exercised."""
    return st.one_of(hostile, st.builds(lambda g, h: g + h, st.sampled_from(good), hostile))


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly None (the field keeps its good value): one bad field is enough to refuse the file."""
    return st.integers(0, 7).flatmap(lambda n: strategy if n == 0 else st.none())


FIELDS = {
    "username": st.builds(lambda h1, h2: h1 + MARK_USER + h2, hostile, hostile),
    "data_dir": st.builds(lambda h1, h2: "/" + h1 + MARK_DIR + h2, hostile, hostile),
    "password_env": _maybe(_near("PW")),
    "registry_address": _maybe(_near("10.0.0.5", "reg.example", "fd00::1")),
    "master_address": _maybe(_near("127.0.0.10", "master")),
    "mirror": _maybe(_near("docker.io", "my.reg:5000", "[::1]:5000")),
    "image": _maybe(_near("busybox:1.36", "localhost:5000/a/b:1", "[::1]:5000/x:1")),
    "registry_image": _maybe(_near("registry:2", "my.reg/registry:2")),
    "user": _maybe(_near("deploy")),
    "name": _maybe(_near("node1")),
    "gateway": _maybe(_near("root@10.0.0.1", "jump:2222")),
}


def _document(v: dict[str, Any]) -> dict[str, Any]:
    auth: dict[str, Any] = {"username": v["username"] or "puller", "password_env": v["password_env"] or "PW"}
    registry_: dict[str, Any] = {"port": 5000, "auth": auth,
                                 "mirrors": ["docker.io", *([v["mirror"]] if v["mirror"] else [])]}
    for key, field in (("data_dir", "data_dir"), ("address", "registry_address"), ("image", "registry_image")):
        if v[field] is not None:
            registry_[key] = v[field]
    node: dict[str, Any] = {"address": "127.0.0.11"}
    for key, field in (("name", "name"), ("user", "user"), ("gateway", "gateway")):
        if v[field] is not None:
            node[key] = v[field]
    return {"registry": registry_, "images": ["busybox:1.36", *([v["image"]] if v["image"] else [])],
            "master": {"address": v["master_address"] or "127.0.0.10"}, "nodes": [node]}


def _text(doc: dict[str, Any], raw_username: str | None) -> str:
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    if raw_username is not None:  # spliced as the operator might type it: YAML decides what it is
        text = text.replace(f"username: {yaml.safe_dump(doc['registry']['auth']['username'])[:-1]}",
                            f"username: {raw_username}", 1)
        text = text.replace("\n...\n", "\n")
    return text


def _scripts(inv: Inventory, password: str) -> dict[str, str]:
    reg = inv.registry
    assert reg.auth is not None
    creds = Credentials(reg.auth.username, Secret(password))
    spec = container.ContainerSpec("sha256:" + "b" * 64, reg.port, reg.data_dir, True, reg.container)
    htpasswd = f"{reg.auth.username}:$2b$10$notarealhash\n"
    plan = smoke.choose_plan(inv, None, lambda: "busybox:1.36")
    return {
        "registry.facts_script": _node_script(container.facts_script(reg, creds, 30)),
        "registry.apply_script": _node_script(container.apply_script(spec, "recreate", reg, 30, htpasswd=htpasswd,
                                                                     auth=creds)),
        "registry.down_script": _node_script(container.down_script(reg, 30, purge=True)),
        "registry.prune_script": _node_script(container.prune_script(reg, 30, reg.container, "gc", s3=False,
                                                                     auth=creds, uploads=[("a/b", "5e1c-9a")])),
        "registry.record_script": _node_script(container.record_script(30, {
            (r.path, r.tag): "sha256:" + "c" * 64 for r in (parse_ref(i) for i in inv.images)})),
        "smoke.probe_script": _node_script(smoke.probe_script(plan, creds)),
        "configure.facts_script": _node_script(configure.facts_script()),
    }


def _node_script(script: NodeScript) -> str:
    """A node script as checked here: its program (its syntax is checked), then, as comments, its
    arguments and its stdin (values: they must hold no secret in the clear either)."""
    stdin = "".join(f"# {line}\n" for line in script.stdin.decode().splitlines())
    return f"{script.program}\n# {' '.join(shlex.quote(a) for a in script.args)}\n{stdin}"


def _check_loaded(inv: Inventory, password: str) -> None:
    reg = inv.registry
    assert reg.auth is not None
    # strict-grammar values that reach scripts and configs: no shell metacharacter at all
    for value in (reg.address, inv.master.address, *reg.mirrors, *inv.images, reg.image):
        assert SAFE.fullmatch(value), value
    for name, script in _scripts(inv, password).items():
        assert "\0" not in script, name
        syntax = subprocess.run(["/bin/sh", "-n"], input=script.encode(), capture_output=True, check=False)
        assert syntax.returncode == 0, (name, syntax.stderr, script)
        # the username and password never appear at all (base64 only); data_dir only shell-quoted
        if MARK_USER in reg.auth.username:
            assert MARK_USER not in script, (name, reg.auth.username)
        assert MARK_PW not in script, name
        mount = shlex.quote(f"{reg.data_dir}:/var/lib/registry")  # docker run's -v, one argument
        assert MARK_DIR not in script.replace(mount, "").replace(shlex.quote(reg.data_dir), ""), (name, reg.data_dir)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.fixed_dictionaries(FIELDS), raw=st.booleans(),
       password=st.builds(lambda h: MARK_PW + h, hostile).map(lambda p: p.translate({10: 32, 13: 32, 0: 32})))
def test_inventory_values_are_refused_or_stay_data(values: dict[str, Any], raw: bool, password: str) -> None:
    doc = _document(values)
    raw_username = values["username"] if raw and values["username"] is not None else None
    try:
        inv = parse_inventory(_text(doc, raw_username), PATH, check_files=False)
    except InventoryError as exc:
        message = str(exc)
        assert message.startswith(PATH) and message.isprintable(), message  # one line
        event(f"refused: {exc.key}")
        return
    event("loaded")
    _check_loaded(inv, password)


def test_the_base_inventory_of_the_property_loads() -> None:
    """The property would be vacuous if the unmodified inventory never loaded."""
    inv = parse_inventory(_text(_document(dict.fromkeys(FIELDS)), None), PATH, check_files=False)
    _check_loaded(inv, MARK_PW + "pw")
