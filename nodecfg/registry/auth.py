"""The registry's login on the master: a bcrypt htpasswd file, as `htpasswd -nbB` makes (no
apache2-utils needed). It travels to the master base64 on a script's stdin and is written 0600
(container.py); the password itself never leaves `Credentials` except into the hash."""

from __future__ import annotations

from nodecfg.credentials import Credentials


def htpasswd_line(creds: Credentials) -> str:
    """One bcrypt htpasswd line for the login."""
    import bcrypt

    if ":" in creds.username or not creds.username.isprintable():
        raise ValueError("an htpasswd username holds no ':' and no control characters")
    hashed = bcrypt.hashpw(creds.reveal().encode(), bcrypt.gensalt(rounds=10)).decode()
    return f"{creds.username}:{hashed}\n"


def htpasswd_matches(content: str | None, creds: Credentials) -> bool:
    """Does an existing htpasswd file hold exactly this user with this password?"""
    import bcrypt

    if not content:
        return False
    lines = [ln for ln in content.splitlines() if ln.strip()]
    if len(lines) != 1 or ":" not in lines[0]:
        return False
    user, hashed = lines[0].split(":", 1)
    if user != creds.username:
        return False
    try:
        return bcrypt.checkpw(creds.reveal().encode(), hashed.encode())
    except ValueError:
        return False
