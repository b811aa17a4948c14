"""gRPC servicer of cinema.v1.UserService: proto -> domain -> proto, nothing else.

Use cases are blocking (SQLAlchemy, argon2), so each runs in the worker threads. The
password fields are input only: :func:`user_to_proto` is the one way an account leaves
the service, and it copies neither the password nor its hash.
"""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from cinema.v1 import user_pb2, user_pb2_grpc
from services.common.context import Role
from services.common.interceptors import current_request
from services.common.wire import populated_fields, timestamp
from services.user.domain import Registration, User, UserFields
from services.user.service import AccessGrant, UserService

_ROLES_TO_PROTO = {Role.USER: user_pb2.ROLE_USER, Role.ADMIN: user_pb2.ROLE_ADMIN}
_ROLES_FROM_PROTO: dict[user_pb2.Role.ValueType, str] = {
    user_pb2.ROLE_USER: Role.USER.value,
    user_pb2.ROLE_ADMIN: Role.ADMIN.value,
}

AUTHORIZATION_SCHEME = "Bearer"  # what LoginResponse.token_type always says


def user_to_proto(user: User) -> user_pb2.User:
    return user_pb2.User(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        role=_ROLES_TO_PROTO[user.role],
        create_time=timestamp(user.create_time),
        update_time=timestamp(user.update_time),
    )


def _role(value: user_pb2.Role.ValueType) -> str:
    # Proto3 enums are open: a number this service does not know reaches the domain as
    # text, which refuses it with a field violation instead of guessing.
    if value == user_pb2.ROLE_UNSPECIFIED:
        return ""
    return _ROLES_FROM_PROTO.get(value, str(value))


def _fields(message: user_pb2.User) -> UserFields:
    return UserFields(
        email=message.email,
        display_name=message.display_name,
        password=message.password,
        current_password=message.current_password,
        role=_role(message.role),
    )


def _grant_to_proto(grant: AccessGrant) -> user_pb2.LoginResponse:
    reply = user_pb2.LoginResponse(
        access_token=grant.access_token,
        token_type=AUTHORIZATION_SCHEME,
        expire_time=timestamp(grant.expire_time),
        expires_in=grant.expires_in,
        refresh_token=grant.refresh_token,
        session_id=grant.session_id,
    )
    if grant.refresh_expire_time is not None:
        reply.refresh_expire_time.CopyFrom(timestamp(grant.refresh_expire_time))
    return reply


class UserServicer(user_pb2_grpc.UserServiceServicer):
    def __init__(self, service: UserService) -> None:
        self._service = service

    def CreateUser(
        self, request: user_pb2.CreateUserRequest, context: grpc.ServicerContext
    ) -> user_pb2.User:
        made = self._service.create_user(
            _fields(request.user), current_request(), request_id=request.request_id
        )
        if isinstance(made, Registration):
            # The fields as stored and nothing else: no id, no times, the same for a
            # known and a new address.
            return user_pb2.User(
                email=made.email, display_name=made.display_name, role=user_pb2.ROLE_USER
            )
        return user_to_proto(made)

    def VerifyEmail(
        self, request: user_pb2.VerifyEmailRequest, context: grpc.ServicerContext
    ) -> user_pb2.User:
        return user_to_proto(self._service.verify_email(request.token, request.password))

    def GetUser(
        self, request: user_pb2.GetUserRequest, context: grpc.ServicerContext
    ) -> user_pb2.User:
        user = self._service.get_user(request.id, current_request())
        return user_to_proto(user)

    def ListUsers(
        self, request: user_pb2.ListUsersRequest, context: grpc.ServicerContext
    ) -> user_pb2.ListUsersResponse:
        page = self._service.list_users(request.page_size, request.page_token)
        return user_pb2.ListUsersResponse(
            users=[user_to_proto(u) for u in page.items], next_page_token=page.next_page_token
        )

    def UpdateUser(
        self, request: user_pb2.UpdateUserRequest, context: grpc.ServicerContext
    ) -> user_pb2.User:
        user = self._service.update_user(
            request.user.id,
            _fields(request.user),
            list(request.update_mask.paths),
            populated_fields(request.user),
            current_request(),
        )
        return user_to_proto(user)

    def DeleteUser(
        self, request: user_pb2.DeleteUserRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self._service.delete_user(request.id, current_request())
        return empty_pb2.Empty()

    def Login(
        self, request: user_pb2.LoginRequest, context: grpc.ServicerContext
    ) -> user_pb2.LoginResponse:
        return _grant_to_proto(self._service.login(request.email, request.password))

    def RefreshToken(
        self, request: user_pb2.RefreshTokenRequest, context: grpc.ServicerContext
    ) -> user_pb2.LoginResponse:
        return _grant_to_proto(
            self._service.refresh_token(request.refresh_token, current_request())
        )

    def Logout(
        self, request: user_pb2.LogoutRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self._service.logout(current_request())
        return empty_pb2.Empty()

    def ListSessions(
        self, request: user_pb2.ListSessionsRequest, context: grpc.ServicerContext
    ) -> user_pb2.ListSessionsResponse:
        caller = current_request()
        page = self._service.list_sessions(
            request.user_id, request.page_size, request.page_token, caller
        )
        current = caller.principal.session_id if caller.principal else ""
        return user_pb2.ListSessionsResponse(
            sessions=[
                user_pb2.Session(
                    id=session.id,
                    user_id=session.user_id,
                    create_time=timestamp(session.create_time),
                    refresh_time=timestamp(session.refresh_time),
                    expire_time=timestamp(session.expire_time),
                    current=bool(current) and session.id == current,
                )
                for session in page.items
            ],
            next_page_token=page.next_page_token,
        )

    def RevokeSession(
        self, request: user_pb2.RevokeSessionRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self._service.revoke_session(request.id, current_request())
        return empty_pb2.Empty()

    def ListOwnedMovies(
        self, request: user_pb2.ListOwnedMoviesRequest, context: grpc.ServicerContext
    ) -> user_pb2.ListOwnedMoviesResponse:
        page = self._service.list_owned_movies(
            request.user_id, request.page_size, request.page_token, current_request()
        )
        return user_pb2.ListOwnedMoviesResponse(
            owned_movies=[
                user_pb2.OwnedMovie(
                    movie_id=owned.movie_id,
                    title=owned.title,
                    order_id=owned.order_id,
                    purchase_time=timestamp(owned.purchase_time),
                )
                for owned in page.items
            ],
            next_page_token=page.next_page_token,
        )
