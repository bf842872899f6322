"""smoke-test: prove every node can pull from the registry, and say exactly why one can't.

Per node, one command runs every probe (registry reachable from the node, docker pulls, containerd
pulls, config_path in effect) and prints raw results; `diagnose()` turns them into checks with
operator-facing reasons. A pull through a mirror is only attempted when the node's mirror config
names the registry: without it the node would go to the upstream, which an offline node can't reach.
Images a node didn't have before are removed afterwards, so a re-run really pulls again.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodecfg import ssh
from nodecfg.errors import HostError, UsageError
from nodecfg.fleet import FleetResult, HostResult, run_fleet
from nodecfg.images import DOCKER_HUB, ImageRef, parse_ref
from nodecfg.inventory import Host, Inventory, Secret
from nodecfg.registry import MANIFEST_TYPES, curl_auth_prelude
from nodecfg.runtimes import containerd as ctd
from nodecfg.runtimes.common import unit_states
from nodecfg.runtimes.containerd import dumped_config_path
from nodecfg.runtimes.docker import INFO_FN

INDEX_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json",
               "application/vnd.oci.image.index.v1+json")
CRI_TIMEOUT = 60.0  # one CRI pull, connect to answer
CHECKS = ("registry", "docker", "docker mirror", "containerd", "config_path", "cri", "crictl")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | FAIL | skip
    detail: str = ""


@dataclass(frozen=True)
class SmokePlan:
    """What to pull where: decided once for the whole fleet."""

    endpoint: str
    image: ImageRef  # pulled as <endpoint>/<target> by docker, and by upstream name by containerd
    hub_image: ImageRef | None  # a docker.io image for docker's registry-mirrors check
    mirrors: tuple[str, ...]
    has_auth: bool

    @property
    def ctr_ref(self) -> str:
        """What containerd pulls: the upstream name when it is mirrored (as the kubelet asks for
        it), else the registry's own name."""
        if self.image.registry in self.mirrors:
            return self.image.upstream
        return f"{self.endpoint}/{self.image.target}"


@dataclass(frozen=True)
class NodeSmoke:
    checks: tuple[Check, ...]
    error: str = ""


def choose_plan(inv: Inventory, image: str | None, catalog_first: Callable[[], str | None]) -> SmokePlan:
    reg = inv.registry
    refs = [parse_ref(i) for i in inv.images]
    if image:
        chosen = parse_ref(image)
    elif refs:
        chosen = refs[0]
    else:
        first = catalog_first()
        if first is None:
            raise UsageError("smoke-test: no --image, no images in the inventory, and the "
                             "registry's catalog is empty; run registry-up first")
        chosen = parse_ref(first)
    hub = chosen if chosen.registry == DOCKER_HUB else next(
        (r for r in refs if r.registry == DOCKER_HUB), None)
    if "docker.io" not in reg.mirrors:
        hub = None
    return SmokePlan(reg.endpoint, chosen, hub, reg.mirrors, reg.auth is not None)


def _pull_docker(tag: str, ref: str) -> str:
    q = shlex.quote(ref)
    return (f"had=$(dhas {q} && echo yes); "
            f"out=$(docker pull -q {q} 2>&1); rc=$?; "
            f"printf '{tag}\\t%s\\t%s\\n' \"$rc\" \"$(printf '%s' \"$out\" | tail -n 1 | base64 -w0)\"; "
            # removed together at the end: the mirror pull then reuses the layers and only
            # has to resolve the manifest through the mirror, which is what it proves
            f"[ -z \"$had\" ] && [ $rc = 0 ] && drop=\"$drop {q}\"")


