"""Use cases of the user service. Each write is one transaction and each read one
statement (no transaction needed); errors are domain errors.

Decisions a client can observe:

* Registration always makes a ROLE_USER account. Asking for ROLE_ADMIN is refused with
  INVALID_ARGUMENT on ``user.role`` rather than silently ignored, so a client never
  believes it got a role it did not get; ROLE_USER or no role is accepted.
* Changing one's own password or email needs ``current_password`` (so a stolen token
  alone cannot lock the owner out of the account): missing or wrong, it is
  INVALID_ARGUMENT with a field violation on ``user.current_password`` (reason
  CURRENT_PASSWORD_MISMATCH when wrong), so a form can point at the field; it is not
  UNAUTHENTICATED, which would tell the client its token is bad. An admin resetting
  somebody else's password does not know that password and needs no current one.
* Only an admin changes a role, and only an admin whose stored role is still admin: a
  demoted admin's unexpired token cannot promote anyone. Sending an account's role
  unchanged (a client echoing the resource back) is no change and needs no admin.
* The last admin can be neither deleted nor demoted (FAILED_PRECONDITION, reason
  LAST_ADMIN): nobody could manage the shop afterwards.
* Login gives the same UNAUTHENTICATED (reason INVALID_CREDENTIALS, same message) for an
  unknown email and for a wrong password, after the same argon2 work.
* Registration does not tell whether an email has an account: anyone but an admin gets
  the same answer and the same work for a known and a new address, and the account is
  made only when the link mailed to the address is followed (VerifyEmail); a known
  address gets a notice instead of a link. An admin's CreateUser makes the account at
  once, since an admin may list every account anyway.
* CreateUser is idempotent (:mod:`services.common.idempotency`): a repeat with the same
  key answers what the first call answered, without hashing the password again or
  sending a second mail. The fingerprint
  leaves the password out (see :func:`_request_hash`), so a repeat that changed only the
  password answers the first account, with the first password.

argon2 is deliberately slow, so hashes are computed before a write transaction opens
(SQLite has one writer at a time). The one verification that needs the stored hash, the
current password on a password change, runs inside the transaction so that the check and
the write cannot be separated by a concurrent change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import math
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from cinema.v1.events_pb2 import SessionRevoked
from services.common import handled_calls, pagination, tracing
from services.common.auth import TokenIssuer
from services.common.clock import Clock, utc_now
from services.common.context import Principal, RequestContext, Role
from services.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Violations,
    require_id,
)
from services.common.idempotency import RequestRecord, create_once, fingerprint, request_key
from services.common.ids import new_id
from services.common.masks import resolve_update_mask
from services.user import events
from services.user.domain import (
    EMAIL_MAX,
    PASSWORD_MAX,
    REGISTRATION_TOKEN_MAX,
    REGISTRATION_TTL,
    THROTTLE_WINDOW,
    UPDATABLE_FIELDS,
    CheckedFields,
    EmailTaken,
    OwnedMovie,
    PaidMovie,
    RefreshUse,
    Registration,
    Session,
    User,
    UserFields,
    check_email,
    check_fields,
    check_password,
    email_key,
    login_wait,
)
from services.user.mail import Mail
from services.user.passwords import PasswordHasher
from services.user.repository import UserUnitOfWork

logger = logging.getLogger(__name__)

UnitOfWorkFactory = Callable[..., UserUnitOfWork]


class MailWaker(Protocol):
    """What is told that a commit queued mail (:class:`services.user.mail_relay.MailRelay`)."""

    def wake(self) -> None: ...


FIRST_ADMIN_DISPLAY_NAME = "Administrator"


@dataclass(frozen=True)
class AccessGrant:
    """What a login or a refresh answers: a signed access token, when it expires and how
    many seconds are left until then, and the session's new refresh token."""

    access_token: str = field(repr=False)
    expire_time: dt.datetime
    expires_in: int
    refresh_token: str = field(default="", repr=False)
    session_id: str = ""
    refresh_expire_time: dt.datetime | None = None


