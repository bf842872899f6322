"""containerd's config.toml as the daemon reads it, and nodecfg's edits of it (pure).

config.toml is edited as a TOML document (tomlkit), never by appending text: `containerd config
default` already holds the registry table, and a second copy makes containerd refuse to start.
`registry.mirrors` beside `config_path` makes the CRI plugin fail while systemd still says
"active" (kubespray#9741), so such mirrors are moved into hosts.toml files (by the planner) and removed.

The config containerd really reads (`effective_registry`): config.toml and every file it imports,
imports of imports too, in containerd's load order (breadth first; a glob's matches sorted; a
relative path from the importing file's dir). Its config_path is the one in effect:
- containerd 2 merges plugin tables key by key: the last file that sets config_path (non-empty)
  wins; when none does, the main file's is set (nothing overrides it);
- containerd 1.6/1.7 replace a plugin's whole table with the last file's that has it: the CRI
  plugin's table of the last file holding one is the one in effect (a drop-in with
  `[plugins."io.containerd.grpc.v1.cri".registry]` discards config.toml's CRI settings), so
  config_path is set in THAT file (the drop-in is edited, like config.toml would be: merged, backed
  up, validated as TOML — containerd itself reads it only with the files around it, after the
  restart, whose verify checks the dump and rolls back).
A config_path in effect is used as it is: hosts.toml files go into its (first) directory, no config
file changes, nothing restarts. `--undo` takes out only the config_path nodecfg set
(`unset_config_path`, from its record).
"""

from __future__ import annotations

import posixpath
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from nodecfg.errors import NodecfgError
from nodecfg.runtimes.base import FileFact, FileState, split_fact_dir

CONFIG_TOML = "/etc/containerd/config.toml"
DEFAULT_CERTS_D = "/etc/containerd/certs.d"


class TomlMergeError(NodecfgError):
    """An existing TOML file can't be edited safely."""


@dataclass(frozen=True)
class ConfigFile:
    """A file containerd loads besides its main config: one it imports, directly or not."""

    path: str
    text: str | None  # None: not readable as text (see `problem`), or absent
    problem: str = ""  # why it can't be used ("" : read, or absent when text is None)


def import_entries(parent: str, text: str | None) -> tuple[str, ...]:
    """`imports` of a config file as containerd resolves them (resolveImports): each path cleaned,
    a relative one joined to the importing file's dir; globs kept as globs. () when there are none
    or the file does not parse (planning it says why)."""
    try:
        raw = tomllib.loads(text).get("imports") if text else None
    except tomllib.TOMLDecodeError:
        return ()
    if not isinstance(raw, list):
        return ()
    out = []
    for item in raw:
        if isinstance(item, str) and item:
            path = posixpath.normpath(item)
            if not path.startswith("/"):
                path = posixpath.normpath(posixpath.join(posixpath.dirname(parent), path))
            out.append(path)
    return tuple(out)


def _glob(pattern: str, files: Mapping[str, FileFact]) -> list[str]:
    """Go's filepath.Glob over the files facts read: `*` within one path element, sorted."""
    parts = pattern.split("/")
    found = [p for p, f in files.items() if f.exists and len(p.split("/")) == len(parts)
             and all(fnmatchcase(a, b) for a, b in zip(p.split("/"), parts, strict=True))]
    return sorted(found, key=lambda p: p.split("/"))


def load_order(main: str, main_text: str | None, files: Mapping[str, FileFact],
               dirs: Mapping[str, FileFact]) -> tuple[tuple[ConfigFile, ...], tuple[str, ...]]:
    """The files `main` imports, imports of imports too, in containerd's order (LoadConfig: breadth
    first, each file once), and what facts have not read yet (paths, or `dir/glob` entries)."""
    loaded: list[ConfigFile] = []
    unread: list[str] = []
    seen = {main}
    pending = list(import_entries(main, main_text))
    while pending:
        path, pending = pending[0], pending[1:]
        if "*" in path:
            listed = dirs.get(split_fact_dir(path)[0])
            if listed is None:
                unread.append(path)
            elif listed.state is FileState.UNREADABLE:
                loaded.append(ConfigFile(path, None, f"cannot list {listed.path}: {listed.reason}"))
            else:
                pending += [p for p in _glob(path, files) if p not in seen]
            continue
        if path in seen:
            continue
        seen.add(path)
        fact = files.get(path)
        if fact is None:
            unread.append(path)
        elif fact.state is FileState.UNREADABLE:
            loaded.append(ConfigFile(path, None, fact.reason or "unreadable"))
        elif not fact.exists:
            loaded.append(ConfigFile(path, None))
        elif (text := fact.text()) is None:
            loaded.append(ConfigFile(path, None, "not UTF-8 text"))
        else:
            loaded.append(ConfigFile(path, text))
            pending += import_entries(path, text)
    return tuple(loaded), tuple(unread)


