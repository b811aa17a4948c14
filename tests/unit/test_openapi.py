"""The OpenAPI document (gen/openapi/cinema.openapi.json) says what the JSON API does.

The committed file is what the front door serves at ``GET /openapi.json``; these tests read
it as a client would. That it matches the protos is checked twice: here against a fresh
generation from the committed descriptor set, and by ``python tools/protogen.py --check``
(CI), which rebuilds the descriptor set from ``protos/`` as well.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate
from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator

from gateway.http_bindings import bindings

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "gen" / "openapi" / "cinema.openapi.json"
DESCRIPTORS = ROOT / "gen" / "descriptors" / "cinema.binpb"
GENERATOR = ROOT / "tools" / "openapi.py"
SCHEMAS = "#/components/schemas/"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return loaded


def _template(path: str) -> str:
    """OpenAPI spells ``{movie.id}`` as ``{id}``: one template per path, whatever the field."""
    return re.sub(r"\{[^}]*\.([^}.]+)\}", r"{\1}", path)


def _operation(document: dict[str, Any], verb: str, path: str) -> dict[str, Any]:
    # OpenAPI spells `{movie.id}` as `{id}`: one template per path, whatever the field.
    operation: dict[str, Any] = document["paths"][re.sub(r"\{[^}]*\.([^}.]+)\}", r"{\1}", path)][
        verb
    ]
    return operation


def _schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_committed_document_is_a_fresh_generation() -> None:
    fresh = _generate("--descriptors", str(DESCRIPTORS))
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout == DOCUMENT.read_text(), "run `python tools/protogen.py`"
    assert fresh.stdout.endswith("}\n")
    assert fresh.stdout == _generate("--descriptors", str(DESCRIPTORS)).stdout


def test_every_ref_resolves(document: dict[str, Any]) -> None:
    # The validator checks the document's shape, not that each $ref lands somewhere.
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        assert _resolve(document, ref) is not None, ref


def test_every_http_binding_is_an_operation(document: dict[str, Any]) -> None:
    routes = list(bindings())
    assert routes
    for binding in routes:
        operation = _operation(document, binding.verb.lower(), binding.path)
        assert operation["operationId"] == f"{binding.service.name}_{binding.method.name}"
        assert operation["tags"] == [binding.service.name]
    served = {(verb, path) for path, verbs in document["paths"].items() for verb in verbs}
    assert served == {(b.verb.lower(), _template(b.path)) for b in routes}


def test_get_movie_takes_the_id_in_the_path(document: dict[str, Any]) -> None:
    path, view = _operation(document, "get", "/api/v1/movies/{id}")["parameters"]
    assert (path["name"], path["in"], path["required"]) == ("id", "path", True)
    assert path["schema"] == {"type": "string"}
    # The rest of the request comes from the query string.
    assert (view["name"], view["in"]) == ("view", "query")
    assert view["schema"] == {"$ref": SCHEMAS + "cinema.v1.MovieView"}


def test_list_movies_query_parameters_are_the_unbound_request_fields(
    document: dict[str, Any],
) -> None:
    parameters = _operation(document, "get", "/api/v1/movies")["parameters"]
    by_name = {p["name"]: p for p in parameters}
    assert set(by_name) == {"pageSize", "pageToken", "genre", "castId"}
    assert all(p["in"] == "query" for p in parameters)
    assert by_name["pageSize"]["schema"]["type"] == "integer"
    assert by_name["pageToken"]["schema"]["type"] == "string"
    # A repeated field is a repeated query parameter.
    (ids,) = _operation(document, "get", "/api/v1/movies:batchGet")["parameters"]
    assert ids["name"] == "ids"
    assert ids["schema"] == {"type": "array", "items": {"type": "string"}}


def test_patch_takes_the_resource_as_body_and_update_mask_in_the_query(
    document: dict[str, Any],
) -> None:
    operation = _operation(document, "patch", "/api/v1/movies/{movie.id}")
    names = [(p["name"], p["in"]) for p in operation["parameters"]]
    assert names == [("id", "path"), ("updateMask", "query")]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    patch = _resolve(document, schema["$ref"])
    # An update sends only the fields it changes: nothing is required in the body.
    assert "required" not in patch
    assert set(patch["properties"]) == set(_schema(document, "cinema.v1.Movie")["properties"])


def test_body_star_leaves_path_fields_out_of_the_body(document: dict[str, Any]) -> None:
    operation = _operation(document, "post", "/api/v1/orders/{id}:pay")
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"paymentToken", "requestId"}
    assert body["required"] == ["paymentToken", "requestId"]
    assert [p["name"] for p in operation["parameters"]] == ["id"]


def test_bodies_are_proto3_json(document: dict[str, Any]) -> None:
    money = _schema(document, "cinema.v1.Money")["properties"]
    # lowerCamelCase names; int64 as a string, as the transcoder prints it.
    assert set(money) == {"currencyCode", "amountMinor"}
    assert money["amountMinor"]["type"] == "string"
    assert money["amountMinor"]["format"] == "int64"
    login = _schema(document, "cinema.v1.LoginResponse")["properties"]
    assert login["expiresIn"]["type"] == "string"
    assert login["expireTime"]["type"] == "string"
    assert login["expireTime"]["format"] == "date-time"
    movie = _schema(document, "cinema.v1.Movie")["properties"]
    assert movie["price"]["$ref"] == SCHEMAS + "cinema.v1.Money"
    assert movie["castIds"]["type"] == "array"


def test_enums_are_their_names(document: dict[str, Any]) -> None:
    status = _schema(document, "cinema.v1.OrderStatus")
    assert status["type"] == "string"
    assert {"ORDER_STATUS_PENDING", "ORDER_STATUS_PAID"} <= set(status["enum"])
    assert _schema(document, "cinema.v1.Order")["properties"]["status"]["$ref"] == (
        SCHEMAS + "cinema.v1.OrderStatus"
    )
    query = {p["name"]: p for p in _operation(document, "get", "/api/v1/orders")["parameters"]}
    assert query["status"]["schema"]["$ref"] == SCHEMAS + "cinema.v1.OrderStatus"


@pytest.mark.parametrize(
    ("verb", "path"),
    [("post", "/api/v1/movies"), ("delete", "/api/v1/movies/{id}"), ("get", "/api/v1/orders")],
)
def test_rpcs_that_need_a_token_require_bearer_auth(
    document: dict[str, Any], verb: str, path: str
) -> None:
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    operation = _operation(document, verb, path)
    assert operation["security"] == [{"bearerAuth": []}]
    assert {"401", "403"} <= set(operation["responses"])


@pytest.mark.parametrize(
    ("verb", "path"),
    [("get", "/api/v1/movies/{id}"), ("post", "/api/v1/auth/login"), ("post", "/api/v1/users")],
)
def test_public_rpcs_need_no_token(document: dict[str, Any], verb: str, path: str) -> None:
    operation = _operation(document, verb, path)
    assert operation["security"] == []
    assert "403" not in operation["responses"]


def test_error_statuses_fit_the_route(document: dict[str, Any]) -> None:
    get_movie = _operation(document, "get", "/api/v1/movies/{id}")["responses"]
    assert {"200", "400", "404", "429", "503", "504"} <= set(get_movie)
    assert "409" not in get_movie
    list_movies = _operation(document, "get", "/api/v1/movies")["responses"]
    assert "404" not in list_movies
    register = _operation(document, "post", "/api/v1/users")["responses"]
    assert register["409"]["description"].startswith("ALREADY_EXISTS")
    error = _resolve(document, get_movie["404"]["$ref"])
    assert error["content"]["application/json"]["schema"]["$ref"] == SCHEMAS + "google.rpc.Status"


def test_error_body_is_google_rpc_status_with_details(document: dict[str, Any]) -> None:
    status = _schema(document, "google.rpc.Status")["properties"]
    assert status["code"]["type"] == "integer"
    assert status["message"]["type"] == "string"
    details = [item["$ref"] for item in status["details"]["items"]["anyOf"]]
    assert SCHEMAS + "ErrorInfoDetail" in details
    assert SCHEMAS + "BadRequestDetail" in details
    error_info = _schema(document, "ErrorInfoDetail")
    assert error_info["properties"]["@type"]["const"] == (
        "type.googleapis.com/google.rpc.ErrorInfo"
    )
    assert {"reason", "domain", "metadata"} <= set(
        _schema(document, "google.rpc.ErrorInfo")["properties"]
    )
    violation = _schema(document, "google.rpc.BadRequest.FieldViolation")["properties"]
    assert {"field", "description"} <= set(violation)


def test_field_behavior_marks_required_and_output_only(document: dict[str, Any]) -> None:
    movie = _schema(document, "cinema.v1.Movie")
    assert movie["required"] == ["title", "price"]
    assert movie["properties"]["id"]["readOnly"] is True
    assert movie["properties"]["createTime"]["readOnly"] is True
    assert "readOnly" not in movie["properties"]["title"]
    assert set(_schema(document, "cinema.v1.LoginRequest")["required"]) == {"email", "password"}
    user = _schema(document, "cinema.v1.User")["properties"]
    assert user["password"]["writeOnly"] is True
    create = _operation(document, "post", "/api/v1/movies")["requestBody"]
    assert create["required"] is True


def test_proto_comments_are_descriptions(document: dict[str, Any]) -> None:
    get_movie = _operation(document, "get", "/api/v1/movies/{id}")
    assert get_movie["description"].startswith("Returns one movie by id;")
    assert get_movie["summary"].endswith(".")
    assert _schema(document, "cinema.v1.Movie")["description"] == "A movie for sale."
    money = _schema(document, "cinema.v1.Money")["properties"]
    assert "minor units" in money["amountMinor"]["description"]
    tags = {tag["name"]: tag.get("description") for tag in document["tags"]}
    assert tags["MovieService"] == "The movie catalogue."


def test_servers_point_at_the_same_origin(document: dict[str, Any]) -> None:
    assert document["servers"] == [{"url": "/"}]


def test_against_an_older_contract_reports_removed_routes(tmp_path: pathlib.Path) -> None:
    same = _generate("--descriptors", str(DESCRIPTORS), "--against", str(DESCRIPTORS))
    assert same.returncode == 0, same.stderr
    # The newer contract loses GetMovie's HTTP rule.
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes())
    (movie,) = [f for f in files.file if f.name == "cinema/v1/movie.proto"]
    (get_movie,) = [m for m in movie.service[0].method if m.name == "GetMovie"]
    get_movie.options.ClearExtension(annotations_pb2.http)
    newer = tmp_path / "newer.binpb"
    newer.write_bytes(files.SerializeToString())
    removed = _generate("--descriptors", str(newer), "--against", str(DESCRIPTORS))
    assert removed.returncode == 1
    assert "JSON route removed: GET /api/v1/movies/{id}" in removed.stderr
