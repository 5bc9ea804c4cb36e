"""HTTP source authentication, from the spec's `source.auth`:

    {type: bearer, token: ${HUBSPOT_TOKEN}}
    {type: header, name: Authorization, value: 'Token token="${CALLRAIL_API_KEY}"'}
    {type: basic, username: ${X_USER}, password: ${X_PASSWORD}}
    {type: query, param: api_key, value: ${X_API_KEY}}
    {type: google_service_account, key_file: ${GOOGLE_APPLICATION_CREDENTIALS}, scopes: [...]}
    {type: hmac, secret: ${X_SECRET}, secret_encoding: base64, message: '${X_ID}{epoch}',
     value: '${X_ID}:{epoch}:{signature}'}     # a header signed per request (MarketSharp)

Every credential value is registered with the redactor, whatever its variable is called (basic
auth's `user:password` too, for its base64), and so is the header or parameter name that carries
it, so its value is hidden by position as well. The label used in error messages names the
environment variable(s) it came from, never the value."""
from __future__ import annotations

import base64
import hmac
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests
import requests.auth
import yaml

from syncrunner.core.redact import register_auth_name, register_basic_auth, register_secret

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Auth:
    type: str = "none"
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    basic: tuple[str, str] | None = None
    label: str = "no credentials"
    token: Callable[[], str] | None = None  # a token fetched and renewed at run time (googleauth.py)
    signer: "HmacSigner | None" = None

    @classmethod
    def from_options(cls, options: dict | None, spec_path: str | None = None) -> "Auth":
        options = options or {}
        kind = options.get("type", "none")
        env = _env_names(spec_path)
        where = f" (from {', '.join('${' + n + '}' for n in env)})" if env else ""
        if kind == "bearer":
            token = str(options["token"])
            register_secret(token)
            return cls(kind, headers={"Authorization": f"Bearer {token}"}, label=f"bearer token{where}")
        if kind == "header":
            name, value = options.get("name", "Authorization"), str(options["value"])
            register_secret(value)
            register_auth_name(name)
            return cls(kind, headers={name: value}, label=f"{name} header{where}")
        if kind == "headers":
            headers = {str(k): str(v) for k, v in options["headers"].items()}
            for name, value in headers.items():
                register_secret(value)
                register_auth_name(name)
            return cls(kind, headers=headers, label=f"{' + '.join(headers)} headers{where}")
        if kind == "basic":
            user, password = str(options["username"]), str(options.get("password", ""))
            register_basic_auth(user, password)
            return cls(kind, basic=(user, password), label=f"basic auth user/password{where}")
        if kind == "query":
            param, value = options["param"], str(options["value"])
            register_secret(value)
            register_auth_name(param)
            return cls(kind, params={param: value}, label=f"API key in query parameter '{param}'{where}")
        if kind == "hmac":
            signer = HmacSigner.from_options(options)
            return cls(kind, signer=signer, label=f"HMAC-signed {signer.header} header{where}")
        if kind == "google_service_account":
            from syncrunner.sources.http.googleauth import ServiceAccountToken
            label = f"service-account key file{where}"
            return cls(kind, label=label, token=ServiceAccountToken(
                str(options["key_file"]), list(options.get("scopes") or []), label))
        return cls()

    def apply(self, session: requests.Session) -> None:
        session.headers.update(self.headers)
        if self.basic:
            session.auth = self.basic
        if self.signer:
            session.auth = self.signer

    def refresh(self, session: requests.Session) -> None:
        """Before each request: a token fetched at run time goes in, renewed when it has expired."""
        if self.token is not None:
            session.headers["Authorization"] = f"Bearer {self.token()}"


@dataclass
class HmacSigner(requests.auth.AuthBase):
    """A header computed for each request: `{signature}` in `value` is the base64 HMAC of `message`
    under the secret, `{epoch}` in both is the current Unix time in whole seconds (MarketSharp:
    `companyId:apiKey:epoch:base64(HMAC-SHA256(base64decode(secret), companyId+apiKey+epoch))`)."""

    secret: bytes
    message: str
    value: str
    header: str = "Authorization"
    algorithm: str = "sha256"

    @classmethod
    def from_options(cls, o: dict) -> "HmacSigner":
        raw = str(o["secret"])
        register_secret(raw)
        header = o.get("header", "Authorization")
        register_auth_name(header)
        secret = base64.b64decode(raw) if o.get("secret_encoding", "text") == "base64" else raw.encode()
        return cls(secret, str(o["message"]), str(o["value"]), header, o.get("algorithm", "sha256"))

    def sign(self, epoch: int) -> str:
        message = self.message.replace("{epoch}", str(epoch)).encode()
        digest = hmac.new(self.secret, message, self.algorithm).digest()
        return self.value.replace("{epoch}", str(epoch)).replace("{signature}", base64.b64encode(digest).decode())

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers[self.header] = self.sign(int(time.time()))
        return r


def _env_names(spec_path: str | None) -> list[str]:
    """The ${VAR} names written under source.auth in the spec file (read raw, before interpolation),
    so an auth failure can say which variable to check."""
    if not spec_path:
        return []
    try:
        raw = yaml.safe_load(Path(spec_path).read_text(encoding="utf-8"))
        auth = raw["source"]["auth"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []
    names: list[str] = []
    values = [v for k, v in auth.items() if k not in ("type", "headers")] + list((auth.get("headers") or {}).values())
    for value in values:
        if isinstance(value, str):
            names += [n for n in _REF.findall(value) if n not in names]
    return names
