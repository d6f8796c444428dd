"""The only reader of the environment and `.env`; settings resolution and URL masking."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///tutormax.db"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
ENV_PREFIX = "TUTORMAX_"

_URL_PASSWORD = re.compile(r"^(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:@/]*)(?::[^@/]*)?@")


_SECRETS: set[str] = set()


def register_secret(secret: str | None) -> None:
    """Remember a secret (a URL's password) so that `scrub` removes it from any text."""
    if secret and len(secret) >= 1:
        _SECRETS.add(secret)


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by `***` (longest first)."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def mask_url(url: str) -> str:
    """Hide the password of a URL (`postgresql://u:secret@h/db` → `postgresql://u:***@h/db`)."""
    url = str(url)
    m = _URL_PASSWORD.match(url)
    if not m or ":" not in url[len(m["scheme"]) : m.end()]:
        return _mask_query_password(url)
    return _mask_query_password(f"{m['scheme']}{m['user']}:***@{url[m.end() :]}")


def _mask_query_password(url: str) -> str:
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a `.env` file: KEY=VALUE lines, `#` comments, optional quotes, optional `export`."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return values
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_dotenv(path: Path | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Put `.env` values into the process environment; real environment variables win."""
    env = os.environ if environ is None else environ
    for key, value in read_dotenv(path or Path.cwd() / ".env").items():
        if key.startswith(ENV_PREFIX) and key not in env:
            os.environ[key] = value


def fault_setting(name: str) -> str | None:
    """`TUTORMAX_<NAME>`: the fault-injection variables the tests set on a worker
    (`TUTORMAX_FAULT`, `TUTORMAX_FAULT_PAUSE_S`); read here like every other setting."""
    return os.environ.get(ENV_PREFIX + name.upper())
