#!/bin/sh
# Regenerates v3lock_pb2*.py and v3election_pb2*.py here (see README.md).  Run from
# anywhere with the project's venv: src/pnyx/services/etcd/proto/generate.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
deps=$(mktemp)
trap 'rm -f "$deps"' EXIT
# etcd's rpc.proto / kv.proto / auth.proto as the aetcd wheel registers them, so that
# protoc resolves the imports against aetcd's own descriptors (no copy of them here).
"$python" - "$deps" <<'PY'
import sys
from aetcd.rpc import auth_pb2, kv_pb2, rpc_pb2
from google.protobuf import descriptor_pb2
files = descriptor_pb2.FileDescriptorSet()
for module in (kv_pb2, auth_pb2, rpc_pb2):
    module.DESCRIPTOR.CopyToProto(files.file.add())
with open(sys.argv[1], "wb") as out:
    out.write(files.SerializeToString())
PY
cd "$here"
"$python" -m grpc_tools.protoc --descriptor_set_in="$deps" -I . \
    --python_out=. --pyi_out=. --grpc_python_out=. v3lock.proto v3election.proto
# protoc writes top-level imports ("import rpc_pb2"): point them at aetcd and this package.
sed -i \
    -e 's/^import \(rpc\|kv\)_pb2 as \(_\?\)\(rpc\|kv\)\(_\{1,2\}\)pb2$/from aetcd.rpc import \1_pb2 as \2\3\4pb2/' \
    -e 's/^import \(v3[a-z]*_pb2\) as \(v3[a-z]*__pb2\)$/from pnyx.services.etcd.proto import \1 as \2/' \
    v3lock_pb2.py v3election_pb2.py v3lock_pb2.pyi v3election_pb2.pyi \
    v3lock_pb2_grpc.py v3election_pb2_grpc.py
