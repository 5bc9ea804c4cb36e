"""`auth: {type: google_service_account, key_file: ..., scopes: [...]}`: a Google service-account key
file, exchanged for a short-lived access token through google-auth (the optional extra
`syncrunner[google]`): google-auth signs a JWT with the key's private key and posts it to the key
file's `token_uri`; the token is renewed before it expires. The private key and every token are
registered with the redactor at once; no message carries the key file's contents, only its path."""
from __future__ import annotations

import json
from pathlib import Path

from syncrunner.core.redact import register_secret


class GoogleAuthError(Exception):
    """The key file cannot be used or the token endpoint refused it (message already safe)."""


class ServiceAccountToken:
    """Callable: the current access token, fetched or renewed when needed. The key file is read at
    the first request, so a missing or broken one fails the run like a refused credential (recorded
    in SyncHistory), not while the run is being set up."""

    def __init__(self, key_file: str, scopes: list[str], label: str):
        self.key_file, self.scopes, self.label = key_file, scopes, label
        self.credentials = None

    def _load(self):
        try:
            from google.oauth2 import service_account
        except ImportError:
            raise GoogleAuthError("auth type google_service_account needs google-auth: "
                                  "pip install 'syncrunner[google]'") from None
        info = _read_key(self.key_file, self.label)
        try:
            return service_account.Credentials.from_service_account_info(info, scopes=self.scopes)
        except (ValueError, KeyError) as e:
            raise GoogleAuthError(f"the {self.label} at {self.key_file} is not usable: {_safe(e)}") from None

    def __call__(self) -> str:
        if self.credentials is None:
            self.credentials = self._load()
        creds = self.credentials
        if not creds.valid:
            from google.auth.exceptions import GoogleAuthError as _Err
            from google.auth.transport.requests import Request
            try:
                creds.refresh(Request())
            except _Err as e:
                raise GoogleAuthError(f"the token endpoint refused the {self.label}: {_safe(e)}") from None
            register_secret(creds.token)
        return creds.token


def _read_key(key_file: str, label: str) -> dict:
    try:
        text = Path(key_file).read_text(encoding="utf-8")
    except OSError as e:
        raise GoogleAuthError(f"cannot read the {label} at {key_file}: {e.strerror}") from None
    try:
        info = json.loads(text)
    except ValueError:
        raise GoogleAuthError(f"the {label} at {key_file} is not JSON") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise GoogleAuthError(f"the {label} at {key_file} is not a service-account key "
                              f"(\"type\": \"service_account\")")
    # each line of the PEM body is a secret (the whole PEM contains them, in any encoding of it;
    # one 1,700-character secret would make the redactor's pattern needlessly deep)
    for line in str(info.get("private_key", "")).splitlines():
        if len(line) >= 16 and "PRIVATE KEY" not in line:
            register_secret(line)
    register_secret(str(info.get("private_key_id", "")) or None)
    return info


def _safe(e: Exception) -> str:
    """google-auth errors carry the token endpoint's answer; the redactor hides any secret in it."""
    from syncrunner.core.redact import redact
    text = redact(str(e.args[0] if e.args else e))
    return text if len(text) < 400 else text[:400] + "..."
