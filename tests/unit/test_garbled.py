"""Issue 21: a garbled answer from a node (a base64 field that does not decode, a truncated tagged
line, a number that is not one, JSON or TOML of the wrong shape) becomes one clear line naming the
host and what was unreadable, never a traceback.

Hypothesis garbles real node outputs (the facts of a configured bookworm node, a healthy smoke
probe, an apply's verify values) line by line and field by field; every reader must either read
them or refuse them with nodecfg's own error (`NodecfgError`), and every diagnosis stays one line.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodecfg import configure, runtimes, smoke
from nodecfg.configure import FactsError, NodePlan, parse_apply, parse_facts, plan_node, refuse_unsafe
from nodecfg.errors import NodecfgError
from nodecfg.images import parse_ref
from nodecfg.inventory import parse_inventory
from nodecfg.runtimes.base import RuntimePlan, SmokePlan, Want

FACTS = (Path(__file__).parent / "fixtures" / "facts" / "configured-bookworm.txt").read_text()
INV = parse_inventory("registry: {address: 172.29.77.10}\nmaster: {address: 172.29.77.10}\n"
                      "nodes: [172.29.77.11]\n", "inv.yaml")
EP = "10.1.1.1:5000"
PLAN = SmokePlan(EP, parse_ref("docker.io/library/busybox:1.36"), parse_ref("docker.io/library/busybox:1.36"),
                 ("docker.io", "registry.k8s.io"), False)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


DUMP = 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n'
INFO = json.dumps({"registries": {"docker.io": {"Prefix": "docker.io", "Mirrors": [{"Location": EP}]}}})
PROBE = "\n".join([
    "unit.docker\tactive\tenabled", "unit.containerd\tactive\tenabled", "unit.crio\tinactive\tnot-found",
    "reach\tcurl\t0\t200", "reach.err\t" + b64("curl: (7) refused"), "manifest\t200",
    "docker.info\te30=", f"docker.pull\t0\t{b64('ok')}", f"docker.mirror\t0\t{b64('ok')}",
    f"timeout.docker.rmi\t5\t{b64('docker rmi x')}",
    f"containerd.dump\t{b64(DUMP)}", "containerd.certs\t/etc/containerd/certs.d",
    f"containerd.pull\t0\t{b64('done')}", f"crictl\t0\t{b64('ok')}", f"cri\tok\t{b64('ok')}",
    "podman\tyes\tpodman version 5.4.2", f"containers.info\t{b64(INFO)}", "podman.had\tunknown",
    f"podman.pull\t0\t{b64('ok')}", f"containers.dropin\t{b64('[[registry]]')}", "end\tprobe",
]) + "\n"

# what garbles a field: not base64, truncated base64, not a number, JSON/TOML of another shape,
# an empty value, a stray tab (one field more)
JUNK = st.one_of(
    st.sampled_from(["", "%%%", "e30", "====", "-1", "abc", "0x10", "\t", "9" * 30, "\x00", "é",
                     b64("[]"), b64("{\"RegistryConfig\": []}"), b64("{\"IndexConfigs\": {\"x\": 1}}"),
                     b64("version = 'x'\n[plugins]\nx = 1"), b64('[plugins."io.containerd.grpc.v1.cri"]\nregistry = 3'),
                     b64('{"registries": {"docker.io": {"Mirrors": "x"}}}'), b64("\xff\xfe"), "not b64!"]),
    st.text(alphabet=st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=12),
)


@st.composite
def garbled(draw: st.DrawFn, text: str, *, keep_last: bool = True) -> str:
    """`text` with a few of its lines truncated, dropped, or with a field replaced by junk; the
    last line (the end marker) kept when `keep_last`, so that the readers get past that check."""
    lines = text.splitlines()
    body, last = (lines[:-1], lines[-1:]) if keep_last else (lines, [])
    for _ in range(draw(st.integers(1, 4))):
        if not body:
            break
        i = draw(st.integers(0, len(body) - 1))
        how = draw(st.sampled_from(["truncate", "field", "drop", "field", "word"]))
        if how == "truncate":
            body[i] = body[i][:draw(st.integers(0, max(0, len(body[i]) - 1)))]
        elif how == "drop":
            del body[i]
        elif how == "word":  # one word of a field: `644 0 0 1l9`, `Docker version x`
            words = body[i].split(" ")
            words[draw(st.integers(0, len(words) - 1))] = draw(JUNK)
            body[i] = " ".join(words)
        else:
            fields = body[i].split("\t")
            j = draw(st.integers(0, len(fields) - 1))
            fields[j] = draw(JUNK)
            body[i] = "\t".join(fields)
    return "\n".join(body + last) + "\n"


def _no_traceback(fn: Any, *args: Any) -> Any:
    """`fn(*args)`, or None when it refused with nodecfg's own error (what the operator reads as
    one line). Any other exception fails the test: it would be a traceback."""
    try:
        return fn(*args)
    except NodecfgError as exc:
        assert "\n" not in str(exc), str(exc)
        return None


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(garbled(FACTS))
def test_garbled_facts_are_read_or_refused_in_one_line(output: str) -> None:
    facts = _no_traceback(parse_facts, output)
    if facts is None:
        return
    plan = _no_traceback(plan_node, facts, INV, None)
    if plan is not None:
        _no_traceback(refuse_unsafe, plan, facts)


@SETTINGS
@given(garbled(FACTS, keep_last=False))
def test_truncated_facts_are_incomplete(output: str) -> None:
    if output.splitlines()[-1:] != [configure.FACTS_END]:
        with pytest.raises(FactsError, match="incomplete"):
            parse_facts(output)


@SETTINGS
@given(garbled(PROBE))
def test_garbled_probe_output_is_diagnosed_in_one_line(output: str) -> None:
    checks = smoke.diagnose(output, PLAN, "node1 (10.1.1.2)")
    assert checks and all("\n" not in ch.detail and ch.status in ("ok", "FAIL", "skip") for ch in checks)


VERIFY = {"docker.info": json.dumps({"RegistryConfig": {"IndexConfigs": {EP: {"Secure": False}},
                                                        "Mirrors": [f"http://{EP}/"]}}),
          "containerd.dump": b64(DUMP), "containerd.cri": "ok", "containers.info": b64(INFO),
          "settled.docker": "active\trunning\tsuccess\t", "settled.containerd": "active\trunning\tsuccess\t"}
# JSON of the shapes the verifies read, with their keys, but any value anywhere
KEYS = st.sampled_from(["RegistryConfig", "IndexConfigs", EP, "Secure", "Mirrors", "registries", "docker.io",
                        "Location", "Prefix"]) | st.text(max_size=4)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.just(EP),
                       lambda kids: st.lists(kids, max_size=3) | st.dictionaries(KEYS, kids, max_size=3),
                       max_leaves=10)


ANY = JSONISH
SHAPED = {  # each verify value in its own shape, any value at any depth
    "docker.info": st.fixed_dictionaries({}, optional={"RegistryConfig": st.fixed_dictionaries({}, optional={
        "IndexConfigs": ANY | st.dictionaries(st.just(EP), ANY | st.fixed_dictionaries({"Secure": ANY})),
        "Mirrors": ANY | st.lists(ANY)})}).map(json.dumps),
    "containers.info": st.fixed_dictionaries({}, optional={"registries": ANY | st.dictionaries(
        st.just("docker.io"), ANY | st.fixed_dictionaries({}, optional={"Mirrors": ANY | st.lists(
            ANY | st.fixed_dictionaries({"Location": ANY}))}))}).map(lambda d: b64(json.dumps(d))),
    "containerd.dump": st.sampled_from([
        "version = 'x'\n", "version = 3\n[plugins]\n'io.containerd.cri.v1.images' = 1\n",
        'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\nregistry = 3\n',
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = 7\n',
        "[plugins.cri]\nregistry = []\n"]).map(b64),
}


@SETTINGS
@given(key=st.sampled_from(sorted(VERIFY)), data=st.data())
def test_garbled_verify_values_are_a_reason_not_a_traceback(key: str, data: st.DataObject) -> None:
    """What a runtime's `<name>_verify` printed, garbled: `check_effect` says why it is not in
    effect (or that it is), as one line."""
    junk = data.draw(st.one_of(JUNK, JSONISH.map(json.dumps), *([SHAPED[key]] if key in SHAPED else [])))
    values = {**VERIFY, key: junk}
    report = parse_apply("".join(f"{k}\t{v}\n" for k, v in values.items() if "\n" not in v))
    want = Want(EP, ("docker.io",))
    for rt in runtimes.registered():
        rp = RuntimePlan(rt.name, "configure", files=(), action="reload" if rt.name == "docker" else "restart")
        if rt.name == "containers":
            rp = RuntimePlan(rt.name, "configure", action="none")
        why = rt.check_effect(rp, report.values, want)
        assert why is None or "\n" not in why


@SETTINGS
@given(data=st.data())
def test_garbled_probe_values_in_their_own_shape(data: st.DataObject) -> None:
    """The probe's JSON and TOML answers (podman info, containerd config dump) of the wrong shape."""
    info = data.draw(SHAPED["containers.info"])
    dump = data.draw(SHAPED["containerd.dump"])
    output = PROBE.replace(f"containers.info\t{b64(INFO)}", f"containers.info\t{info}").replace(
        f"containerd.dump\t{b64(DUMP)}", f"containerd.dump\t{dump}")
    checks = smoke.diagnose(output, PLAN, "node1 (10.1.1.2)")
    assert all("\n" not in ch.detail for ch in checks)