@dataclass(frozen=True)
class InEffect:
    """The file whose CRI registry config_path takes effect, as containerd merges its files (what
    that value is, and whether it must be set, `set_config_path` reads in that file)."""

    path: str  # the file whose value takes effect, or where setting it would (see the module doc)
    text: str | None  # that file's text
    version: int | None  # the config version its section is read in (None: the file's own)


def effective_registry(main: str, main_text: str | None, imported: tuple[ConfigFile, ...],
                       containerd_major: int) -> InEffect:
    """The file that holds the config_path in effect, or where setting it takes effect (module
    docstring: per major version). Raises TomlMergeError for a file containerd could not load (then
    it would not start)."""
    if not imported:  # config.toml alone (most nodes): nothing to merge, and no second parse of it
        return InEffect(main, main_text, None)
    docs: list[tuple[str, str | None, dict[str, Any]]] = [(main, main_text, {})]
    for f in imported:
        if f.problem:
            raise TomlMergeError(f"{main} imports {f.path}, which cannot be read ({f.problem}); left untouched")
        if f.text is None:
            raise TomlMergeError(f"{main} imports {f.path}, which does not exist: containerd would not "
                                 "start; left untouched")
    try:
        docs[0] = (main, main_text, tomllib.loads(main_text) if main_text else {})
        docs += [(f.path, f.text, tomllib.loads(f.text or "")) for f in imported]
    except tomllib.TOMLDecodeError as exc:
        raise TomlMergeError(f"a file containerd imports is not valid TOML ({exc}); left untouched") from None

    def version(doc: dict[str, Any]) -> int:
        v = doc.get("version", 1)
        return v if isinstance(v, int) else 1

    if containerd_major >= 2:  # plugin tables merged key by key: the last non-empty value wins
        found = InEffect(main, main_text, None)
        for path, text, doc in docs:
            table = table_at(doc, registry_section(version(doc), containerd_major))
            value = table.get("config_path") if isinstance(table, dict) else None
            if isinstance(value, str) and value:
                found = InEffect(path, text, None)
        return found
    # 1.x: the version is the last one set; the CRI plugin's table is the last file's that has one
    merged = 1
    for _, _, doc in docs:
        if isinstance(doc.get("version"), int) and doc["version"]:
            merged = doc["version"]
    section = registry_section(merged)
    holder = docs[0]
    for entry in docs:
        if isinstance(table_at(entry[2], section[:2]), dict):
            holder = entry
    return InEffect(holder[0], holder[1], None if holder[0] == main else merged)


def registry_section(version: int, containerd_major: int = 1) -> tuple[str, ...]:
    """Where the CRI registry settings live for a config file `version`, as `containerd_major` reads
    it. containerd 2 gives a file without `version` only the version-1 plugin renames (`cri` ->
    `io.containerd.grpc.v1.cri`), not the version-2 -> 3 migration: there it ignores
    `[plugins.cri.registry]` ("unknown key") and reads the version-3 image-service section as it
    is (seen on 2.1.9: `containerd config dump` shows config_path only from that section)."""
    if version >= 3 or (version <= 1 and containerd_major >= 2):
        return ("plugins", "io.containerd.cri.v1.images", "registry")
    if version == 2:
        return ("plugins", "io.containerd.grpc.v1.cri", "registry")
    return ("plugins", "cri", "registry")


