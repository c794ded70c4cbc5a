"""Validation of operator input: model ids, node specs, paths, ports, counts and durations.

Every function returns the value it accepted or raises `InputError` with one line that names the
input and says what would be valid. Nothing here touches a node.
"""

from __future__ import annotations

import re

from modeldrop.errors import InputError

# Hugging Face repo names: letters, digits, '-', '_', '.'; no leading/trailing '-' or '.', no '--' or '..'.
_HF_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_MODEL_RE = re.compile(rf"^({_HF_PART})/({_HF_PART})$")
_ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_IPV6_RE = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")
_PATH_BAD = re.compile(r"[\x00-\x1f\x7f]")

MODEL_ID_HELP = "expected org/name (letters, digits, '-', '_', '.'), e.g. mlx-community/Qwen3.5-122B-A10B-4bit"
NODE_HELP = "expected 'local', an ssh_config alias, or user@host[:port]"


def model_id(value: str, source: str = "--model") -> str:
    """Accept a Hugging Face model id `org/name`; reject traversal, shell text and bare names."""
    v = (value or "").strip()
    if not v:
        raise InputError(f"{source}: empty model id; {MODEL_ID_HELP}")
    m = _MODEL_RE.match(v)
    if not m or any(".." in p or "--" in p for p in m.groups()):
        raise InputError(f"{source}: invalid model id {value!r}; {MODEL_ID_HELP}")
    return v


def model_folder(model: str) -> str:
    """The folder name EXO expects for a model: `org/name` -> `org--name`."""
    return model.replace("/", "--")


def node_spec(value: str, source: str = "--nodes") -> str:
    """Accept a node target: `local`, an ssh_config alias, or `user@host[:port]`."""
    v = (value or "").strip()
    if v == "local" or (_ALIAS_RE.match(v) and "@" not in v):
        return v
    user, sep, rest = v.partition("@")
    if not sep or not _USER_RE.match(user):
        raise InputError(f"{source}: invalid node {value!r}; {NODE_HELP}")
    host, port = _split_port(rest)
    host_ok = _HOST_RE.match(host) or _IPV6_RE.match(host)
    if not host_ok or (port is not None and not 1 <= port <= 65535):
        raise InputError(f"{source}: invalid node {value!r}; {NODE_HELP}")
    return v


def _split_port(rest: str) -> tuple[str, int | None]:
    """Split `host[:port]` (IPv6 in brackets); a non-numeric port yields port 0 (invalid)."""
    if rest.startswith("["):
        host, _, tail = rest.partition("]")
        host += "]"
        port_text = tail[1:] if tail.startswith(":") else (None if not tail else "x")
    else:
        host, sep, port_text = rest.partition(":")
        port_text = port_text if sep else None
    if port_text is None:
        return host, None
    return host, int(port_text) if port_text.isdigit() else 0


API_URL_HELP = "expected http[s]://host[:port] (or host[:port]), comma-separated, e.g. http://10.0.0.2:52415"


def api_urls(value: str, source: str, default_port: int) -> tuple[str, ...]:
    """Accept a comma list of EXO API base URLs `http[s]://host[:port]` or `host[:port]` (no port: `default_port`,
    EXO's API port); no credentials, path, query or fragment. Returns them as `scheme://host:port`, in order."""
    out: list[str] = []
    for item in (v.strip() for v in str(value or "").split(",")):
        if not item:
            continue
        scheme, sep, rest = item.partition("://")
        if not sep:
            scheme, rest = "http", item
        rest = rest[:-1] if rest.endswith("/") else rest
        host, port_no = _split_port(rest)
        host_ok = bool(_HOST_RE.match(host) or _IPV6_RE.match(host))
        if scheme.lower() not in ("http", "https") or not host_ok or port_no == 0 \
                or (port_no is not None and not 1 <= port_no <= 65535):
            raise InputError(f"{source}: invalid EXO API URL {item!r}; {API_URL_HELP}")
        url = f"{scheme.lower()}://{host}:{port_no or default_port}"
        if url in out:
            raise InputError(f"{source}: {url} is listed twice; give each node's API once")
        out.append(url)
    if not out:
        raise InputError(f"{source}: no EXO API URL given; {API_URL_HELP}")
    return tuple(out)


def node_path(value: str, source: str) -> str:
    """Accept a path on a node: absolute or `~/…`, no control characters, no `..` components."""
    v = (value or "").strip()
    if not v or _PATH_BAD.search(v):
        raise InputError(f"{source}: invalid path {value!r}; expected an absolute path or one starting with ~/")
    if not (v.startswith("/") or v == "~" or v.startswith("~/")):
        raise InputError(f"{source}: path {value!r} must be absolute or start with ~/")
    if ".." in v.split("/"):
        raise InputError(f"{source}: path {value!r} must not contain '..'")
    return v.rstrip("/") or "/"


def port(value: str | int, source: str) -> int:
    """Accept a TCP port 1..65535."""
    try:
        p = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{source}: invalid port {value!r}; expected an integer 1-65535") from None
    if not 1 <= p <= 65535:
        raise InputError(f"{source}: invalid port {value!r}; expected an integer 1-65535")
    return p


def count(value: str | int, source: str) -> int:
    """Accept a non-negative integer count."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{source}: invalid count {value!r}; expected a whole number >= 0") from None
    if n < 0:
        raise InputError(f"{source}: invalid count {value!r}; expected a whole number >= 0")
    return n


def boolean(value: str | bool, source: str) -> bool:
    """Accept 1/0, true/false, yes/no, on/off (case-insensitive)."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise InputError(f"{source}: invalid boolean {value!r}; expected true/false, yes/no, 1/0")


def duration_s(value: str | float, source: str) -> float:
    """Accept a duration: seconds, or a number with s/m/h/d (e.g. 90, 45s, 10m, 24h, 7d)."""
    v = str(value).strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", v)
    if not m:
        raise InputError(f"{source}: invalid duration {value!r}; expected e.g. 90, 45s, 10m, 24h or 7d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def ratio(value: str | float, source: str) -> float:
    """Accept a ratio of at least 1 (e.g. 3, 2.5): how many times one figure may be another."""
    try:
        v = float(str(value).strip())
    except ValueError:
        v = 0.0
    if not v >= 1.0 or v == float("inf"):
        raise InputError(f"{source}: invalid ratio {value!r}; expected a number of at least 1, e.g. 3 or 2.5")
    return v


def namespace(value: str, source: str) -> str:
    """Accept an EXO discovery namespace: letters, digits, '.', '_', '-' (1..64 chars)."""
    v = (value or "").strip()
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", v):
        raise InputError(f"{source}: invalid namespace {value!r}; expected 1-64 of letters, digits, '.', '_', '-'")
    return v


def include_patterns(value: str, source: str) -> tuple[str, ...]:
    """Accept a comma- or space-separated list of `hf download --include` / `--exclude` glob patterns."""
    parts = tuple(p for p in re.split(r"[,\s]+", value or "") if p)
    for p in parts:
        if _PATH_BAD.search(p) or p.startswith("-") or ".." in p.split("/"):
            raise InputError(f"{source}: invalid hf download pattern {p!r}; expected globs like '*.safetensors'")
    return parts
