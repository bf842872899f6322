"""The configure job as a pyinfra deploy, for bench/configure_fleet.py (same files, same rule:
restart or reload a runtime only where its config changed). Written the way a pyinfra user would:
files.put for whole files, files.block for config_path in config.toml."""

import json
import os
from io import StringIO
from pathlib import Path

from pyinfra.operations import files, systemd

job = json.loads(Path(os.environ["NODECFG_BENCH_JOB"]).read_text())

daemon = files.put(name="daemon.json", src=StringIO(job["daemon_json"]),
                   dest="/etc/docker/daemon.json", mode="644")
for path, content in job["hosts_toml"].items():
    files.directory(name=f"directory for {path}", path=str(Path(path).parent), present=True)
    files.put(name=path, src=StringIO(content), dest=path, mode="644")
config = files.block(name="config_path in config.toml", path="/etc/containerd/config.toml",
                     content=job["config_block"], marker="# {mark} nodecfg-bench config_path")
systemd.service(name="restart containerd", service="containerd", restarted=True,
                _if=config.did_change)
systemd.service(name="reload docker", service="docker", reloaded=True, _if=daemon.did_change)
