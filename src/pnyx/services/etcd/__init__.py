"""The etcd v3 gRPC API served by a pnyx Raft group (issue 17).

``convert``: etcd's protobuf messages <-> the msgspec structs of
:mod:`pnyx.protocols.etcd`.
"""