def _pull_ctr(tag: str, ref: str) -> str:
    q = shlex.quote(ref)
    # the CRI plugin adds a `sha256:<config id>` ref beside every image in k8s.io. Ours goes too, or
    # each run would leave one behind; it is the new sha256: ref whose target digest is our image's.
    # Refs that others (the kubelet) made meanwhile point elsewhere and stay.
    return (f"before=$(ctr -n k8s.io images ls -q 2>/dev/null); "
            f"had=$(printf '%s\\n' \"$before\" | grep -qxF {q} && echo yes); "
            f"out=$(ctr -n k8s.io images pull --hosts-dir \"$certs\" {q} 2>&1); rc=$?; "
            f"printf '{tag}\\t%s\\t%s\\n' \"$rc\" \"$(printf '%s' \"$out\" | tail -n 1 | base64 -w0)\"; "
            f"if command -v crictl >/dev/null; then out=$(crictl pull {q} 2>&1); "
            f"printf 'crictl\\t%s\\t%s\\n' \"$?\" \"$(printf '%s' \"$out\" | tail -n 1 | base64 -w0)\"; fi; "
            f"if [ -z \"$had\" ] && [ $rc = 0 ]; then "
            f"listed=$(ctr -n k8s.io images ls 2>/dev/null); "
            f"digest=$(printf '%s\\n' \"$listed\" | awk -v r={q} '$1 == r {{print $3; exit}}'); "
            f"new=$(printf '%s\\n' \"$listed\" | "
            f"awk -v d=\"$digest\" 'd != \"\" && $1 ~ /^sha256:/ && $3 == d {{print $1}}' | "
            f"grep -vxF -e \"${{before:-@none@}}\"); "
            f"ctr -n k8s.io images rm {q} $new >/dev/null 2>&1; fi")


# python3's HTTP GET, for nodes without curl and wget: prints the status code, 000 if none
_PY_GET = ("import sys, urllib.error, urllib.request\n"
           "try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)\n"
           "except urllib.error.HTTPError as exc:\n    print(exc.code)\n"
           "except Exception:\n    print('000'); sys.exit(7)\n")
# bash (named: dash has no /dev/tcp) speaking HTTP/1.0 itself: prints the status code
_BASH_GET = ('exec 3<>"/dev/tcp/$1/$2" || exit 7; '
             'printf "GET /v2/ HTTP/1.0\\r\\nHost: %s:%s\\r\\n\\r\\n" "$1" "$2" >&3; '
             'read -r _ code _ <&3; printf %s "$code"')


def reach_probe(url: str, host: str, port: str, accept: str, manifest_url: str) -> str:
    """Shell: does the registry answer HTTP from the node? With curl (credentials and the manifest
    too), else wget, else python3, else bash's /dev/tcp; a node with none of them says `none`
    (reported "not checked", never a failure). Prints `reach <tool> <rc> <http code>`."""
    q = shlex.quote
    url = q(url)  # a value from the inventory: quoted, never spliced ([v6] brackets would glob)
    return (
        "if command -v curl >/dev/null; then "
        f"code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 {url}); rc=$?; "
        "printf 'reach\\tcurl\\t%s\\t%s\\n' \"$rc\" \"$code\"; "
        f"if [ \"$code\" = 401 ] && [ -s \"$ncfg\" ]; then code=$(curl -s -o /dev/null -w '%{{http_code}}' "
        f"--max-time 5 -K \"$ncfg\" {url}); printf 'reach.auth\\t%s\\n' \"$code\"; fi; "
        f"code=$(curl -s -o /dev/null -I -w '%{{http_code}}' --max-time 5 -K \"$ncfg\" {accept} "
        f"{q(manifest_url)}); printf 'manifest\\t%s\\n' \"$code\"; "
        f"elif command -v wget >/dev/null; then code=$(wget -q -S -O /dev/null -T 5 {url} 2>&1 | "
        "awk '/HTTP\\//{c=$2} END{print c}'); printf 'reach\\twget\\t0\\t%s\\n' \"${code:-000}\"; "
        f"elif command -v python3 >/dev/null; then code=$(timeout 8 python3 -c {q(_PY_GET)} {url}); rc=$?; "
        "printf 'reach\\tpython3\\t%s\\t%s\\n' \"$rc\" \"${code:-000}\"; "
        f"elif command -v bash >/dev/null; then code=$(timeout 5 bash -c {q(_BASH_GET)} _ {q(host)} {q(port)} "
        "2>/dev/null); rc=$?; printf 'reach\\tbash\\t%s\\t%s\\n' \"$rc\" \"${code:-000}\"; "
        "else printf 'reach\\tnone\\t\\t\\n'; fi"
    )


def ctr_script(plan: SmokePlan, certs: str) -> str:
    """Second step on a node whose containerd is active: ctr pulls by upstream name through the
    certs dir that the running containerd's config_path names (read from its config dump)."""
    ep = plan.endpoint
    upstream = plan.image.registry if plan.image.registry in plan.mirrors else ep
    hosts_toml = f"{certs}/{upstream}/hosts.toml"
    return "\n".join([
        f"certs={shlex.quote(certs)}",
        "printf 'containerd.certs\\t%s\\n' \"$certs\"",
        f"if grep -qF {shlex.quote(f'http://{ep}')} {shlex.quote(hosts_toml)} 2>/dev/null; then",
        "  " + _pull_ctr("containerd.pull", plan.ctr_ref),
        "else printf 'containerd.pull\\tnomirror\\t\\n'; fi",
        "true",
    ]) + "\n"


def probe_script(plan: SmokePlan, credentials: tuple[str, Secret] | None) -> str:
    ep = plan.endpoint
    host, port = ep.rsplit(":", 1)
    url = f"http://{ep}/v2/"
    manifest_url = f"http://{ep}/v2/{plan.image.path}/manifests/{plan.image.tag}"
    accept = " ".join(f"-H {shlex.quote('Accept: ' + t)}" for t in (*MANIFEST_TYPES, *INDEX_TYPES))
    lines = [
        curl_auth_prelude(credentials),
        # both units in one systemctl call: `unit <runtime> <ActiveState> <UnitFileState>`
        "units=$(" + unit_states("unit\\t", ("ActiveState", "UnitFileState")) + ")",
        "printf '%s\\n' \"$units\"",
        "active() { printf '%s\\n' \"$units\" | awk -F'\\t' -v u=\"$1\" '$2 == u && $3 == \"active\" { f = 1 } "
        "END { exit !f }'; }",
        # docker's image API straight from the socket where curl can (the CLI costs ~20 ms a call)
        "if command -v curl >/dev/null 2>&1 && [ -S /var/run/docker.sock ]; then",
        "  dhas() { [ \"$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "
        "--unix-socket /var/run/docker.sock \"http://docker/images/$1/json\")\" = 200 ]; }",
        "  drm() { for r in \"$@\"; do curl -s -o /dev/null --max-time 30 -X DELETE "
        "--unix-socket /var/run/docker.sock \"http://docker/images/$r\"; done; }",
        "else",
        "  dhas() { docker image inspect \"$1\" >/dev/null 2>&1; }",
        "  drm() { docker rmi \"$@\" >/dev/null 2>&1; }",
        "fi",
        reach_probe(url, host, port, accept, manifest_url),
        # docker
        "if active docker; then",
        "  drop=",
        "  " + INFO_FN,
        "  info=$(dinfo)",
        "  printf 'docker.info\\t%s\\n' \"$(printf '%s' \"$info\" | base64 -w0)\"",
        "  " + _pull_docker("docker.pull", f"{ep}/{plan.image.target}"),
    ]
    if plan.hub_image is not None:
        short = plan.hub_image.upstream
        lines += [
            f"  case \"$info\" in *{shlex.quote(f'http://{ep}')}*) " + _pull_docker("docker.mirror", short)
            + ";; *) printf 'docker.mirror\\tnomirror\\t\\n';; esac",
        ]
    lines += [
        "  [ -n \"$drop\" ] && drm $drop",
        "fi",
        # containerd: its effective config, read as TOML on this side (dumped_config_path); the
        # pulls need the certs dir it names, so they run in a second step (ctr_script)
        "if active containerd; then",
        "  printf 'containerd.dump\\t%s\\n' \"$(timeout 10 containerd config dump 2>/dev/null | base64 -w0)\"",
        "fi",
        "true",
    ]
    return "\n".join(lines) + "\n"


