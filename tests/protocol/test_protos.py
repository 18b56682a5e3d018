"""The gRPC API: committed stubs match proto/, and the messages are the protocol's on the wire."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from crimes.proto_gen.inference import grpc_service_pb2 as pb
from tests.conftest import PROJECT_ROOT

ROOT = PROJECT_ROOT
SCRIPT = ROOT / "scripts" / "generate_protos.py"


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", *args], capture_output=True, text=True, check=False
    )


def test_committed_stubs_match_the_proto() -> None:
    result = _check()
    assert result.returncode == 0, result.stderr


def test_a_changed_proto_is_reported_as_drift(tmp_path: Path) -> None:
    protos = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", protos)
    source = protos / "inference" / "grpc_service.proto"
    source.write_text(
        source.read_text().replace("  bool live = 1;\n", "  bool live = 1;\n  string why = 2;\n")
    )
    result = _check("--proto-dir", str(protos))
    assert result.returncode == 1
    assert "grpc_service_pb2.py" in result.stderr
    assert "generate_protos.py" in result.stderr


def test_edited_stubs_are_reported_as_drift(tmp_path: Path) -> None:
    stubs = tmp_path / "proto_gen"
    shutil.copytree(ROOT / "src" / "crimes" / "proto_gen", stubs)
    (stubs / "inference" / "grpc_service_pb2_grpc.pyi").write_text("# edited by hand\n")
    (stubs / "stray.py").write_text("")
    result = _check("--out-dir", str(stubs))
    assert result.returncode == 1
    assert "unexpected: stray.py" in result.stderr
    assert "edited by hand" in result.stderr


# tritonclient ships its own `inference` protos; both cannot live in one process's descriptor
# pool, so its descriptors are read in a child process.
_TRITON_DUMP = """
import json
from tritonclient.grpc import service_pb2 as s
names = json.loads(input())
out = {}
for name in names:
    d = s.DESCRIPTOR.message_types_by_name[name.split(".")[0]]
    for part in name.split(".")[1:]:
        d = d.nested_types_by_name[part]
    out[name] = sorted((f.name, f.number, f.type, f.is_repeated) for f in d.fields)
service = s.DESCRIPTOR.services_by_name["GRPCInferenceService"]
out["__methods__"] = sorted(
    (m.name, m.input_type.full_name, m.output_type.full_name) for m in service.methods
)
print(json.dumps(out))
"""


def test_messages_and_methods_match_tritonclients_on_the_wire() -> None:
    names = []
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        names.append(message.name)
        names += [
            f"{message.name}.{n.name}" for n in message.nested_types if not n.GetOptions().map_entry
        ]
    result = subprocess.run(
        [sys.executable, "-c", _TRITON_DUMP],
        input=json.dumps(names),
        capture_output=True,
        text=True,
        check=True,
    )
    triton = json.loads(result.stdout)
    extensions = {"ModelMetadataResponse": {"parameters"}}
    for name in names:
        descriptor = pb.DESCRIPTOR.message_types_by_name[name.split(".")[0]]
        for part in name.split(".")[1:]:
            descriptor = descriptor.nested_types_by_name[part]
        ours = sorted(
            (f.name, f.number, f.type, f.is_repeated)
            for f in descriptor.fields
            if f.name not in extensions.get(name, set())
        )
        assert ours == [tuple(f) for f in triton[name]], name
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    ours_methods = {
        (m.name, m.input_type.full_name, m.output_type.full_name) for m in service.methods
    }
    assert ours_methods <= {tuple(m) for m in triton["__methods__"]}
    assert {m[0] for m in ours_methods} >= {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }
