"""`kubespray-vars`: the offline.yml values that point kubespray at what registry-up pushed.

kubespray names every image as `{{ <upstream>_image_repo }}/<path>` (`{{ kube_image_repo }}/pause`,
`{{ docker_image_repo }}/library/nginx`, `{{ quay_image_repo }}/calico/node`, ...), and registry-up
pushes each image under its upstream path without the host (`registry.k8s.io/pause:3.9` ->
`pause:3.9`). So every `*_image_repo` is the registry itself: `{{ registry_host }}`.
"""

from __future__ import annotations

from collections.abc import Mapping

from nodecfg.images import parse_ref
from nodecfg.inventory import Inventory

# kubespray's variable for each upstream registry (roles/kubespray_defaults)
REPO_VARS: Mapping[str, str] = {
    "kube_image_repo": "registry.k8s.io",
    "gcr_image_repo": "gcr.io",
    "github_image_repo": "ghcr.io",
    "docker_image_repo": "docker.io",
    "quay_image_repo": "quay.io",
}


def offline_vars(inv: Inventory) -> dict[str, str]:
    """registry_host and every *_image_repo, as offline.yml wants them."""
    return {"registry_host": inv.registry.endpoint,
            **{var: "{{ registry_host }}" for var in REPO_VARS}}


def offline_yaml(inv: Inventory) -> str:
    """offline.yml text: the values, each repo with the inventory's images it covers."""
    pushed: dict[str, list[str]] = {}
    for image in inv.images:
        ref = parse_ref(image)
        pushed.setdefault(ref.registry, []).append(ref.target)
    lines = ["# kubespray offline.yml (inventory/<cluster>/group_vars/all/offline.yml), from nodecfg:",
             "# registry-up pushes every image under its upstream path without the host.",
             *(f"{key}: \"{value}\"" + _covers(key, pushed) for key, value in offline_vars(inv).items())]
    return "\n".join(lines) + "\n"


def _covers(var: str, pushed: Mapping[str, list[str]]) -> str:
    upstream = REPO_VARS.get(var)
    if upstream is None:
        return ""
    images = pushed.get(upstream, [])
    return f"   # {upstream}: " + (", ".join(images) if images else "no images in the inventory")
