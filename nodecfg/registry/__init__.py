"""The master side: the registry container, its login and TLS, and what registry-up and
registry-down do there. Facts -> plan -> apply, as on the nodes:

    up.py         registry-up: the one flow (facts side by side, plan, --check, apply, push)
    down.py       registry-down (and --purge)
    prune.py      registry-prune: the tags nodecfg pushed that the inventory dropped, then the garbage
                  collector;  prune_plan.py: which tags and manifests go, and the bytes (pure)
    container.py  the container's spec, the master scripts (nodecfg/scripts/master*.sh), their facts
    adopt.py      the decision table: keep / start / create / recreate / adopt / refuse (pure)
    auth.py       the htpasswd file;  tls.py: the CA and the registry's certificate (made here)
    master.py     the master's SSH connection, every step under its deadline (--timeout)
    storage.py    a host's disk around a push: the fit check, a full disk, the record of what was pushed
    results.py    what the commands return

The images themselves go through nodecfg/push/ (sources -> one pipeline -> a target).
"""