def table_at(doc: Any, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if not isinstance(doc, dict) or k not in doc:
            return None
        doc = doc[k]
    return doc


@dataclass(frozen=True)
class ConfigEdit:
    text: str | None  # new config.toml, None when unchanged
    certs_dir: str  # where hosts.toml files go (config_path in effect after the edit)
    notes: tuple[str, ...] = ()
    moved_mirrors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    set_path: str = ""  # the config_path nodecfg set where there was none ("": it set none now)


def set_config_path(existing: str | None, containerd_major: int,
                    certs_dir: str = DEFAULT_CERTS_D, source: str = CONFIG_TOML,
                    version: int | None = None) -> ConfigEdit:
    """Make config.toml point the CRI plugin at `certs_dir`, keeping every other setting and comment.
    `version`: the config version its section is read in, when not the file's own (a drop-in of
    containerd 1.x is read in the version the files merged to)."""
    import tomlkit

    notes: list[str] = []
    if existing is None or not existing.strip():
        version = 3 if containerd_major >= 2 else 2
        section = registry_section(version)
        text = (f"# Written by nodecfg: containerd fills in its defaults for everything else.\n"
                f"version = {version}\n\n"
                f'[plugins."{section[1]}".registry]\n  config_path = "{certs_dir}"\n')
        what = "missing" if existing is None else "empty"
        return ConfigEdit(text, certs_dir, (f"config.toml was {what}; wrote a minimal one",), set_path=certs_dir)
    try:
        doc = tomlkit.parse(existing)
        plain = tomllib.loads(existing)
    except (tomllib.TOMLDecodeError, tomlkit.exceptions.TOMLKitError) as exc:
        raise TomlMergeError(f"{source} is not valid TOML ({exc}); left untouched") from None
    if version is None:
        version = plain.get("version", 1)
        if not isinstance(version, int):
            raise TomlMergeError(f"{source}: version is not a number; left untouched")
    section = registry_section(version, containerd_major)
    current = table_at(plain, section) or {}
    current_path = current.get("config_path", "") if isinstance(current, dict) else ""
    mirrors = current.get("mirrors") if isinstance(current, dict) else None
    moved: dict[str, tuple[str, ...]] = {}
    changed = False
    # navigate to the registry table in the tomlkit document, creating what is missing
    table: Any = doc
    for key in section[:-1]:
        if key not in table:
            table[key] = tomlkit.table(is_super_table=True)
        table = table[key]
    if section[-1] not in table:
        fresh = tomlkit.table()
        fresh.add(tomlkit.nl())
        table[section[-1]] = fresh
    table = table[section[-1]]
    if isinstance(mirrors, dict) and mirrors:
        for host, conf in mirrors.items():
            endpoints = conf.get("endpoint", []) if isinstance(conf, dict) else []
            moved[host] = tuple(str(e) for e in endpoints)
        del table["mirrors"]
        changed = True
        notes.append(f"registry.mirrors for {', '.join(sorted(moved))} moved into hosts.toml: "
                     "containerd refuses mirrors beside config_path")
    effective = certs_dir
    set_path = ""
    if isinstance(current_path, str) and current_path:
        effective = current_path.split(":")[0]
        if containerd_major >= 2 and ":" in current_path:
            # containerd 2's transfer service, the CRI's pull path, takes the list as one directory
            # name (containerd#12415): ctr --hosts-dir works, every kubelet pull ignores certs.d
            table["config_path"] = effective
            changed = True
            notes.append(f"config_path {current_path} is a list, which containerd 2 does not split "
                         f"for CRI pulls; set to {effective}")
        elif effective != certs_dir:
            notes.append(f"config_path already set to {current_path}; hosts.toml written there")
    else:
        had_key = "config_path" in table
        table["config_path"] = certs_dir
        if not had_key:
            table.value.item("config_path").indent(2)
        changed = True
        set_path = certs_dir
    if not changed:
        return ConfigEdit(None, effective, tuple(notes))
    new_text = tomlkit.dumps(doc)
    check = table_at(tomllib.loads(new_text), section) or {}
    if check.get("config_path", "").split(":")[0] != effective or check.get("mirrors"):
        raise TomlMergeError(f"{source}: editing config_path did not produce the expected document")
    return ConfigEdit(new_text, effective, tuple(notes), moved, set_path)


_SECTIONS = (("plugins", "io.containerd.cri.v1.images", "registry"),
             ("plugins", "io.containerd.grpc.v1.cri", "registry"), ("plugins", "cri", "registry"))


def config_path_of(text: str | None) -> str:
    """The config_path a config.toml text sets, in whichever registry section it has one ("")."""
    try:
        doc = tomllib.loads(text) if text else {}
    except tomllib.TOMLDecodeError:
        return ""
    for section in _SECTIONS:
        value = (table_at(doc, section) or {}).get("config_path") if isinstance(table_at(doc, section), dict) else None
        if isinstance(value, str) and value:
            return value
    return ""


def unset_config_path(text: str, values: tuple[str, ...]) -> str | None:
    """config.toml without the config_path nodecfg set (`values`, from its record): every other
    setting and comment kept. None when it is not TOML."""
    import tomlkit

    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError:
        return None
    changed = False
    for section in _SECTIONS:
        parent: Any = None
        table: Any = doc
        for key in section:
            parent, table = table, table.get(key) if isinstance(table, dict) else None
        if isinstance(table, dict) and table.get("config_path") in values:
            del table["config_path"]
            if not table:  # the table nodecfg added for it, left empty
                del parent[section[-1]]
            changed = True
    # the blank line nodecfg put before the table it added goes with it
    return tomlkit.dumps(doc).rstrip("\n") + "\n" if changed else text
