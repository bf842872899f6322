"""Day 2 on the registry (issue 23): registry-prune's plan from fixture tables, its API side and the
garbage collector run for real against Debian's docker-registry (distribution 2.8) on loopback, the
record of what nodecfg pushed (master_record.sh under dash), and a push that cannot fit: refused
before it sends, or, when the disk fills meanwhile, one line and no partial upload left."""

from __future__ import annotations

import http.client
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from nodecfg.errors import HostError
from nodecfg.push import pipeline
from nodecfg.push.api import NoSpaceError, RegistryAPI, Target, no_space, refused
from nodecfg.push.bundle_source import BundleSource
from nodecfg.push.engine_source import layer_sizes
from nodecfg.registry import container
from nodecfg.registry.prune_plan import Manifest, View, parse_manifest, plan_prune, read_view
from nodecfg.registry.results import RegistryCheck
from tests.e2e.standin import REGISTRY_BIN, Registry, layer, push_image, push_index
from tests.unit.test_push_bundle import Fake, _bundle, serve_fake

A, B, C, D, X = ("sha256:" + ch * 64 for ch in "abcdx")
L1, L2, L3, CFG = ("sha256:" + ch * 64 for ch in "1239")


def _view() -> View:
    """lib/a:1 and lib/b:1 share layer L1; lib/b:old is b's manifest too; idx:1 is an index of C and D."""
    return View(
        tags={("lib/a", "1"): A, ("lib/b", "1"): B, ("lib/b", "old"): B, ("mine/hand", "1"): X, ("idx", "1"): C},
        manifests={("lib/a", A): Manifest(A, 500, ((CFG, 10), (L1, 1000))),
                   ("lib/b", B): Manifest(B, 400, ((CFG, 10), (L1, 1000), (L2, 2000))),
                   ("mine/hand", X): Manifest(X, 300, ((L3, 3000),)),
                   ("idx", C): Manifest(C, 200, children=(D,)),
                   ("idx", D): Manifest(D, 100, ((L3, 3000), (L2, 2000)))})


PLANS = [
    # (what the inventory lists, the record, all_unlisted) -> removed tags, manifests deleted, bytes, kept
    pytest.param({("lib/a", "1")}, {("lib/a", "1"): A, ("lib/b", "1"): B, ("lib/b", "old"): B}, False,
                 ["lib/b:1", "lib/b:old"], [("lib/b", B)], 400, ["idx:1", "mine/hand:1"],
                 id="dropped-image-goes-hand-pushed-stays-shared-layer-kept"),
    pytest.param({("lib/a", "1"), ("lib/b", "1")}, {("lib/b", "old"): B}, False,
                 [], [], 0, ["idx:1", "lib/b:old", "mine/hand:1"],
                 id="a-tag-whose-manifest-a-kept-tag-uses-stays"),
    pytest.param(set(), {("idx", "1"): C}, False,
                 ["idx:1"], [("idx", C), ("idx", D)], 300, ["lib/a:1", "lib/b:1", "lib/b:old", "mine/hand:1"],
                 id="an-index-goes-with-its-children-blobs-others-use-stay"),
    pytest.param({("lib/a", "1")}, {("lib/b", "1"): A}, False,
                 [], [], 0, ["idx:1", "lib/b:1", "lib/b:old", "mine/hand:1"],
                 id="re-pushed-by-hand-over-nodecfgs-tag-stays"),
    pytest.param({("lib/a", "1"), ("lib/b", "1"), ("lib/b", "old"), ("idx", "1")}, {}, True,
                 ["mine/hand:1"], [("mine/hand", X)], 300, [],
                 id="all-unlisted-removes-a-hand-pushed-tag"),
]


@pytest.mark.parametrize(("listed", "record", "every", "removed", "manifests", "freed", "kept"), PLANS)
def test_plan_prune(listed: set[tuple[str, str]], record: dict[tuple[str, str], str], every: bool,
                    removed: list[str], manifests: list[tuple[str, str]], freed: int, kept: list[str]) -> None:
    plan = plan_prune(_view(), listed, record, all_unlisted=every)
    assert [t.target for t in plan.removed] == removed
    assert sorted(plan.manifests) == sorted(manifests)
    assert plan.bytes == freed
    assert [t.target for t in plan.kept] == kept
    assert all(t.why for t in plan.kept)


