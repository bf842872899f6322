"""Read a kubespray / Ansible inventory (YAML or INI) as a nodecfg inventory.

The operator's `inventory/<cluster>/hosts.yaml` is taken as it is: the master is the first host of
`kube_control_plane`; the nodes are every host of `k8s_cluster` (else `kube_control_plane` +
`kube_node`). Each host's variables are resolved as Ansible does — `all.vars`, then group vars from
the shallowest group to the deepest (same depth: by group name), then host vars — and mapped:

    address  ansible_host, else access_ip, else ip, else the inventory name
    user     ansible_user          port     ansible_port
    key      ansible_ssh_private_key_file
    become   ansible_become        gateway  ansible_ssh_common_args with -J HOST / -o ProxyJump=HOST

Registry, images and SSH defaults come from an optional `nodecfg:` mapping in `all.vars`, with the
same keys as nodecfg's own format (`registry`, `images`, `ssh`). The result is a nodecfg-format
document that `inventory.parse_inventory` validates; every key remembers the line and the Ansible
name it came from, so errors still name the file, line and variable.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from nodecfg.errors import InventoryError

CONTROL_PLANE = "kube_control_plane"
_LEGACY = {"kube-master": CONTROL_PLANE, "kube-node": "kube_node", "k8s-cluster": "k8s_cluster"}
_VAR_MAP = {"ansible_user": "user", "ansible_port": "port", "ansible_ssh_private_key_file": "key",
            "ansible_become": "become"}
_INI_SECTION = re.compile(r"^\[([^\]:]+)(?::(vars|children))?\]\s*$")


def _error(message: str, *, path: str, line: int | None = None, key: str | None = None) -> InventoryError:
    """One line, whatever the group and host names in it hold."""
    from nodecfg.inventory import escape_unprintable

    return InventoryError(escape_unprintable(message), path=path, line=line,
                          key=escape_unprintable(key) if key else None)


@dataclass
class Group:
    name: str
    hosts: list[str] = field(default_factory=list)  # in declaration order
    vars: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    line: int | None = None


@dataclass
class Parsed:
    groups: dict[str, Group]
    host_vars: dict[str, dict[str, Any]]
    lines: dict[str, int]  # "host" / "host.var" / "group" / "group.var" -> line


def looks_like_ansible(data: Any) -> bool:
    """An Ansible YAML inventory: a mapping of groups (`all`, or mappings with hosts/children/vars)."""
    if not isinstance(data, dict) or not data:
        return False
    if "all" in data and isinstance(data["all"], dict):
        return True
    return all(isinstance(v, dict) and set(v) & {"hosts", "children", "vars"} for v in data.values())


def looks_like_ini(text: str) -> bool:
    return any(_INI_SECTION.match(line.strip()) for line in text.splitlines())


# ---------------------------------------------------------------------------------------------
# parsing the two formats into groups and host variables


def parse_yaml_groups(data: dict[str, Any], lines: dict[str, int], path: str) -> Parsed:
    groups: dict[str, Group] = {}
    host_vars: dict[str, dict[str, Any]] = {}
    out_lines: dict[str, int] = {}

    def group(name: str, raw: Any, key: str) -> None:
        name = _LEGACY.get(name, name)
        g = groups.setdefault(name, Group(name, line=lines.get(key)))
        if raw is None:
            return
        if not isinstance(raw, dict):
            raise _error(f"group {name}: expected a mapping with hosts/children/vars",
                                 path=path, line=lines.get(key), key=key)
        for k in raw:
            if k not in ("hosts", "children", "vars"):
                raise _error(f"group {name}: unknown key {k!r} (expected hosts, children, vars)",
                                     path=path, line=lines.get(f"{key}.{k}"), key=f"{key}.{k}")
        hosts = raw.get("hosts") or {}
        if not isinstance(hosts, dict):
            raise _error(f"group {name}: hosts must be a mapping of host names",
                                 path=path, line=lines.get(f"{key}.hosts"), key=f"{key}.hosts")
        for host, hv in hosts.items():
            hkey = f"{key}.hosts.{host}"
            if hv is not None and not isinstance(hv, dict):
                raise _error(f"host {host}: variables must be a mapping", path=path,
                                     line=lines.get(hkey), key=hkey)
            if host not in g.hosts:
                g.hosts.append(host)
            out_lines.setdefault(host, lines.get(hkey, 0))
            for var, value in (hv or {}).items():
                host_vars.setdefault(host, {})[var] = value
                out_lines[f"{host}.{var}"] = lines.get(f"{hkey}.{var}", 0)
        gvars = raw.get("vars") or {}
        if not isinstance(gvars, dict):
            raise _error(f"group {name}: vars must be a mapping", path=path,
                                 line=lines.get(f"{key}.vars"), key=f"{key}.vars")
        for var, value in gvars.items():
            g.vars[var] = value
            out_lines[f"{name}.{var}"] = lines.get(f"{key}.vars.{var}", 0)
            if var == "nodecfg":
                _copy_lines(lines, f"{key}.vars.nodecfg", out_lines, "nodecfg")
        children = raw.get("children") or {}
        if not isinstance(children, dict):
            raise _error(f"group {name}: children must be a mapping of groups", path=path,
                                 line=lines.get(f"{key}.children"), key=f"{key}.children")
        for child, craw in children.items():
            cname = str(_LEGACY.get(child, child))
            if cname not in g.children:
                g.children.append(cname)
            group(child, craw, f"{key}.children.{child}")

    groups["all"] = Group("all", line=lines.get("all"))
    for name, raw in data.items():
        group(name, raw, name)
        if name != "all" and _LEGACY.get(name, name) not in groups["all"].children:
            groups["all"].children.append(_LEGACY.get(name, name))
    return Parsed(groups, host_vars, out_lines)


def _copy_lines(lines: dict[str, int], prefix: str, out: dict[str, int], new_prefix: str) -> None:
    for k, v in lines.items():
        if k == prefix or k.startswith(prefix + ".") or k.startswith(prefix + "["):
            out[new_prefix + k[len(prefix):]] = v


def _ini_value(text: str) -> Any:
    """INI values as Ansible reads them: Python literals where they parse, else strings."""
    low = text.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_ini_groups(text: str, path: str) -> Parsed:
    groups: dict[str, Group] = {"all": Group("all"), "ungrouped": Group("ungrouped")}
    host_vars: dict[str, dict[str, Any]] = {}
    lines: dict[str, int] = {}
    section, kind = "ungrouped", "hosts"
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = _INI_SECTION.match(line)
        if m:
            section, kind = _LEGACY.get(m.group(1), m.group(1)), m.group(2) or "hosts"
            groups.setdefault(section, Group(section, line=n))
            continue
        g = groups[section]
        if kind == "children":
            child = _LEGACY.get(line.split()[0], line.split()[0])
            groups.setdefault(child, Group(child, line=n))
            if child not in g.children:
                g.children.append(child)
        elif kind == "vars":
            var, sep, value = line.partition("=")
            if not sep:
                raise _error(f"[{section}:vars]: expected key=value, got {line!r}", path=path, line=n)
            g.vars[var.strip()] = _ini_value(value.strip())
            lines[f"{section}.{var.strip()}"] = n
        else:
            try:
                words = shlex.split(line, comments=True)
            except ValueError as exc:
                raise _error(f"[{section}]: cannot parse host line ({exc})", path=path, line=n) from None
            host, *assignments = words
            if host not in g.hosts:
                g.hosts.append(host)
            lines.setdefault(host, n)
            for a in assignments:
                var, sep, value = a.partition("=")
                if not sep:
                    raise _error(f"host {host}: expected key=value, got {a!r}", path=path, line=n)
                host_vars.setdefault(host, {})[var] = _ini_value(value)
                lines[f"{host}.{var}"] = n
    for name in groups:
        if name != "all" and not any(name in other.children for other in groups.values()):
            groups["all"].children.append(name)
    return Parsed(groups, host_vars, lines)


# ---------------------------------------------------------------------------------------------
# Ansible's variable precedence, group membership


def _depths(groups: dict[str, Group]) -> dict[str, int]:
    """Each group's depth below `all` (the longest path, as Ansible counts it)."""
    depth = {"all": 0}
    changed = True
    while changed:
        changed = False
        for g in groups.values():
            if g.name not in depth:
                continue
            for child in g.children:
                d = depth[g.name] + 1
                if depth.get(child, -1) < d < len(groups) + 1:
                    depth[child] = d
                    changed = True
    return depth