def test_a_garbled_file_fact_fails_the_node_naming_the_file() -> None:
    """`path` lines whose numbers are not numbers: that file is unreadable (never absent), and a
    node that must write it fails, naming it."""
    output = FACTS.replace("/etc/docker/daemon.json\t644 0 0 119", "/etc/docker/daemon.json\t6x4 0 0 1l9")
    facts = parse_facts(output)
    fact = facts.file("/etc/docker/daemon.json")
    assert fact is not None and fact.state is configure.FileState.UNREADABLE
    assert fact.reason == "facts about it are garbled"
    wanting = parse_inventory("registry: {address: 10.9.9.9}\nmaster: {address: 10.9.9.9}\n"
                              "nodes: [172.29.77.11]\n", "inv.yaml")
    _, unreadable = refuse_unsafe(plan_node(facts, wanting, None), facts)
    assert unreadable == {"/etc/docker/daemon.json": "facts about it are garbled"}


def test_a_garbled_cmdline_is_not_a_traceback() -> None:
    garbled = re.sub(r"(?m)^cmdline\.docker\t.*$", "cmdline.docker\tL3Vzc", FACTS)  # cut short: not base64
    assert garbled != FACTS
    facts = parse_facts(garbled)
    assert facts.runtimes["docker"].service.installed
    assert isinstance(plan_node(facts, INV, None), NodePlan)