#: Longest refresh token accepted (ours are 43 characters).
REFRESH_TOKEN_MAX = 200
#: A revocation outlives the session's last access token by this much (clock skew and the
#: verifier's leeway).
_REVOCATION_MARGIN = dt.timedelta(seconds=10)


def _hash_token(token: str) -> str:
    """How a refresh token is stored: 256 random bits need no slow hash."""
    return hashlib.sha256(token.encode()).hexdigest()


def _invalid_refresh_token() -> Unauthenticated:
    return Unauthenticated(
        "the refresh token is not valid (unknown, expired, or its session has ended)",
        reason="REFRESH_TOKEN_INVALID",
    )


def _check_sent(value: str, field: str, limit: int, violations: Violations) -> None:
    """A secret the caller sends (a password, a token): required and at most ``limit``
    characters, used exactly as sent (never trimmed)."""
    if not value:
        violations.add(field, "is required")
    elif len(value) > limit:
        violations.add(field, f"must be at most {limit} characters")


def _invalid_registration_token() -> InvalidArgument:
    problem = (
        "the link is not valid: unknown, expired, or its address has an account already; "
        "register again, or sign in"
    )
    return InvalidArgument(
        [FieldViolation("token", problem)], problem, reason="REGISTRATION_TOKEN_INVALID"
    )


def _bad_credentials() -> Unauthenticated:
    # One error for every way a login can fail on its credentials: telling an unknown
    # email apart from a wrong password would let anyone probe who has an account.
    return Unauthenticated("wrong email or password", reason="INVALID_CREDENTIALS")


def _request_hash(clean: CheckedFields) -> str:
    """The fingerprint of a CreateUser: the account's fields as they would be stored, but
    not the password.

    The fingerprint is stored in the clear beside the account, and a sha256 of a password
    is an unsalted hash that anyone who reads the table can test guesses against at
    billions a second: the salted, slow argon2 hash must stay the only trace of it. Email
    and display name are in the row anyway, so their fingerprint tells nothing new.
    """
    return fingerprint(
        {"email": clean.email, "display_name": clean.display_name, "role": clean.role.value}
    )


def _update_fingerprint(
    user_id: str, clean: CheckedFields, paths: Collection[str]
) -> dict[str, object]:
    """What an UpdateUser sets. A new password counts by its presence only: a fingerprint
    is stored, and a hash of a secret is a guessable copy of it."""
    values: dict[str, object] = {
        "email": clean.email,
        "display_name": clean.display_name,
        "role": str(clean.role),
        "password": True,
    }
    return {"id": user_id, **{path: values[path] for path in sorted(paths)}}


def _keep_an_admin(admin_ids: Sequence[str], user_id: str) -> None:
    """Refuse to remove the admin role from ``user_id`` when it is the only admin."""
    if list(admin_ids) == [user_id]:
        raise FailedPrecondition(
            "the last admin cannot be deleted or demoted; make another admin first",
            reason="LAST_ADMIN",
        )