def members(groups: dict[str, Group], name: str, _seen: frozenset[str] = frozenset()) -> list[str]:
    """Every host of a group and of its children, in declaration order, each once."""
    g = groups.get(name)
    if g is None or name in _seen:
        return []
    out = list(g.hosts)
    for child in g.children:
        out += [h for h in members(groups, child, _seen | {name}) if h not in out]
    return out


def host_variables(parsed: Parsed, host: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The host's variables after Ansible's precedence, and where each came from ("group" or host)."""
    groups = parsed.groups
    depth = _depths(groups)
    mine = [name for name in groups if host in members(groups, name) or name == "all"]
    order = sorted(mine, key=lambda n: (depth.get(n, 0), n != "all", n))
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name in order:
        for var, value in groups[name].vars.items():
            merged[var] = value
            origin[var] = name
    for var, value in parsed.host_vars.get(host, {}).items():
        merged[var] = value
        origin[var] = host
    return merged, origin


def proxy_jump(args: Any) -> str | None:
    """The jump host in ansible_ssh_common_args (`-J host` or `-o ProxyJump=host`), if any."""
    if not isinstance(args, str):
        return None
    try:
        words = shlex.split(args)
    except ValueError:
        return None
    for i, w in enumerate(words):
        if w == "-J" and i + 1 < len(words):
            return words[i + 1].split(",")[0]
        if w.startswith("-J") and len(w) > 2:
            return w[2:].split(",")[0]
        opt = words[i + 1] if w == "-o" and i + 1 < len(words) else (w[2:] if w.startswith("-o") else "")
        m = re.match(r"(?i)^ProxyJump[= ]\s*(\S+)", opt)
        if m:
            return m.group(1).split(",")[0]
    return None


# ---------------------------------------------------------------------------------------------
# to nodecfg's own format


def to_nodecfg(parsed: Parsed, path: str) -> tuple[dict[str, Any], dict[str, int], dict[str, str]]:
    """A nodecfg-format document, the line of each key, and each key's Ansible name."""
    groups = parsed.groups
    plane = members(groups, CONTROL_PLANE)
    if CONTROL_PLANE not in groups:
        raise _error(f"an Ansible inventory without a {CONTROL_PLANE} group: nodecfg takes the "
                             f"registry master from its first host", path=path)
    if not plane:
        raise _error(f"group {CONTROL_PLANE} has no hosts", path=path,
                             line=groups[CONTROL_PLANE].line)
    nodes = members(groups, "k8s_cluster") or \
        members(groups, CONTROL_PLANE) + [h for h in members(groups, "kube_node") if h not in plane]
    lines: dict[str, int] = {}
    names: dict[str, str] = {}
    all_vars, _ = host_variables(parsed, "\0no-such-host")
    extra = all_vars.get("nodecfg", {})
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise _error("all.vars.nodecfg: expected a mapping with registry / images / ssh",
                             path=path, line=parsed.lines.get("all.nodecfg"), key="all.vars.nodecfg")
    doc: dict[str, Any] = {}
    for key in extra:
        if key not in ("registry", "images", "ssh"):
            doc[key] = extra[key]  # unknown: the nodecfg validator names it with did-you-mean
    for key in ("ssh", "registry", "images"):
        if key in extra:
            doc[key] = extra[key]
    for k, v in parsed.lines.items():
        if k == "nodecfg" or k.startswith(("nodecfg.", "nodecfg[")):
            lines[k[len("nodecfg."):] if k.startswith("nodecfg.") else k] = v
            names[k[len("nodecfg."):] if k.startswith("nodecfg.") else k] = "all.vars." + k
    if "all.nodecfg" in parsed.lines and "nodecfg" not in parsed.lines:
        # INI: `nodecfg={...}` on one line of [all:vars]; every key inside it is on that line
        for sub in _key_paths(extra, ""):
            lines[sub] = parsed.lines["all.nodecfg"]
            names[sub] = f"all.vars.nodecfg.{sub}"

    def entry(host: str, key: str) -> dict[str, Any]:
        hv, origin = host_variables(parsed, host)
        lines[key] = parsed.lines.get(host, 0)
        names[key] = host
        out: dict[str, Any] = {"name": host}
        for var in ("ansible_host", "access_ip", "ip"):
            if var in hv:
                out["address"] = hv[var]
                _note(lines, names, parsed, f"{key}.address", origin[var], var)
                break
        else:
            out["address"] = host
            lines[f"{key}.address"] = parsed.lines.get(host, 0)
            names[f"{key}.address"] = f"{host} (its name: no ansible_host, access_ip or ip)"
        for var, ours in _VAR_MAP.items():
            if var in hv:
                value = hv[var]
                if ours == "become" and isinstance(value, str):
                    value = {"true": True, "yes": True, "false": False, "no": False}.get(value.lower(), value)
                if ours == "port" and isinstance(value, str) and value.isdigit():
                    value = int(value)
                out[ours] = value
                _note(lines, names, parsed, f"{key}.{ours}", origin[var], var)
        jump = proxy_jump(hv.get("ansible_ssh_common_args"))
        if jump:
            out["gateway"] = jump
            _note(lines, names, parsed, f"{key}.gateway", origin["ansible_ssh_common_args"],
                  "ansible_ssh_common_args")
        return out

    doc["master"] = entry(plane[0], "master")
    doc["nodes"] = [entry(h, f"nodes[{i}]") for i, h in enumerate(nodes)]
    registry = doc.get("registry")
    if isinstance(registry, dict) and isinstance(registry.get("replicas"), str):
        # `replicas: kube_control_plane`: every host of that group but the master
        group = registry["replicas"]
        if group not in groups:
            raise _error(f"registry.replicas names the group {group!r}, which the inventory does not have",
                         path=path, line=lines.get("registry.replicas"), key="all.vars.nodecfg.registry.replicas")
        hosts = [h for h in members(groups, group) if h != plane[0]]
        registry["replicas"] = [entry(h, f"registry.replicas[{i}]") for i, h in enumerate(hosts)]
    return doc, lines, names


def _key_paths(value: Any, prefix: str) -> list[str]:
    """Every key path inside `value`, spelled as the nodecfg validator names them (a.b, a[0])."""
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{prefix}.{k}" if prefix else str(k)
            out += [sub, *_key_paths(v, sub)]
    elif isinstance(value, list):
        for i, v in enumerate(value):
            sub = f"{prefix}[{i}]"
            out += [sub, *_key_paths(v, sub)]
    return out


def _note(lines: dict[str, int], names: dict[str, str], parsed: Parsed, key: str, origin: str,
          var: str) -> None:
    lines[key] = parsed.lines.get(f"{origin}.{var}", 0)
    names[key] = f"{origin}: {var}" if origin in parsed.groups else f"{origin}.{var}"
