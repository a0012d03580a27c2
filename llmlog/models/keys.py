"""API keys: only a key's sha256 is stored."""

import hashlib
import secrets

from django.db import models


def hash_api_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKey(models.Model):
    """A key for the REST API. Only its sha256 is stored; the key itself is shown once."""

    PREFIX = "llk_"

    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"
        READER = "reader"

    class Scope(models.TextChoices):
        INGEST = "ingest"
        READ = "read"

    name = models.CharField(max_length=100, blank=True, default="")
    # What an operator sees to tell keys apart: the first characters of the key.
    key_prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    userorgid = models.CharField(
        max_length=64, blank=True, default="", help_text="The org this key belongs to; empty: platform-wide."
    )
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.MEMBER)
    scopes = models.JSONField(default=list, help_text='A list of "ingest" and "read".')
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "llmlog_api_key"
        verbose_name = "API key"

    def __str__(self) -> str:
        owner = self.userorgid or "platform"
        return f"{self.key_prefix}… ({owner}, {self.role})"

    @property
    def is_platform(self) -> bool:
        return not self.userorgid

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def assign_new_secret(self) -> str:
        """Give this key a new secret; returns the raw key, which is not kept anywhere."""
        raw = self.PREFIX + secrets.token_urlsafe(32)
        self.key_hash = hash_api_key(raw)
        self.key_prefix = raw[:12]
        return raw
