"""Generate Python stubs and a descriptor image from protos/.

Why a script and not a bare protoc call: protovalidate's `buf/validate/validate.proto`
is not on this machine as source (buf would fetch it from the BSR, which is out of reach).
The installed `protovalidate` wheel carries its compiled descriptor, so we write that into a
FileDescriptorSet and hand it to protoc with `--descriptor_set_in`. Everything generated
goes to build/ and is never committed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import grpc_tools
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
BUILD = ROOT / "build"
GEN = BUILD / "gen"
VALIDATE_PROTO = "buf/validate/validate.proto"


def _protovalidate_descriptor() -> descriptor_pb2.FileDescriptorProto:
    from protovalidate._gen.buf.validate import validate_pb

    file = descriptor_pb2.FileDescriptorProto()
    file.ParseFromString(validate_pb.desc().proto.to_binary())
    return file


def write_dependency_set(path: Path) -> None:
    """Write the FileDescriptorSet of imports that have no .proto source here."""
    file_set = descriptor_pb2.FileDescriptorSet()
    file_set.file.append(_protovalidate_descriptor())
    path.write_bytes(file_set.SerializeToString())


def _include_dirs() -> list[str]:
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    import google.rpc.status_pb2 as status_pb2

    googleapis = Path(status_pb2.__file__).parent.parent.parent
    return [str(PROTO_ROOT), str(wkt), str(googleapis)]


def _run_protoc(args: list[str]) -> None:
    code = protoc.main(["grpc_tools.protoc", *args])
    if code != 0:
        sys.exit(f"protoc failed with exit code {code}")


def generate() -> None:
    proto_files = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    if not proto_files:
        sys.exit("no .proto files under protos/")
    shutil.rmtree(GEN, ignore_errors=True)
    GEN.mkdir(parents=True)
    deps = BUILD / "protodeps.binpb"
    write_dependency_set(deps)
    includes = [f"-I{d}" for d in _include_dirs()]
    common = [f"--descriptor_set_in={deps}", *includes]
    bin_dir = Path(sys.executable).parent
    plugins = [
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
    ]
    _run_protoc(
        [
            *common,
            *plugins,
            f"--python_out={GEN}",
            f"--mypy_out={GEN}",
            f"--grpc_python_out={GEN}",
            f"--mypy_grpc_out={GEN}",
            *proto_files,
        ]
    )
    # The validate descriptor itself, as an ordinary google.protobuf module, so the
    # generated stubs can import `buf.validate.validate_pb2`.
    _run_protoc([*common, f"--python_out={GEN}", VALIDATE_PROTO])
    _run_protoc(
        [
            *common,
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={BUILD / 'obol.binpb'}",
            *proto_files,
        ]
    )
    for package_dir in [p for p in GEN.rglob("*") if p.is_dir()]:
        (package_dir / "__init__.py").touch()
    (GEN / "py.typed").touch()
    print(f"generated stubs for {len(proto_files)} proto files into {GEN.relative_to(ROOT)}")


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    generate()


if __name__ == "__main__":
    main()