def _pull_problem(msg: str, what: str, ep: str, manifest: str = "") -> str:
    low = msg.lower()
    if manifest == "404":
        # containerd falls back to the upstream after the mirror's 404, and then reports the
        # upstream's (offline) error: the registry's own answer is the real reason
        return (f"manifest unknown: the registry at {ep} does not have this image; run registry-up "
                f"(the node's {what} said: {msg})")
    if "http response to https client" in low:
        return (f"HTTP answered where HTTPS was expected: {what} does not treat {ep} as a plain-HTTP "
                "registry (insecure-registries / hosts.toml missing); run configure-nodes")
    if "manifest unknown" in low or ("not found" in low and "manifest" in low) or "not found: not found" in low:
        return f"manifest unknown: the image is not in the registry; run registry-up ({msg})"
    if "unauthorized" in low or "no basic auth" in low or "401" in low:
        return f"401: {what} has no or wrong credentials for {ep} ({msg})"
    if "connection refused" in low or "no route" in low or "i/o timeout" in low:
        return f"registry unreachable from the node for {what} ({msg})"
    return msg or "failed"


def parse_probe(output: str) -> dict[str, list[str]]:
    """The probe's tab-separated lines: key -> fields (`unit.<runtime>` -> [active, enabled])."""
    vals: dict[str, list[str]] = {}
    for line in output.splitlines():
        key, _, rest = line.partition("\t")
        if key == "unit":
            name, active, enabled = [*rest.split("\t"), "", ""][:3]
            vals[f"unit.{name}"] = [active, enabled]
        else:
            vals[key] = rest.split("\t")
    return vals


