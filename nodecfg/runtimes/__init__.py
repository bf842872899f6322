"""Container runtimes on a node: pure merges and plans (docker.py, containerd.py)."""
