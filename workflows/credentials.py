"""Outbound credentials (models.Credential): secrets steps must send, so they are
encrypted rather than hashed, with a Fernet key derived from SECRET_KEY (and
SECRET_KEY_FALLBACKS, so rotating the key keeps them readable until they are
saved again). A secret is never shown after it is set, never rendered into an
expression and never written to a step record."""

import base64
import hashlib
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from workflows.models import Credential


def _fernet() -> MultiFernet:
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet(
        [
            Fernet(
                base64.urlsafe_b64encode(
                    hashlib.sha256(f"iolinker.credential:{k}".encode()).digest()
                )
            )
            for k in keys
        ]
    )


def credential_set_secret(*, credential: Credential, secret: str) -> None:
    credential.secret_encrypted = _fernet().encrypt(secret.encode()).decode()
    credential.save(update_fields=["secret_encrypted", "updated_at"])


@dataclass(frozen=True)
class Resolved:
    base_url: str
    model: str
    secret: str


class CredentialError(Exception):
    pass


def credential_resolve(*, name: str, kind: str) -> Resolved:
    credential = Credential.objects.filter(name=name).first()
    if credential is None:
        raise CredentialError(f"no credential named {name!r}")
    if credential.kind != kind:
        raise CredentialError(f"credential {name!r} is a {credential.kind} credential, not {kind}")
    secret = ""
    if credential.secret_encrypted:
        try:
            secret = _fernet().decrypt(credential.secret_encrypted.encode()).decode()
        except InvalidToken:
            raise CredentialError(
                f"credential {name!r} cannot be decrypted (SECRET_KEY changed?); set it again"
            ) from None
    return Resolved(base_url=credential.base_url, model=credential.model, secret=secret)