def test_plan_prune_says_why_and_forgets_what_is_gone() -> None:
    record = {("lib/b", "1"): B, ("lib/b", "old"): B, ("gone", "1"): A, ("lib/a", "1"): X}
    plan = plan_prune(_view(), {("lib/a", "1"), ("idx", "1")}, record)
    why = {t.target: t.why for t in plan.kept}
    assert why["mine/hand:1"].startswith("not pushed by nodecfg")
    assert plan.repositories == 1
    # removed tags, a tag the registry lost, and one changed since (never nodecfg's to remove again)
    assert plan.forget == (("gone", "1"), ("lib/a", "1"), ("lib/b", "1"), ("lib/b", "old"))
    shared = plan_prune(_view(), {("lib/a", "1"), ("lib/b", "1")}, {("lib/b", "old"): B})
    assert "also used by lib/b:1" in {t.target: t.why for t in shared.kept}["lib/b:old"]


def test_parse_manifest_reads_images_and_indexes() -> None:
    image = parse_manifest(A, b'{"config": {"digest": "%s", "size": 7}, "layers": [{"digest": "%s", "size": 9}]}'
                           % (CFG.encode(), L1.encode()))
    assert image.blobs == ((CFG, 7), (L1, 9)) and not image.children
    index = parse_manifest(C, b'{"manifests": [{"digest": "%s"}]}' % D.encode())
    assert index.children == (D,) and index.size > 0
    assert parse_manifest(X, b"not json") == Manifest(X, 8)


# ---------------------------------------------------------------------------------------------
# against distribution itself: read, delete by digest, collect


def _api(reg: Registry) -> RegistryAPI:
    return RegistryAPI(lambda: http.client.HTTPConnection("127.0.0.1", reg.port, timeout=10), None)


def _blob_files(root: Path) -> set[str]:
    blobs = root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    return {p.parent.name for p in blobs.glob("*/*/data")}


def test_prune_against_distribution(tmp_path: Path) -> None:
    """Three images and a hand-pushed one; B dropped: its manifest deleted over the API, the
    collector frees exactly its own blobs; A (sharing a layer with B), C (an index) and the
    hand-pushed image stay whole."""
    reg = Registry(tmp_path)
    try:
        shared = layer({"shared": b"s" * 5000})
        a = push_image(reg, "lib/a", ("linux", "amd64"), [shared, layer({"a": b"a" * 3000})], oci=False, tag="1")
        b = push_image(reg, "lib/b", ("linux", "amd64"), [shared, layer({"b": bytes(range(256)) * 400})],
                       oci=False, tag="1")
        c1 = push_image(reg, "lib/c", ("linux", "amd64"), [layer({"c": b"c1"})], oci=True)
        c2 = push_image(reg, "lib/c", ("linux", "arm64"), [layer({"c": b"c2"})], oci=True)
        push_index(reg, "lib/c", "1", [c1.descriptor(), c2.descriptor()], oci=True)
        hand = push_image(reg, "mine/tool", ("linux", "amd64"), [layer({"t": b"t"})], oci=False, tag="v1")
        api = _api(reg)
        view = read_view(api)
        assert view.tags[("lib/b", "1")] == b.digest
        assert view.manifests[("lib/c", c1.digest)].blobs  # the index's children read too
        record = {("lib/a", "1"): a.digest, ("lib/b", "1"): b.digest, ("lib/c", "1"): view.tags[("lib/c", "1")]}
        plan = plan_prune(view, {("lib/a", "1"), ("lib/c", "1")}, record)
        assert [t.target for t in plan.removed] == ["lib/b:1"]
        assert [t.target for t in plan.kept] == ["mine/tool:v1"]
        only_b = set(b.blobs) - set(a.blobs)
        assert plan.bytes == sum(b.blobs[d] for d in only_b) + len(b.manifest)
        before = _blob_files(tmp_path)
        for repo, digest in plan.manifests:
            assert api.delete_manifest(repo, digest)
        assert not api.delete_manifest("lib/b", b.digest)  # gone already: said, not an error
        api.close()
        gc = subprocess.run([REGISTRY_BIN, "garbage-collect", str(tmp_path / "config.yml")], capture_output=True,
                            text=True, check=False)
        assert gc.returncode == 0, gc.stderr
        freed = before - _blob_files(tmp_path)
        assert freed == {d.split(":")[1] for d in (*only_b, b.digest)}
        for repo, ref in (("lib/a", "1"), ("lib/c", "1"), ("mine/tool", "v1")):
            assert reg.manifest_digest(repo, ref)
        assert hand.digest == reg.manifest_digest("mine/tool", "v1")
        after = read_view(_api(reg))
        assert ("lib/b", "1") not in after.tags
    finally:
        reg.stop()