def diagnose(output: str, plan: SmokePlan, node: str) -> tuple[Check, ...]:
    """Turn the raw probe lines into checks with reasons (pure)."""
    ep = plan.endpoint
    vals = parse_probe(output)
    checks: list[Check] = []
    manifest = (vals.get("manifest") or [""])[0]
    reach = vals.get("reach", ["", "", "000"])
    tool, rc, code = [*reach, "", "", ""][:3]
    auth_code = (vals.get("reach.auth") or [""])[0]
    if tool == "none":
        checks.append(Check("registry", "skip", "not checked: the node has no curl, wget, python3 or "
                            "bash (the pulls below still prove it)"))
    elif code in ("200",) or (code == "401" and auth_code == "200"):
        checks.append(Check("registry", "ok", f"GET http://{ep}/v2/ -> {auth_code or code} ({tool})"))
    elif code == "401" and plan.has_auth and tool != "curl":
        checks.append(Check("registry", "ok", f"GET http://{ep}/v2/ -> 401 ({tool}; the credentials "
                            "are proven by the pulls)"))
    elif code == "401":
        detail = ("401: the registry rejected the inventory's credentials" if plan.has_auth and auth_code
                  else "401: the registry requires credentials and the inventory has no registry.auth")
        checks.append(Check("registry", "FAIL", detail))
    elif code and code != "000":
        checks.append(Check("registry", "FAIL", f"GET http://{ep}/v2/ answered HTTP {code} ({tool}): "
                            "is something else listening on that port?"))
    else:
        why = {"6": "name does not resolve", "7": "connection refused",
               "28": "no answer within 5s"}.get(rc, f"{tool} exit code {rc}")
        checks.append(Check("registry", "FAIL",
                            f"registry unreachable from {node}: http://{ep}/v2/: {why}"))
    active_runtimes = 0
    for runtime in ("docker", "containerd"):
        active, enabled = vals.get(f"unit.{runtime}", ["", ""])
        if active == "active":
            active_runtimes += 1
            continue
        state = "masked" if enabled == "masked" else ("not installed" if enabled in ("", "not-found")
                                                     and active in ("inactive", "") else None)
        if state:
            checks.append(Check(runtime, "skip", state))
            if runtime == "containerd":
                checks.append(Check("config_path", "skip", state))
        else:
            checks.append(Check(runtime, "FAIL", f"{runtime} is {active or 'unknown'} (enabled: "
                                f"{enabled or '?'}): runtime down"))
        if runtime == "docker":
            checks.append(Check("docker mirror", "skip", state or "docker down"))
    if "docker.pull" in vals:
        rc, msg = _rc_msg(vals["docker.pull"])
        checks.append(Check("docker", "ok" if rc == "0" else "FAIL",
                            f"docker pull {ep}/{plan.image.target}" if rc == "0"
                            else _pull_problem(msg, "docker", ep, manifest)))
    if "docker.mirror" in vals and plan.hub_image is not None:
        rc, msg = _rc_msg(vals["docker.mirror"])
        name = plan.hub_image.upstream
        if rc == "nomirror":
            checks.append(Check("docker mirror", "FAIL", f"docker's registry-mirrors does not list "
                                f"http://{ep}: docker.io images won't come from the registry; "
                                "run configure-nodes"))
        elif rc != "0" and code == "401" and "registry-1.docker.io" in msg:
            # the mirror refused the pull and dockerd fell back to Docker Hub (offline here)
            checks.append(Check("docker mirror", "FAIL", "401 from the mirror: dockerd presents the "
                                "Docker Hub credentials (https://index.docker.io/v1/ in /root/.docker/"
                                f"config.json) to a docker.io mirror, and those are not {ep}'s ({msg})"))
        else:
            checks.append(Check("docker mirror", "ok" if rc == "0" else "FAIL",
                                f"docker pull {name} via the mirror" if rc == "0"
                                else _pull_problem(msg, "docker", ep,
                                                   manifest if plan.hub_image == plan.image else "")))
    elif "docker.info" in vals:
        checks.append(Check("docker mirror", "skip", "docker.io not mirrored or no docker.io image"))
    if "containerd.pull" in vals:
        certs = (vals.get("containerd.certs") or [""])[0]
        rc, msg = _rc_msg(vals["containerd.pull"])
        upstream = plan.image.registry if plan.image.registry in plan.mirrors else ep
        if rc == "nomirror":
            checks.append(Check("containerd", "FAIL", f"no mirror config for {upstream}: "
                                f"{certs}/{upstream}/hosts.toml is missing or does not name "
                                f"http://{ep}; run configure-nodes"))
        else:
            ref = plan.image.upstream if upstream != ep else f"{ep}/{plan.image.target}"
            checks.append(Check("containerd", "ok" if rc == "0" else "FAIL",
                                f"ctr pull {ref} via {certs}" if rc == "0"
                                else _pull_problem(msg, "containerd", ep, manifest)))
    if "containerd.dump" in vals:
        cp = dumped_config_path((vals["containerd.dump"] or [""])[0])
        if cp is None:
            checks.append(Check("config_path", "FAIL", "containerd config dump gave no readable "
                                "config: containerd does not answer"))
        else:
            checks.append(Check("config_path", "ok" if cp else "FAIL",
                                f"CRI config_path = {cp}" if cp else
                                "CRI config_path not in effect (containerd config dump shows none): "
                                "kubelet pulls ignore certs.d; run configure-nodes"))
    if "cri" in vals:
        checks.append(_cri_check(vals, plan, manifest))
    if "crictl" in vals:
        rc, msg = _rc_msg(vals["crictl"])
        checks.append(Check("crictl", "ok" if rc == "0" else "FAIL",
                            "crictl pull" if rc == "0" else _pull_problem(msg, "crictl (CRI)", ep, manifest)))
    if active_runtimes == 0:
        checks.append(Check("runtime", "FAIL", "no container runtime is active on this node"))
    return tuple(checks)