class UserService:
    """Register, read, change and delete accounts; log in; make the first admin."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        passwords: PasswordHasher,
        tokens: TokenIssuer,
        clock: Clock = utc_now,
        *,
        session_ttl_seconds: int = 30 * 24 * 3600,
        mail: MailWaker | None = None,
        public_url: str = "http://localhost:8080",
    ) -> None:
        self._uow = uow
        self._mail = mail
        self._public_url = public_url.rstrip("/")
        self._passwords = passwords
        self._tokens = tokens
        self._clock = clock
        self._session_ttl = dt.timedelta(seconds=session_ttl_seconds)

    def create_user(
        self,
        fields: UserFields,
        context: RequestContext | None = None,
        *,
        request_id: str = "",
    ) -> User | Registration:
        """Register an account with ROLE_USER.

        An admin (and a caller outside a call: ``context`` None) makes the account at once
        and gets it; EmailTaken when the email is in use. Anyone else gets a
        :class:`Registration` (see :meth:`_register`). On a repeat of the create (same
        ``request_id``, or the gateway's retry of the same call), what the first one made.
        """
        violations = Violations()
        clean = check_fields(fields, "user", violations)
        if clean.role is not Role.USER:
            violations.add(
                "user.role",
                "registration always gives ROLE_USER; an admin changes roles with UpdateUser",
            )
        key = request_key(request_id, context.call_id if context else None, violations)
        violations.raise_if_any()
        record = RequestRecord(key, _request_hash(clean)) if key else None
        principal = context.principal if context else None
        if context is not None and (principal is None or not principal.is_admin):
            return self._register(clean, record)

        def create() -> User:
            password_hash = self._passwords.hash(clean.password)
            now = self._clock()
            user = User.new(clean.email, clean.display_name, Role.USER, password_hash, now)
            with self._uow() as uow:
                # Two registrations of one email at once: the unique constraint decides.
                uow.users.add(user, record)
                uow.commit()
            return user

        return create_once(
            record, "user", find=self._find_by_request_key, create=create, reveal_id=False
        )

    def _register(self, clean: CheckedFields, record: RequestRecord | None) -> Registration:
        """A registration that makes the account when its mailed link is followed
        (:meth:`verify_email`), without telling the caller whether the address has one.

        The same work and the same answer either way: the password is hashed, a
        registration is stored, one mail is queued (a link when the address has no account,
        a notice when it has one, whose registration keeps no password and makes nothing),
        and the caller gets the fields back. An account usable at once would tell: a Login
        with the password just chosen would work for a new address only. Expired
        registrations are deleted on the way.
        """
        if self._mail is None:
            raise FailedPrecondition(
                "registration is closed: this service has no mailer to send its link",
                reason="REGISTRATION_CLOSED",
            )
        relay = self._mail

        def register() -> Registration:
            password_hash = self._passwords.hash(clean.password)
            token = secrets.token_urlsafe(32)
            now = self._clock()
            with self._uow() as uow:
                uow.registrations.delete_expired(now)
                taken = uow.users.get_by_email(email_key(clean.email)) is not None
                registration = Registration(
                    token_hash=_hash_token(token),
                    email=clean.email,
                    display_name=clean.display_name,
                    password_hash=None if taken else password_hash,
                    create_time=now,
                    expire_time=now + REGISTRATION_TTL,
                )
                uow.registrations.add(registration, record)
                mail = self._notice_mail(clean) if taken else self._link_mail(clean, token)
                # Queued in this transaction: it leaves once the registration is stored,
                # and the call does not wait for the mail server (user/mail_relay.py).
                uow.mail.add(mail, now, tracing.current_traceparent())
                uow.commit()
            relay.wake()
            return registration

        return create_once(
            record,
            "registration",
            find=self._find_registration,
            create=register,
            reveal_id=False,
        )

    # Neither mail quotes anything the registrant typed but the address it goes to: anyone
    # may register any address, and the display name would let them write to its owner.

    def _link_mail(self, clean: CheckedFields, token: str) -> Mail:
        link = f"{self._public_url}/verify#token={token}"
        hours = int(REGISTRATION_TTL.total_seconds() // 3600)
        return Mail(
            to=clean.email,
            subject="Confirm your Cinema account",
            text=(
                "Hello,\n\n"
                "someone, we hope you, asked to open a Cinema account with this address.\n"
                f"To open it, follow this link within {hours} hours:\n\n{link}\n\n"
                "If it was not you, ignore this mail: no account is made.\n"
            ),
        )

    def _notice_mail(self, clean: CheckedFields) -> Mail:
        return Mail(
            to=clean.email,
            subject="Someone tried to register with your Cinema address",
            text=(
                "Hello,\n\n"
                "someone asked to open a Cinema account with this address, which has an\n"
                "account already, so nothing was changed.\n\n"
                f"If it was you, sign in at {self._public_url}/login; an admin can reset a\n"
                "forgotten password. If it was not you, ignore this mail.\n"
            ),
        )

    def _find_registration(self, key: str) -> tuple[Registration, str] | None:
        with self._uow(read_only=True) as uow:
            return uow.registrations.find_by_request_key(key)

    def verify_email(self, token: str, password: str) -> User:
        """The account of the registration whose link carried ``token``, made now, or the
        one made when the link was followed before; ``password`` must be the one the
        registration chose.

        The password makes the mailbox alone not enough, and the password alone not
        enough: whoever registers somebody else's address chose its password, and the
        owner, following a link they never asked for, would otherwise open an account
        that stranger can sign in to.

        One error for every token that makes nothing (unknown, expired, a notice's, or its
        address given an account since by another registration or an admin): only the
        holder of the mail can get this far, but a token is no way to ask about accounts.
        """
        violations = Violations()
        _check_sent(token, "token", REGISTRATION_TOKEN_MAX, violations)
        _check_sent(password, "password", PASSWORD_MAX, violations)
        violations.raise_if_any()
        token_hash = _hash_token(token)

        def usable(registration: Registration | None) -> Registration:
            if (
                registration is None
                or registration.password_hash is None
                or registration.expire_time <= self._clock()
            ):
                raise _invalid_registration_token()
            return registration

        # argon2 before the write transaction (SQLite has one writer at a time); the row's
        # hash never changes, so the check holds for the transaction below.
        with self._uow(read_only=True) as uow:
            found = usable(uow.registrations.get(token_hash))
        if not self._passwords.verify(cast(str, found.password_hash), password):
            raise InvalidArgument(
                [FieldViolation("password", "is not the password chosen when registering")],
                reason="REGISTRATION_PASSWORD_MISMATCH",
            )
        now = self._clock()
        with self._uow() as uow:
            registration = usable(uow.registrations.get(token_hash, for_update=True))
            if registration.user_id is not None:
                made = uow.users.get(registration.user_id)
                if made is None:  # deleted since
                    raise _invalid_registration_token()
                return made
            user = User.new(
                registration.email,
                registration.display_name,
                Role.USER,
                cast(str, registration.password_hash),
                now,
            )
            try:
                uow.users.add(user)
            except EmailTaken:
                raise _invalid_registration_token() from None
            uow.registrations.made(token_hash, user.id)
            uow.commit()
        logger.info("registration made user %s", user.id)
        return user

    def _find_by_request_key(self, key: str) -> tuple[User, str] | None:
        with self._uow(read_only=True) as uow:
            return uow.users.find_by_request_key(key)

    def get_user(self, user_id: str, context: RequestContext) -> User:
        """The account: the caller's own, or any for an admin."""
        require_id(user_id, "id")
        # Ownership before existence: a user learns nothing about other ids.
        context.require_self_or_admin(user_id)
        with self._uow(read_only=True) as uow:
            user = uow.users.get(user_id)
        if user is None:
            raise NotFound("user", user_id)
        return user

    def list_users(self, page_size: int, page_token: str) -> pagination.Page[User]:
        """Accounts oldest first (ids are time-ordered); the RPC is admin-only."""

        def fetch(after: str | None, limit: int) -> list[User]:
            with self._uow(read_only=True) as uow:
                return uow.users.list_page(after, limit)

        return pagination.keyset_page(page_size, page_token, {}, fetch)

    def update_user(
        self,
        user_id: str,
        fields: UserFields,
        mask: Sequence[str],
        populated: Sequence[str],
        context: RequestContext,
    ) -> User:
        """Change the fields named by ``mask`` (or every populated one) of an account; a
        repeat of the call (:mod:`services.common.handled_calls`) answers it as it is now."""
        require_id(user_id, "user.id")
        principal = context.require_self_or_admin(user_id)
        paths = resolve_update_mask(mask, allowed=UPDATABLE_FIELDS, populated=populated)
        violations = Violations()
        clean = check_fields(fields, "user", violations, only=paths)
        own_account = principal.subject == user_id
        if "password" in paths and own_account and not fields.current_password:
            violations.add("user.current_password", "is required to change the password")
        violations.raise_if_any()
        call = handled_calls.call_of(
            context, "UpdateUser", _update_fingerprint(user_id, clean, paths)
        )

        def update() -> User:
            # Inside the work: a repeat refused a password check (RESOURCE_EXHAUSTED) after
            # its first try committed is answered from the record all the same.
            new_hash = self._passwords.hash(clean.password) if "password" in paths else None
            return self._update_user(user_id, clean, paths, fields, new_hash, principal, call)

        return handled_calls.once(call, self._uow, update, lambda: self.get_user(user_id, context))

    def _update_user(
        self,
        user_id: str,
        clean: CheckedFields,
        paths: Collection[str],
        fields: UserFields,
        new_hash: str | None,
        principal: Principal,
        call: handled_calls.Call | None,
    ) -> User:
        own_account = principal.subject == user_id
        with self._uow() as uow:
            handled_calls.claim(uow, call, self._clock())
            # Admin rows first, then the account: every transaction that touches roles
            # takes its locks in the same order, so two of them cannot deadlock.
            admin_ids = uow.users.lock_admin_ids() if "role" in paths else []
            current = uow.users.get(user_id, for_update=True)
            if current is None:
                raise NotFound("user", user_id)
            role = clean.role if "role" in paths else current.role
            if role is not current.role:
                self._check_role_change(principal, admin_ids, current)
            email_changes = "email" in paths and email_key(clean.email) != email_key(current.email)
            if own_account and email_changes and not fields.current_password:
                raise InvalidArgument(
                    [FieldViolation("user.current_password", "is required to change the email")]
                )
            if (
                (new_hash is not None or email_changes)
                and own_account
                and not self._passwords.verify(current.password_hash, fields.current_password)
            ):
                raise InvalidArgument(
                    [
                        FieldViolation(
                            "user.current_password", "does not match the account's password"
                        )
                    ],
                    reason="CURRENT_PASSWORD_MISMATCH",
                )
            updated = dataclasses.replace(
                current,
                email=clean.email if "email" in paths else current.email,
                display_name=clean.display_name
                if "display_name" in paths
                else current.display_name,
                role=role,
                password_hash=new_hash if new_hash is not None else current.password_hash,
                update_time=self._clock(),
            )
            uow.users.save(updated)
            if role is not current.role:
                # Its tokens carry the old role: every session ends, the caller's too.
                self._end_sessions(uow, user_id, SessionRevoked.REASON_ROLE_CHANGED)
            elif new_hash is not None:
                # Whoever knew the old password is signed out; the one who changed it not.
                keep = principal.session_id if own_account else None
                self._end_sessions(uow, user_id, SessionRevoked.REASON_PASSWORD_CHANGED, keep)
            uow.commit()
        return updated

    @staticmethod
    def _check_role_change(principal: Principal, admin_ids: Sequence[str], target: User) -> None:
        # The stored role, not only the token's claim: the admin rows are locked, so the
        # caller cannot be demoted while this runs, and a demoted admin's unexpired token
        # cannot hand the role back to anyone.
        if not principal.is_admin or principal.subject not in admin_ids:
            raise PermissionDenied("only an admin may change a role", reason="ROLE_CHANGE_DENIED")
        if target.is_admin:
            _keep_an_admin(admin_ids, target.id)

    def delete_user(self, user_id: str, context: RequestContext) -> None:
        """Delete an account: the caller's own, or any for an admin; never the last admin."""
        require_id(user_id, "id")
        context.require_self_or_admin(user_id)
        call = handled_calls.call_of(context, "DeleteUser", {"id": user_id})
        handled_calls.once(call, self._uow, lambda: self._delete_user(user_id, call), lambda: None)

    def _delete_user(self, user_id: str, call: handled_calls.Call | None) -> None:
        with self._uow() as uow:
            handled_calls.claim(uow, call, self._clock())
            current = uow.users.get(user_id)
            if current is None:
                raise NotFound("user", user_id)
            if current.is_admin:
                _keep_an_admin(uow.users.lock_admin_ids(), user_id)
            if not uow.users.delete(user_id):
                raise NotFound("user", user_id)
            uow.library.forget_user(user_id)
            self._end_sessions(uow, user_id, SessionRevoked.REASON_USER_DELETED)
            uow.outbox.add(events.user_deleted(user_id), self._clock())
            uow.commit()

    def list_owned_movies(
        self, user_id: str, page_size: int, page_token: str, context: RequestContext
    ) -> pagination.Page[OwnedMovie]:
        """The movies an account paid for, newest first: the caller's own, or any for an admin."""
        require_id(user_id, "user_id")
        context.require_self_or_admin(user_id)

        def fetch(before: str | None, limit: int) -> list[OwnedMovie]:
            with self._uow(read_only=True) as uow:
                return uow.library.list_page(user_id, before, limit)

        return pagination.keyset_page(page_size, page_token, {"user_id": user_id}, fetch)

    def add_purchase(
        self,
        uow: UserUnitOfWork,
        user_id: str,
        order_id: str,
        movies: Sequence[PaidMovie],
        *,
        paid: dt.datetime,
        titles_as_of: dt.datetime,
    ) -> None:
        """A paid order's movies join the buyer's library (event handler: runs in the
        handler's unit of work, which commits). An account deleted since has no library."""
        if uow.users.get(user_id) is not None:
            uow.library.add_purchase(user_id, order_id, movies, paid, titles_as_of)

    def rename_owned_movie(
        self, uow: UserUnitOfWork, movie_id: str, title: str, as_of: dt.datetime
    ) -> None:
        """A movie's new title reaches every library that holds it (event handler)."""
        uow.library.rename(movie_id, title, as_of)

    def login(self, email: str, password: str) -> AccessGrant:
        """A new session for the account with ``email`` and ``password``: an access token
        and a refresh token.

        Not one transaction on purpose: the lookup is a read, the argon2 verification
        runs outside any transaction (it is slow, and must not hold a connection or
        SQLite's write lock), and upgrading a hash made with old parameters is a short
        write of its own that only swaps the hash it verified.

        Failed logins are counted per email, whether an account has it or not, and after
        a few an attempt must wait (:func:`~services.user.domain.login_wait`): refused with
        RESOURCE_EXHAUSTED before any password check, so the answer and its timing are the
        same for a known and an unknown email.
        """
        violations = Violations()
        if not email.strip():
            violations.add("email", "is required")
        elif len(email.strip()) > EMAIL_MAX:
            # No account can have it, so saying so reveals nothing about accounts.
            violations.add("email", f"must be at most {EMAIL_MAX} characters")
        _check_sent(password, "password", PASSWORD_MAX, violations)
        violations.raise_if_any()
        key = email_key(email)
        now = self._clock()
        with self._uow(read_only=True) as uow:
            user = uow.users.get_by_email(key)
            failed = uow.login_failures.get(key)
        if failed is not None and (wait := login_wait(*failed, now)) > 0:
            seconds = max(1, math.ceil(wait))
            raise ResourceExhausted(
                f"too many failed logins for this email; try again in {seconds} s",
                reason="LOGIN_THROTTLED",
                retry_after=wait,
            )
        if user is None:
            self._passwords.verify_dummy(password)
            self._count_failure(key, failed, now)
            raise _bad_credentials()
        if not self._passwords.verify(user.password_hash, password):
            self._count_failure(key, failed, now)
            raise _bad_credentials()
        if self._passwords.needs_rehash(user.password_hash):
            self._upgrade_hash(user, password)
        # Whole seconds, as in the token, so that expires_in is exactly the TTL.
        now = self._clock().replace(microsecond=0)
        session = Session(new_id(), user.id, now, now, now + self._session_ttl)
        refresh_token = secrets.token_urlsafe(32)
        with self._uow() as uow:
            if failed is not None:
                uow.login_failures.clear(key)
            uow.sessions.add(session)
            uow.sessions.add_refresh_token(_hash_token(refresh_token), session.id, now)
            uow.commit()
        return self._grant(user, session, refresh_token, now)

    def _grant(
        self, user: User, session: Session, refresh_token: str, now: dt.datetime
    ) -> AccessGrant:
        issued = self._tokens.issue(user.id, user.role, session_id=session.id, now=now)
        return AccessGrant(
            access_token=issued.token,
            expire_time=issued.expires_at,
            expires_in=int((issued.expires_at - now).total_seconds()),
            refresh_token=refresh_token,
            session_id=session.id,
            refresh_expire_time=session.expire_time,
        )

    def _count_failure(
        self, key: str, failed: tuple[int, dt.datetime] | None, now: dt.datetime
    ) -> None:
        recent = failed is not None and now - failed[1] <= THROTTLE_WINDOW
        with self._uow() as uow:
            uow.login_failures.record(key, (failed[0] if failed and recent else 0) + 1, now)
            uow.commit()

    def refresh_token(
        self, refresh_token: str, context: RequestContext | None = None
    ) -> AccessGrant:
        """New tokens of the session ``refresh_token`` belongs to; the token is spent.

        A token spent before ends its session (OAuth 2.0 Security BCP, refresh token
        rotation): one of the two holders is not the owner, and the server cannot tell
        which. The session ends in its own committed transaction, then the call fails.

        Except for a repeat of the call that spent it (the same gateway call id: Envoy
        retrying a call whose replica died after its commit, so the caller never saw the
        new tokens) while the token that call issued is still unused: that token is
        retired and the repeat answers new ones. So Envoy may repeat RefreshToken.
        """
        violations = Violations()
        _check_sent(refresh_token, "refresh_token", REFRESH_TOKEN_MAX, violations)
        violations.raise_if_any()
        now = self._clock().replace(microsecond=0)
        reused = False
        spent_hash = _hash_token(refresh_token)
        call_id = context.call_id if context is not None else None
        with self._uow() as uow:
            found = uow.sessions.use_refresh_token(spent_hash, now, call_id)
            if found is None:
                raise _invalid_refresh_token()
            session_id, use = found
            session = uow.sessions.get(session_id, for_update=True)
            if session is None or not session.live(now):
                raise _invalid_refresh_token()
            user = uow.users.get(session.user_id)
            if use is RefreshUse.REPEAT and not uow.sessions.retire_unused_child(spent_hash, now):
                use = RefreshUse.REUSED
            if use is RefreshUse.REUSED or user is None:
                reused = use is RefreshUse.REUSED
                self._end_session(uow, session, SessionRevoked.REASON_REFRESH_TOKEN_REUSED)
                uow.commit()
            else:
                renewed = secrets.token_urlsafe(32)
                uow.sessions.add_refresh_token(_hash_token(renewed), session.id, now, spent_hash)
                uow.sessions.touch(session.id, now)
                uow.commit()
        if reused:
            logger.warning("refresh token of session %s used twice: session ended", session_id)
            raise Unauthenticated(
                "this refresh token was used before: its session has ended, log in again",
                reason="REFRESH_TOKEN_REUSED",
            )
        if user is None:
            raise _invalid_refresh_token()
        return self._grant(user, session, renewed, now)

    def logout(self, context: RequestContext) -> None:
        """End the caller's session (the access token's ``sid``)."""
        principal = context.require_principal()
        if not principal.session_id:
            raise FailedPrecondition("this access token belongs to no session", reason="NO_SESSION")
        call = handled_calls.call_of(context, "Logout", {"session_id": principal.session_id})

        def end() -> None:
            with self._uow() as uow:
                handled_calls.claim(uow, call, self._clock())
                session = uow.sessions.get(principal.session_id, for_update=True)
                if session is not None and session.user_id == principal.subject:
                    self._end_session(uow, session, SessionRevoked.REASON_LOGOUT)
                uow.commit()

        handled_calls.once(call, self._uow, end, lambda: None)

    def list_sessions(
        self, user_id: str, page_size: int, page_token: str, context: RequestContext
    ) -> pagination.Page[Session]:
        """An account's live sessions, newest first: the caller's own, or any for an admin."""
        require_id(user_id, "user_id")
        context.require_self_or_admin(user_id)
        now = self._clock()

        def fetch(before: str | None, limit: int) -> list[Session]:
            with self._uow(read_only=True) as uow:
                return uow.sessions.list_live(user_id, before, limit, now)

        return pagination.keyset_page(page_size, page_token, {"user_id": user_id}, fetch)

    def revoke_session(self, session_id: str, context: RequestContext) -> None:
        """End a session: one of the caller's own, or anyone's for an admin. Someone else's
        session is NOT_FOUND for a non-admin, as if it did not exist."""
        principal = context.require_principal()
        require_id(session_id, "id")
        call = handled_calls.call_of(context, "RevokeSession", {"id": session_id})

        def end() -> None:
            with self._uow() as uow:
                handled_calls.claim(uow, call, self._clock())
                session = uow.sessions.get(session_id, for_update=True)
                if session is None or (
                    not principal.is_admin and session.user_id != principal.subject
                ):
                    raise NotFound("session", session_id)
                self._end_session(uow, session, SessionRevoked.REASON_REVOKED)
                uow.commit()

        handled_calls.once(call, self._uow, end, lambda: None)

    def _end_session(
        self, uow: UserUnitOfWork, session: Session, reason: SessionRevoked.Reason.ValueType
    ) -> None:
        """Revoke ``session`` and tell every service (in ``uow``'s transaction)."""
        now = self._clock()
        if uow.sessions.revoke(session.id, now, SessionRevoked.Reason.Name(reason)):
            until = now + dt.timedelta(seconds=self._tokens.ttl_seconds) + _REVOCATION_MARGIN
            uow.outbox.add(events.session_revoked(session, until, reason), now)

    def _end_sessions(
        self,
        uow: UserUnitOfWork,
        user_id: str,
        reason: SessionRevoked.Reason.ValueType,
        keep: str | None = None,
    ) -> None:
        for session in uow.sessions.live_of_user(user_id, self._clock()):
            if session.id != keep:
                self._end_session(uow, session, reason)

    def _upgrade_hash(self, user: User, password: str) -> None:
        new_hash = self._passwords.hash(password)
        with self._uow() as uow:
            # Only if nobody changed the password since it was verified.
            if uow.users.replace_password_hash(user.id, user.password_hash, new_hash):
                uow.commit()
                logger.info("upgraded the password hash of user %s", user.id)

    def ensure_first_admin(self, email: str, password: str) -> User | None:
        """Create the admin ``email`` when no admin exists yet; the new admin or ``None``.

        Safe when several replicas start at once: they all may see no admin, but only one
        insert of the email passes the unique constraint; the others find the admin it
        made. An email that belongs to an account that is not an admin is refused
        (FailedPrecondition) rather than promoted: whoever registered it first, with a
        password of their choosing, would otherwise become the admin. Bad values give
        InvalidArgument with the environment variable as the field.
        """
        violations = Violations()
        clean_email = check_email(email, "CINEMA_ADMIN_EMAIL", violations)
        check_password(password, "CINEMA_ADMIN_PASSWORD", violations)
        violations.raise_if_any()
        if self._admin_exists():
            return None
        password_hash = self._passwords.hash(password)
        now = self._clock()
        admin = User.new(clean_email, FIRST_ADMIN_DISPLAY_NAME, Role.ADMIN, password_hash, now)
        try:
            with self._uow() as uow:
                if uow.users.admin_exists():
                    return None
                uow.users.add(admin)
                uow.commit()
        except EmailTaken:
            if self._admin_exists():
                return None  # another replica made it a moment ago
            raise FailedPrecondition(
                "CINEMA_ADMIN_EMAIL belongs to an existing account that is not an admin; "
                "choose another email for the first admin",
                reason="ADMIN_EMAIL_TAKEN",
            ) from None
        logger.info("created the first admin, user %s", admin.id)
        return admin

    def _admin_exists(self) -> bool:
        with self._uow(read_only=True) as uow:
            return uow.users.admin_exists()
