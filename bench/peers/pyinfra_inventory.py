"""pyinfra inventory for bench/configure_fleet.py: the lab nodes from the job file."""

import json
import os
from pathlib import Path

_job = json.loads(Path(os.environ["NODECFG_BENCH_JOB"]).read_text())

nodes = (_job["addresses"], {
    "ssh_user": "root",
    "ssh_key": _job["key"],
    "ssh_known_hosts_file": _job["known_hosts"],
    "ssh_strict_host_key_checking": "accept-new",
    "ssh_allow_agent": False,
    "ssh_look_for_keys": False,
})
