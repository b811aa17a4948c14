"""Baselines: the design users would pick instead of Cinema, built well, to measure against.

The baseline is the catalogue half of Cinema done the usual way: a **movie** and a **cast**
service as FastAPI apps, each one uvicorn process (like ``cinema up --replicas 1``),
behind **nginx** (Debian's ``nginx``) on loopback, on their own PostgreSQL databases with
Cinema's tables, created by Cinema's own Alembic migrations. It speaks Cinema's JSON
routes and shapes, so the same scenarios (:class:`bench.scenarios.GetMovieJson`,
:class:`bench.scenarios.CreateMovieJson`) and fixtures run against nginx's port unchanged.
It is not a strawman: every choice below is the faster or the one a careful team makes,
and the ones that were measured say so.

* :mod:`bench.baselines.movie_app`, :mod:`bench.baselines.cast_app`: the two apps.
  CreateMovie needs an admin token, validates with Cinema's own rules, checks its cast ids
  with ONE ``GET /api/v1/casts:batchGet?ids=...`` through nginx, and writes the movie and
  its link rows in one transaction.
* :mod:`bench.baselines.api`: settings, JSON models, Cinema's JSON error body, admin auth.
* :mod:`bench.baselines.storage`: the three database access variants.
* :mod:`bench.baselines.nginx`: the nginx.conf and why it is what it is.
* :mod:`bench.baselines.runner`: :func:`~bench.baselines.runner.start_baseline` and
  :class:`~bench.baselines.runner.Baseline` for the suite and the tests.
* ``python -m bench.baselines up|run``: the same by hand.

Choices, and why
----------------

**Database access: asyncpg directly, from ``async def`` endpoints** (``BASELINE_DB_ACCESS``,
default ``asyncpg``). Measured on this 2-core machine, shared with other work, closed loop
of 32 through nginx, 6 s after 2 s of warm-up, the three variants interleaved twice
(``python -m bench.baselines up --db-access X``, then ``run get-movie-json`` and
``run create-movie-json`` with ``--state``), CPU per call of the movie process (the
robust figure: throughputs moved 2x with the neighbours' load, CPU per call much less):

==========================================  ===============  ==================
variant                                     GetMovie movie   CreateMovie movie
==========================================  ===============  ==================
asyncpg, ``async def``                      405-537 µs       1,544-1,746 µs
SQLAlchemy 2 Core async on asyncpg          733-744 µs       2,391-2,870 µs
SQLAlchemy 2 Core on psycopg2, ``def``      762-921 µs       2,194-2,649 µs
==========================================  ===============  ==================

Two earlier rounds (before the SQLAlchemy variants got their own autocommit read pool)
ranked them the same way; asyncpg's GetMovie was 267-337 µs when the machine was quieter.

The ``def`` endpoints pay two threadpool hops per call (the endpoint, then FastAPI runs the
response validation in the threadpool too) and the GIL between the loop and the workers;
SQLAlchemy's async layer pays its greenlet bridge and result processing per statement.
A team that cares about this endpoint's cost uses asyncpg's pool; the other two stay
selectable for comparison. Reads are single statements in autocommit, writes one
transaction; pools are opened at start and never overflow (no connection opened under
load), as in Cinema.

**The HTTP client for the cast check: aiohttp**, one ``ClientSession`` per process with a
keep-alive connection pool to nginx. httpx was the first pick (FastAPI's documentation
uses it), but measured on the same batch request through nginx its ``AsyncClient`` cost
2.2-2.8 ms of client CPU per request against aiohttp's 0.27-0.32 ms: with httpx the client
would cost more than the cast service it calls. aiohttp is as common and actively released
(3.14.5 here).

**JSON: FastAPI's own path, Pydantic models as return types.** FastAPI (0.163 here)
serializes a declared return type straight to JSON bytes in Pydantic's Rust core, which
its documentation calls faster than ``ORJSONResponse`` (deprecated for that reason); no
extra package. The models use lowerCamelCase aliases and accept both spellings;
``response_model_exclude_defaults`` leaves out empty fields, as proto3 JSON does.

**Auth costs the same as Cinema's:** the same :class:`services.common.auth.TokenVerifier`
(Ed25519 via PyJWT, issuer and audience ``cinema``, verified tokens remembered until they
expire), from an ``async`` dependency so it costs no threadpool hop.

**Server: uvicorn with uvloop and httptools**, access log off, no ``Server`` header,
keep-alive timeout above nginx's upstream one, one process per app (``--workers 1``: the
same one process per service as the Cinema runs it is compared with).

**nginx:** ``worker_processes auto`` (two here), like Envoy's default of one worker per
core; ``keepalive 32`` upstreams with HTTP/1.1 and ``Connection ""``; no access log. See
:mod:`bench.baselines.nginx`.

What the baseline does not do that Cinema does: gRPC, reflection, health checks and
retries at the proxy, rich validation of every field of every resource, Update, Delete
and the FULL movie view; it serves the routes the benchmark calls (get, list and create
of movies and casts, and the cast batch read).
"""
