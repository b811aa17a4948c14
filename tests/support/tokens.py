"""Signing keys and access tokens for tests, made with the production code paths."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from services.common.auth import TokenIssuer, ensure_keypair
from services.common.context import Role


@dataclass(frozen=True)
class SigningKeys:
    private_path: pathlib.Path
    public_path: pathlib.Path
    issuer: TokenIssuer
    #: The tests' own NATS server, which every service they start publishes to.
    nats_url: str = ""

    @classmethod
    def create(cls, directory: pathlib.Path, *, nats_url: str = "") -> SigningKeys:
        private_path, public_path = ensure_keypair(directory)
        issuer = TokenIssuer(
            private_path.read_bytes(), issuer="cinema", audience="cinema", ttl_seconds=900
        )
        return cls(private_path, public_path, issuer, nats_url)

    def token(self, subject: str, role: Role = Role.USER) -> str:
        return self.issuer.issue(subject, role).token

    def metadata(self, subject: str, role: Role = Role.USER) -> tuple[tuple[str, str], ...]:
        """gRPC call metadata carrying a fresh token for ``subject``."""
        return (("authorization", f"Bearer {self.token(subject, role)}"),)

    @property
    def mail_dir(self) -> pathlib.Path:
        """Where the user services the tests start write their mail (tests/support/mail.py)."""
        return self.private_path.parent / "mail"

    def env(self) -> dict[str, str]:
        """The settings every service needs: auth (argon2 kept light for test speed), a
        mail directory, and the tests' NATS server (never the machine's: its streams
        outlive the tests)."""
        env = {
            "CINEMA_MAIL_URL": f"file://{self.mail_dir.resolve()}",
            "CINEMA_JWT_PUBLIC_KEY_FILE": str(self.public_path),
            "CINEMA_JWT_PRIVATE_KEY_FILE": str(self.private_path),
            "CINEMA_ARGON2_TIME_COST": "1",
            "CINEMA_ARGON2_MEMORY_KIB": "1024",
            "CINEMA_ARGON2_PARALLELISM": "1",
        }
        if self.nats_url:
            env["NATS_URL"] = self.nats_url
        return env
