"""Generate everything that is derived from ``protos/``.

One command turns the contracts into:

* ``gen/python/cinema/v1/*_pb2.py`` and ``*_pb2_grpc.py`` with ``.pyi`` type stubs
  (grpcio-tools + mypy-protobuf): the package every server and client imports as
  ``cinema.v1``;
* ``gen/descriptors/cinema.binpb``: a ``FileDescriptorSet`` with every import and source
  info, which Envoy's gRPC-JSON transcoder and ``buf lint`` read;
* ``gen/openapi/cinema.openapi.json``: the OpenAPI 3.1 document of the JSON routes
  (``tools/openapi.py``), which the front door serves at ``GET /openapi.json``.

``python tools/protogen.py`` regenerates; ``python tools/protogen.py --check`` regenerates
into a temporary directory and fails when the committed files differ (CI runs it).
``--descriptor-set FILE [--protos DIR]`` writes only the descriptor set of another copy of the
contracts, built the same way (``scripts/check-breaking`` builds the previous contract so).
Third-party protos are not copied: ``google/api`` and ``google/rpc`` come from
googleapis-common-protos, ``google/protobuf`` from grpcio-tools.
"""

from __future__ import annotations

import argparse
import filecmp
import pathlib
import shutil
import sys
import tempfile

import google.api
import openapi  # tools/openapi.py, beside this script
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GEN_ROOT = ROOT / "gen"
# google/api and google/rpc ship as .proto files inside googleapis-common-protos.
GOOGLEAPIS_ROOT = pathlib.Path(google.api.__path__[0]).parent.parent
WELL_KNOWN_ROOT = pathlib.Path(protoc.__file__).parent / "_proto"
# Rich error details must be in the descriptor set or the transcoder drops them.
EXTRA_DESCRIPTOR_FILES = ["google/rpc/status.proto", "google/rpc/error_details.proto"]


# Under gen/. The front door (gateway/pages.py) serves this file at GET /openapi.json.
OPENAPI_FILE = pathlib.Path("openapi") / "cinema.openapi.json"


def proto_files(proto_root: pathlib.Path = PROTO_ROOT) -> list[str]:
    return sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))


def run_protoc(args: list[str], proto_root: pathlib.Path = PROTO_ROOT) -> None:
    includes = [f"-I{proto_root}", f"-I{GOOGLEAPIS_ROOT}", f"-I{WELL_KNOWN_ROOT}"]
    # The mypy-protobuf plugins sit beside this interpreter, which need not be on PATH.
    bindir = pathlib.Path(sys.executable).parent
    plugins = [
        f"--plugin=protoc-gen-{name}={bindir / f'protoc-gen-{name}'}"
        for name in ("mypy", "mypy_grpc")
    ]
    code = protoc.main(["grpc_tools.protoc", *includes, *plugins, *args])
    if code != 0:
        raise SystemExit(f"protoc failed ({code}) for {' '.join(args)}")


def generate(out: pathlib.Path) -> None:
    python_out = out / "python"
    python_out.mkdir(parents=True)
    files = proto_files()
    run_protoc(
        [
            f"--python_out={python_out}",
            f"--grpc_python_out={python_out}",
            f"--mypy_out={python_out}",
            f"--mypy_grpc_out={python_out}",
            *files,
        ]
    )
    # protoc writes modules, not packages: mark each generated folder as a package.
    for folder in [
        python_out / "cinema",
        *[p for p in (python_out / "cinema").rglob("*") if p.is_dir()],
    ]:
        (folder / "__init__.py").write_text('"""Generated from protos/ by tools/protogen.py."""\n')
    (python_out / "cinema" / "py.typed").write_text("")
    descriptors = out / "descriptors" / "cinema.binpb"
    descriptors.parent.mkdir()
    build_descriptor_set(descriptors)
    # From the set just built, not from the imported cinema.v1 modules, which are the
    # committed (maybe stale) ones until this run replaces them.
    document = out / OPENAPI_FILE
    document.parent.mkdir()
    rendered = openapi.render(openapi.document(descriptors.read_bytes()))
    document.write_text(rendered, encoding="utf-8")


def build_descriptor_set(out: pathlib.Path, proto_root: pathlib.Path = PROTO_ROOT) -> None:
    """The ``FileDescriptorSet`` of the contracts under ``proto_root``, imports included."""
    run_protoc(
        [
            f"--descriptor_set_out={out}",
            "--include_imports",
            "--include_source_info",
            *proto_files(proto_root),
            *EXTRA_DESCRIPTOR_FILES,
        ],
        proto_root,
    )


def differences(expected: pathlib.Path, actual: pathlib.Path) -> list[str]:
    expected_files = {p.relative_to(expected) for p in expected.rglob("*") if p.is_file()}
    actual_files = {
        p.relative_to(actual)
        for p in actual.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    problems = [f"missing: gen/{p}" for p in sorted(expected_files - actual_files)]
    problems += [
        f"not generated from protos/: gen/{p}" for p in sorted(actual_files - expected_files)
    ]
    problems += [
        f"stale: gen/{p}"
        for p in sorted(expected_files & actual_files)
        if not filecmp.cmp(expected / p, actual / p, shallow=False)
    ]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when gen/ is stale")
    parser.add_argument(
        "--descriptor-set",
        type=pathlib.Path,
        metavar="FILE",
        help="write only the descriptor set of --protos to FILE",
    )
    parser.add_argument(
        "--protos",
        type=pathlib.Path,
        default=PROTO_ROOT,
        metavar="DIR",
        help="the contracts' root for --descriptor-set (default: protos/)",
    )
    args = parser.parse_args()
    if args.descriptor_set is not None:
        build_descriptor_set(args.descriptor_set.resolve(), args.protos.resolve())
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = pathlib.Path(tmp) / "gen"
        generate(fresh)
        if args.check:
            problems = differences(fresh, GEN_ROOT)
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                print("gen/ is stale: run `python tools/protogen.py`", file=sys.stderr)
                return 1
            print("gen/ is up to date with protos/")
            return 0
        shutil.rmtree(GEN_ROOT, ignore_errors=True)
        shutil.copytree(fresh, GEN_ROOT)
    print(f"generated {len(proto_files())} protos into {GEN_ROOT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
