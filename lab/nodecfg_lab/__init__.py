"""nodecfg's dev lab: a throwaway fleet of real Debian systemd hosts on this machine's Docker engine,
for nodecfg's demo, e2e tests, benchmarks and fixture captures. A separate distribution
(`nodecfg-lab`, in the repository's lab/) and never part of the nodecfg wheel: a lab host is a
container with nearly every capability, and `up` raises kernel limits under /proc/sys.

Nothing is pulled: the node images are built with debootstrap (each flavor's rootfs tarball is
cached, so a second build takes seconds) and the operator-side images (`registry:2` and small test
images named like upstream ones) are built from Debian's docker-registry and busybox-static binaries
unless they exist locally already (or `--pull` finds them in a reachable registry).

Where each fact lives: the environment variables (which lab, where its files and cache are) and
the hosts' addresses in `settings`, the node flavors in `flavors`, building a flavor's rootfs in
`rootfs`, the images in `images`, the running fleet (master, nodes, registry replicas) and the
inventory it writes in `fleet`, the S3 store (SeaweedFS, `up --s3`) in `s3store`, the
`nodecfg-lab` command in `cli`. The names below are the API the e2e harness, the benchmarks and
scripts/capture_fixtures.py use.
"""

from nodecfg_lab.errors import LabError, LabUsageError
from nodecfg_lab.flavors import DEFAULT_FLAVOR, FLAVORS, Flavor, assign_flavors, node_image
from nodecfg_lab.fleet import (
    LabNode,
    lab_down,
    lab_flavors,
    lab_status,
    lab_up,
    start_node,
    stop_node,
    wait_for_ssh,
)
from nodecfg_lab.images import built_flavors, ensure_operator_images
from nodecfg_lab.settings import LabPaths, lab_name, lab_paths, lab_subnet

__version__ = "0.1.0"
__all__ = [
    "DEFAULT_FLAVOR", "FLAVORS", "Flavor", "LabError", "LabNode", "LabPaths", "LabUsageError",
    "assign_flavors", "built_flavors", "ensure_operator_images", "lab_down", "lab_flavors", "lab_name",
    "lab_paths", "lab_status", "lab_subnet", "lab_up", "node_image", "start_node", "stop_node",
    "wait_for_ssh",
]
