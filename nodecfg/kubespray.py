"""`kubespray-vars`: the offline.yml values that point kubespray at what registry-up pushed.

kubespray names every image as `{{ <upstream>_image_repo }}/<path>` (`{{ kube_image_repo }}/pause`,
`{{ docker_image_repo }}/library/nginx`, `{{ quay_image_repo }}/calico/node`, ...), and registry-up
pushes each image under its upstream path without the host (`registry.k8s.io/pause:3.9` ->
`pause:3.9`). So every `*_image_repo` is the registry itself: `{{ registry_host }}`.

`containerd_registries_mirrors` (kubespray's roles/container-engine/containerd: one
`certs.d/<prefix>/hosts.toml` per entry, `server` defaulting to `https://<prefix>`, a `[host]` per
mirror with `capabilities`, `skip_verify`, `ca`, `header`) lists every replica for the registry's
own prefix — kubespray pulls by `{{ registry_host }}/...` — and for each mirrored upstream, in the
inventory's order (master first): kubespray renders one file for every node, so no per-node
rotation there (containerd still fails over, host by host). Over TLS each host names the CA where
configure-nodes puts it; a login is left to kubespray's `header` (nodecfg never prints the
password).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodecfg.images import parse_ref
from nodecfg.inventory import Inventory
from nodecfg.runtimes.containerd import UPSTREAM_SERVERS
from nodecfg.runtimes.containerd_config import DEFAULT_CERTS_D

# kubespray's variable for each upstream registry (roles/kubespray_defaults)
REPO_VARS: Mapping[str, str] = {
    "kube_image_repo": "registry.k8s.io",
    "gcr_image_repo": "gcr.io",
    "github_image_repo": "ghcr.io",
    "docker_image_repo": "docker.io",
    "quay_image_repo": "quay.io",
}


def offline_vars(inv: Inventory) -> dict[str, Any]:
    """registry_host, every *_image_repo and containerd_registries_mirrors, as offline.yml wants them."""
    return {"registry_host": inv.registry.endpoint,
            **{var: "{{ registry_host }}" for var in REPO_VARS},
            "containerd_registries_mirrors": registries_mirrors(inv)}


def registries_mirrors(inv: Inventory) -> list[dict[str, Any]]:
    """kubespray's containerd_registries_mirrors: the registry's own prefix, then each mirrored
    upstream, every replica (else the registry) a mirror host of each."""
    reg = inv.registry
    hosts = inv.replica_endpoints
    ca = [f"{DEFAULT_CERTS_D}/{reg.endpoint}/ca.crt"] if reg.tls is not None else None
    out = []
    for prefix in dict.fromkeys((reg.endpoint, *reg.mirrors)):
        own = prefix == reg.endpoint
        server = f"{reg.scheme}://{reg.endpoint}" if own else UPSTREAM_SERVERS.get(prefix, f"https://{prefix}")
        mirrors = [{"host": f"{reg.scheme}://{h}", "capabilities": ["pull", "resolve"], "skip_verify": False,
                    **({"ca": ca} if ca else {})} for h in hosts]
        out.append({"prefix": prefix, "server": server, "mirrors": mirrors})
    return out


def offline_yaml(inv: Inventory) -> str:
    """offline.yml text: the values, each repo with the inventory's images it covers, then
    containerd_registries_mirrors."""
    pushed: dict[str, list[str]] = {}
    for image in inv.images:
        ref = parse_ref(image)
        pushed.setdefault(ref.registry, []).append(ref.target)
    values = offline_vars(inv)
    mirrors = values.pop("containerd_registries_mirrors")
    lines = ["# kubespray offline.yml (inventory/<cluster>/group_vars/all/offline.yml), from nodecfg:",
             "# registry-up pushes every image under its upstream path without the host.",
             *(f"{key}: \"{value}\"" + _covers(key, pushed) for key, value in values.items()),
             "# containerd on every node: the registry's " + (
                 f"{len(inv.replica_endpoints)} replicas, tried in this order (the same on every node),"
                 if inv.registry.replicas else "endpoint") + " for its own prefix and each mirrored upstream",
             *(["# (over TLS each host's ca is where configure-nodes puts the registry's CA; copy it there "
                "if kubespray alone configures containerd)"] if inv.registry.tls is not None else []),
             *(["# (its login: add to each mirror  header: {Authorization: [\"Basic <base64 of user:password>\"]})"]
               if inv.registry.auth is not None else []),
             "containerd_registries_mirrors:"]
    for entry in mirrors:
        lines += [f"  - prefix: {_quote(entry['prefix'])}", f"    server: {_quote(entry['server'])}", "    mirrors:"]
        for m in entry["mirrors"]:
            lines += [f"      - host: {_quote(m['host'])}", "        capabilities: [\"pull\", \"resolve\"]",
                      "        skip_verify: false",
                      *([f"        ca: [{', '.join(_quote(c) for c in m['ca'])}]"] if "ca" in m else [])]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is YAML's)."""
    import json

    return json.dumps(text)


def _covers(var: str, pushed: Mapping[str, list[str]]) -> str:
    upstream = REPO_VARS.get(var)
    if upstream is None:
        return ""
    images = pushed.get(upstream, [])
    return f"   # {upstream}: " + (", ".join(images) if images else "no images in the inventory")
