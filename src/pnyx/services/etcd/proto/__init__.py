"""etcd's v3lock and v3election gRPC messages and stubs, generated (see README.md)."""
