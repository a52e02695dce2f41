"""The V2 gRPC messages and method table, built from ``grpc_service.proto`` in a private pool.

The messages live in a descriptor pool of their own, not protobuf's default one: Triton's client
registers the same ``inference.*`` names in the default pool, and a process that holds both (a test,
an application calling its own server) would otherwise fail with "duplicate symbol". The wire
format depends only on field numbers and the service path ``/inference.GRPCInferenceService/*``,
so both sides still talk. Building the classes at import also keeps the server free of the
strict protobuf runtime check that ``protoc``'s generated ``*_pb2.py`` carry.

``grpc_service_descriptor.py`` holds the serialized ``FileDescriptorProto``; after editing the
``.proto``, regenerate it (needs grpcio-tools)::

    python -m infercore.serve.grpc_service --regenerate
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pool, message_factory

from .grpc_service_descriptor import SERIALIZED

__all__ = ["METHODS", "SERVICE", "messages"]

SERVICE = "inference.GRPCInferenceService"

_pool = descriptor_pool.DescriptorPool()
_pool.AddSerializedFile(SERIALIZED)


def _message(name: str) -> Any:
    desc = _pool.FindMessageTypeByName(f"inference.{name}")
    get = getattr(message_factory, "GetMessageClass", None)
    if get is not None:
        return get(desc)
    return message_factory.MessageFactory(_pool).GetPrototype(desc)  # protobuf < 4.22


class _Messages:
    """``messages.ModelInferRequest`` etc.: the message classes by name."""

    def __getattr__(self, name: str) -> Any:
        cls = _message(name)
        setattr(self, name, cls)
        return cls


messages = _Messages()

# (method, request message, response message); all unary-unary.
METHODS = tuple(
    (m.name, m.input_type.name, m.output_type.name) for m in _pool.FindServiceByName(SERVICE).methods
)


def regenerate() -> None:
    """Rewrite ``grpc_service_descriptor.py`` from ``grpc_service.proto`` with grpc_tools' protoc."""
    import importlib.metadata
    import subprocess
    import tempfile

    from google.protobuf import descriptor_pb2

    here = Path(__file__).resolve().parent
    src = here.parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "v2.desc"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                "-I",
                str(src),
                f"--descriptor_set_out={out}",
                "infercore/serve/grpc_service.proto",
            ],
            check=True,
        )
        data = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0].SerializeToString()
    body = "\n".join(f"    {data[i : i + 96]!r}" for i in range(0, len(data), 96))
    version = importlib.metadata.version("grpcio-tools")
    (here / "grpc_service_descriptor.py").write_text(
        "# ruff: noqa\n# fmt: off\n"
        f"# Generated from grpc_service.proto by grpcio-tools {version} (protoc); do not edit.\n"
        "# Regenerate: python -m infercore.serve.grpc_service --regenerate\n"
        '"""The serialized ``FileDescriptorProto`` of ``grpc_service.proto`` (package ``inference``)."""\n\n'
        f"SERIALIZED = (\n{body}\n)\n"
    )
    print(f"wrote {here / 'grpc_service_descriptor.py'} ({len(data)} bytes, grpcio-tools {version})")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m infercore.serve.grpc_service --regenerate")
    regenerate()