def test_a_manifest_by_tag_and_its_absence(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    try:
        img = push_image(reg, "lib/a", ("linux", "amd64"), [layer({"a": b"a"})], oci=False, tag="1")
        api = _api(reg)
        assert api.manifest("lib/a", "1") == (img.digest, img.manifest)
        assert api.manifest("lib/a", "2") is None
        api.close()
    finally:
        reg.stop()


# ---------------------------------------------------------------------------------------------
# the record (master_record.sh under dash)


def _record(tmp_path: Path, entries: dict[tuple[str, str], str]) -> str:
    script = container.record_script(30, entries, state_dir=str(tmp_path / "state"))
    proc = subprocess.run(["/bin/dash", *script.argv()[1:]], input=script.stdin, capture_output=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()


def test_the_record_adds_replaces_and_forgets(tmp_path: Path) -> None:
    assert "recorded\t2" in _record(tmp_path, {("lib/a", "1"): A, ("lib/b", "1"): B})
    _record(tmp_path, {("lib/a", "1"): C})  # pushed again: its line replaced
    _record(tmp_path, {("lib/b", "1"): "", ("never", "x"): ""})  # forgotten
    file = tmp_path / "state" / "pushed"
    assert file.read_text() == f"lib/a\t1\t{C}\n"
    assert file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    facts = container.parse_facts("".join(f"pushed\t{line}\n" for line in file.read_text().splitlines()), "m")
    assert facts.pushed == {("lib/a", "1"): C}


def test_facts_carry_the_space_and_the_record() -> None:
    facts = container.parse_facts(f"space\t/mnt/registry\t61865984\nrepos\t/mnt/registry\t0\n"
                                  f"pushed\tlib/a\t1\t{A}\npushed\tbad\tline\tnot-a-digest\n", "m")
    assert facts.space == {"/mnt/registry": 61865984}
    assert facts.pushed == {("lib/a", "1"): A}


# ---------------------------------------------------------------------------------------------
# a push that cannot fit


def _fake_target(fake: Fake) -> Target:
    return Target("fake", lambda: http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10))


def test_a_push_that_cannot_fit_is_refused_before_it_sends(tmp_path: Path) -> None:
    made = _bundle(tmp_path)
    asked: list[int] = []

    def fits(needed: int) -> None:
        asked.append(needed)
        raise HostError(f"/mnt/registry on master has 1.0 kB free; this push needs {needed}")

    for fake in serve_fake():
        source = BundleSource(made.path, [], "registry:2")
        try:
            with pytest.raises(HostError, match=r"has 1\.0 kB free; this push needs"):
                pipeline.push(source, _fake_target(fake), progress=lambda _: None, fits=fits)
            wanted = {d for img in source.images() for d in img.blobs}
            sizes = source.sizes(source.images())
        finally:
            source.close()
        assert asked == [sum(sizes[d] for d in wanted) + len(wanted) * pipeline.BLOB_OVERHEAD]
        assert {m for m, _ in fake.log} <= {"GET", "HEAD"}  # nothing sent, nothing opened
        assert not fake.uploads and not fake.blobs.get("org/app")


def test_a_full_disk_is_one_line_and_leaves_no_partial_upload(tmp_path: Path) -> None:
    made = _bundle(tmp_path)
    for fake in serve_fake():
        source = BundleSource(made.path, [], "registry:2")
        fake.space = sum(source.sizes(source.images()).values()) - 1  # some blobs fit, not all
        try:
            with pytest.raises(HostError) as err:
                pipeline.push(source, _fake_target(fake), progress=lambda _: None, width=2,
                              space="/mnt/registry on master")
        finally:
            source.close()
        message = str(err.value)
        assert isinstance(err.value, pipeline.NoSpaceLeft) and err.value.cancelled and not err.value.stuck
        assert message.startswith("no space left on /mnt/registry on master")
        assert "Err" not in message and "{" not in message and "\n" not in message
        assert not fake.uploads  # every upload the run opened and did not finish was cancelled
        assert any(m == "DELETE" for m, _ in fake.log)


def test_upload_locations_name_their_repository_and_id() -> None:
    assert pipeline.upload_of("/v2/library/busybox/blobs/uploads/5e1c-9a?_state=x") == ("library/busybox", "5e1c-9a")
    assert pipeline.upload_of("/v2/x/manifests/1") is None


def test_enospc_is_recognised_in_the_registrys_answer() -> None:
    body = b'{"errors":[{"code":"UNKNOWN","detail":{"DriverName":"filesystem","Enclosed":{"Err":28}}}]}'
    assert no_space(body) and no_space(b"write /var/lib/registry/x: no space left on device")
    assert not no_space(b'{"Err":2}')
    assert isinstance(refused("PUT", "/v2/x/blobs/uploads/u?digest=d", 500, body), NoSpaceError)
    assert not isinstance(refused("PUT", "/v2/x", 400, body), NoSpaceError)


def test_check_shows_free_and_needed_and_fails_when_it_would_not_fit() -> None:
    def check(free: int, needed: int) -> RegistryCheck:
        return RegistryCheck("m", "m:5000", "keep", (), "", "", "", "/mnt/registry", 0, False, (),
                             free=free, needed=needed)

    assert check(60_000_000, 214_000_000).exit_code == 1
    assert check(300_000_000, 214_000_000).exit_code == 0
    assert check(-1, 214_000_000).exit_code == 0  # S3 or a volume: not checked


@pytest.mark.parametrize(("history", "layers", "sizes"), [
    ([{"Size": 0}, {"Size": 300}, {"Size": 0}, {"Size": 5000}], 2, [5000, 300]),  # newest first
    ([{"Size": 300}], 2, None),  # not one to one: the caller shares the image's size
])
def test_layer_sizes_from_the_engines_history(history: list[dict[str, int]], layers: int,
                                              sizes: list[int] | None) -> None:
    assert layer_sizes(history, layers) == sizes


def test_the_report_says_what_went_what_stayed_and_the_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    from nodecfg import report
    from nodecfg.registry.results import PrunedTag, PruneHost, PruneResult

    host = PruneHost("master", "/mnt/registry", (PrunedTag("lib/b:1", B),),
                     (PrunedTag("mine/tool:1", X, "not pushed by nodecfg (--all-unlisted removes it too)"),),
                     repositories=1, manifests=1, bytes_estimated=6_300_000, used_before=40_100_000,
                     used_after=33_800_000, gc="12 blobs marked, 3 blobs and 0 manifests eligible for deletion",
                     stopped=2)
    report.registry_prune(PruneResult(False, (host,)), as_json=False)
    out = capsys.readouterr().out
    assert "registry on master (/mnt/registry): removed 1 tag(s) in 1 repository (1 manifest(s)); " \
           "freed 6.3 MB on disk (40.1 MB -> 33.8 MB); garbage collected, the registry stopped 2s" in out
    assert "removed lib/b:1 (sha256:bbbbbbbbbbbb)" in out and "kept mine/tool:1: not pushed by nodecfg" in out
    report.registry_prune(PruneResult(True, (replace(host, used_before=-1, used_after=-1),)), as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["check"] is True and data["hosts"][0]["bytes_freed"] == -1
    assert data["hosts"][0]["removed"][0]["target"] == "lib/b:1"


def test_what_stays_is_the_inventorys_images_or_the_bundles(tmp_path: Path) -> None:
    from nodecfg.inventory import parse_inventory
    from nodecfg.registry.prune_plan import listed_targets

    inv = parse_inventory("images: [busybox:1.36, registry.k8s.io/pause:3.9]\nmaster: {address: 10.0.0.1}\n"
                          "nodes: [{address: 10.0.0.2}]\n", str(tmp_path / "inv.yaml"), check_files=False)
    assert listed_targets(inv, None) == {("library/busybox", "1.36"), ("pause", "3.9")}
    made = _bundle(tmp_path)  # quay.io/org/app:1 and registry.k8s.io/multi:2 (and the registry's own image)
    assert listed_targets(inv, made.path) == {("org/app", "1"), ("multi", "2")}


def test_an_older_revision_nodecfg_pushed_goes_once_no_tag_uses_it() -> None:
    """lib/a:1 was pushed as Y, then again as A: Y stays in the registry untagged (the view has it,
    read by digest), the record keeps it as `@Y`."""
    y, only_y = "sha256:" + "e" * 64, "sha256:" + "4" * 64
    view = _view()
    view = View(dict(view.tags), {**view.manifests, ("lib/a", y): Manifest(y, 300, ((CFG, 10), (L3, 3000),
                                                                                    (only_y, 7)))})
    record = {("lib/a", "1"): A, ("lib/a", "@" + y): y, ("lib/b", "@" + B): B, ("old", "@" + C): C}
    plan = plan_prune(view, set(view.tags), record)
    assert [(t.target, t.why) for t in plan.removed] == [
        (f"lib/a@{y}", "an older revision of a tag nodecfg pushed again")]
    assert plan.manifests == (("lib/a", y),)
    assert plan.bytes == 300 + 7  # CFG and L3 are used by kept images
    assert plan.repositories == 1
    # Y removed, C gone from the registry: forgotten; B is still tagged (lib/b:1): kept for later
    assert plan.forget == (("lib/a", "@" + y), ("old", "@" + C))


def test_a_tag_pushed_again_keeps_its_old_revision_in_the_record() -> None:
    from nodecfg.registry.storage import record_entries

    assert record_entries({("lib/a", "1"): A, ("lib/b", "1"): B}, {("lib/a", "1"): X, ("lib/b", "1"): B}) == {
        ("lib/a", "1"): A, ("lib/a", "@" + X): X, ("lib/b", "1"): B}
    assert record_entries({("new", "1"): A}, {}) == {("new", "1"): A}  # never a revision nodecfg did not push
