"""Value types the config models share: strict models, paths relative to the config
file, positive durations, secrets that may come from files, addresses.

Relative paths resolve against the config file's directory, which the loader passes as the
validation context ``{"base_dir": Path}`` (the working directory without one).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from runwatch.config.errors import SECRET_FIELDS
from runwatch.store.base import redact_url


class StrictModel(BaseModel):
    """Frozen, and an unknown key is an error rather than a silently ignored typo."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def base_dir(info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return Path(base) if base is not None else Path.cwd()


def resolve(path: str | Path, info: ValidationInfo) -> Path:
    """``path`` with ``~`` expanded, relative to the config file's directory; symlinks kept
    (a Kubernetes ConfigMap is a symlink farm whose targets change on update)."""
    expanded = Path(path).expanduser()
    return Path(os.path.normpath(base_dir(info) / expanded))


@dataclass(frozen=True, slots=True)
class _Unusable:
    """Stands in for a secret whose ``X_file`` could not be used; the field reports it."""

    reason: str


def _secret_value(value: Any) -> Any:
    if isinstance(value, _Unusable):
        raise PydanticCustomError("secret_file", "{reason}", {"reason": value.reason})
    return value


Secret = Annotated[SecretStr, BeforeValidator(_secret_value), Field(min_length=1)]


def _secret_file_properties(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The JSON Schema of a :class:`WithSecrets` model: each secret ``X`` may be
    ``X_file`` instead (the path of a file holding it)."""
    properties = schema.setdefault("properties", {})
    for name in sorted(SECRET_FIELDS & set(model.model_fields)):
        properties[f"{name}_file"] = {
            "type": "string", "minLength": 1,
            "description": f"the path of a file holding {name} (instead of {name})",
        }


class WithSecrets(StrictModel):
    """A model whose secret fields ``X`` may be given as ``X_file`` instead."""

    model_config = ConfigDict(json_schema_extra=_secret_file_properties)

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in SECRET_FIELDS & set(cls.model_fields):
            key = f"{name}_file"
            if key not in data:
                continue
            path = data.pop(key)
            if name in data:
                data[name] = _Unusable(f"give {name} or {key}, not both")
            else:
                data[name] = _read_secret(path, info)
        return data


def _read_secret(path: Any, info: ValidationInfo) -> str | _Unusable:
    if not isinstance(path, str) or not path:
        return _Unusable("expected the path of a file holding the secret")
    resolved = resolve(path, info)
    try:
        text = resolved.read_text(encoding="utf-8")
    except OSError as exc:
        return _Unusable(f"cannot read secret file '{resolved}': {exc.strerror or exc}")
    except UnicodeDecodeError:
        return _Unusable(f"secret file '{resolved}' is not UTF-8 text")
    text = text.rstrip("\r\n")
    return text if text else _Unusable(f"secret file '{resolved}' is empty")


def host_port(value: str, *, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` (``[::1]:9465`` for IPv6) → its parts; ValueError in plain words."""
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:
        host, port = value, ""
    host = host.removeprefix("[").removesuffix("]")
    if not port and default_port is not None:
        port = str(default_port)
    if not host or not port:
        raise ValueError(f"invalid address {value!r}: expected host:port")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {value!r}: port must be a number from 0 to 65535")
    return host, int(port)


def is_local_host(host: str) -> bool:
    """Whether ``host`` (as ``host_port`` gives it) is this machine: a loopback address
    or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address(value: str) -> str:
    host_port(value)
    return value


def _check_email(value: str) -> str:
    if "\r" in value or "\n" in value or "@" not in value.strip("@"):
        raise ValueError(f"invalid email address {value!r}")
    return value


def _check_url(value: str) -> str:
    shown = redact_url(value)  # a webhook's query string may be its secret
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"invalid URL {shown!r}: expected http:// or https://")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:  # its text may quote the host part, credentials and all
        raise ValueError(f"invalid URL {shown!r}: its host or port is not valid") from None
    if "@" in parts.netloc:
        # urllib would not log in with them: they would go to DNS as part of the host name.
        raise ValueError(f"invalid URL {shown!r}: user:password@ in a URL is not supported;"
                         " give secrets in their own fields (bearer_token, api_key)")
    return value


def _check_base_url(value: str) -> str:
    if urlsplit(value).query or "#" in value:
        raise ValueError(f"invalid URL {redact_url(value)!r}: a base URL takes no query"
                         " string or fragment (paths are appended to it)")
    return value


Address = Annotated[str, AfterValidator(_address)]
Email = Annotated[str, AfterValidator(_check_email)]
Url = Annotated[str, AfterValidator(_check_url)]  # http(s), no credentials
BaseUrl = Annotated[Url, AfterValidator(_check_base_url)]  # an API's base: no query either