def _cri_check(vals: dict[str, list[str]], plan: SmokePlan, manifest: str) -> Check:
    """The kubelet's own path: CRI ImageService.PullImage on containerd's socket."""
    status, msg = _rc_msg(vals["cri"])
    if status == "ok":
        return Check("cri", "ok", f"CRI PullImage {plan.ctr_ref} (the kubelet's path)")
    if status != "fail":
        return Check("cri", "skip", msg or "not checked")
    ctr_ok = (vals.get("containerd.pull") or [""])[0] == "0"
    if ctr_ok and manifest != "404":
        config_path = dumped_config_path((vals.get("containerd.dump") or [""])[0]) or ""
        why = (f"; config_path {config_path} is a list, which containerd 2's transfer service does "
               "not split (containerd#12415): run configure-nodes" if ":" in config_path else "")
        return Check("cri", "FAIL", "config_path not honoured by the CRI image service: ctr pulled "
                     f"{plan.ctr_ref} through certs.d, the kubelet's PullImage did not{why} "
                     f"(containerd said: {msg})")
    return Check("cri", "FAIL", _pull_problem(msg, "the CRI image service", plan.endpoint, manifest))


def _rc_msg(parts: list[str]) -> tuple[str, str]:
    rc = parts[0] if parts else ""
    raw = parts[1] if len(parts) > 1 else ""
    try:
        msg = base64.b64decode(raw).decode("utf-8", "replace").strip()
    except ValueError:
        msg = raw
    return rc, msg


def smoke_node(c: Any, host: Host, plan: SmokePlan,
               credentials: tuple[str, Secret] | None) -> NodeSmoke:
    become = host.ssh.become
    res = ssh.run(c, "sh -s", stdin=probe_script(plan, credentials).encode(), become=become, timeout=300)
    if "unit\t" not in res.stdout:
        raise HostError(f"{host}: the probe did not run: {res.brief()}")
    output = res.stdout
    vals = parse_probe(output)
    if "containerd.dump" in vals:
        # second step: ctr by upstream name through the certs dir the running config names, then
        # the kubelet's path, CRI PullImage on containerd's socket
        config_path = dumped_config_path(vals["containerd.dump"][0]) or ""
        certs = config_path.split(":")[0] or ctd.DEFAULT_CERTS_D
        res = ssh.run(c, "sh -s", stdin=ctr_script(plan, certs).encode(), become=become, timeout=300)
        output += "\n" + res.stdout
        if (parse_probe(res.stdout).get("containerd.pull") or ["nomirror"])[0] != "nomirror":
            from nodecfg.cri import pull_via_cri

            cri = pull_via_cri(c, plan.ctr_ref, become=become, timeout=CRI_TIMEOUT)
            detail = base64.b64encode(cri.detail.encode()).decode()
            output += f"\ncri\t{cri.status}\t{detail}\n"
    checks = diagnose(output, plan, f"{host.name} ({host.address})")
    failed = [ch for ch in checks if ch.status == "FAIL"]
    return NodeSmoke(checks, "; ".join(f"{ch.name}: {ch.detail}" for ch in failed))


@dataclass(frozen=True)
class SmokeResult:
    plan: SmokePlan
    fleet: FleetResult[NodeSmoke]

    @property
    def exit_code(self) -> int:
        return self.fleet.exit_code


def smoke_test(inv: Inventory, hosts: tuple[Host, ...], *, image: str | None, forks: int,
               on_done: Callable[[HostResult[NodeSmoke]], Any] | None = None) -> SmokeResult:
    credentials = None
    if inv.registry.auth is not None:
        credentials = (inv.registry.auth.username, inv.registry.auth.password())

    def catalog_first() -> str | None:
        from nodecfg.registry import catalog_on_master

        catalog = catalog_on_master(inv)
        for repo, tags in sorted(catalog.items()):
            if tags:
                return f"{inv.registry.endpoint}/{repo}:{tags[0]}"
        return None

    plan = choose_plan(inv, image, catalog_first)

    def one(host: Host) -> NodeSmoke:
        c = ssh.connect(host)
        try:
            return smoke_node(c, host, plan, credentials)
        finally:
            ssh.close(c)

    return SmokeResult(plan, run_fleet(hosts, one, forks=forks, on_done=on_done))
