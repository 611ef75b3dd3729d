"""musa-ops API v1: generated protobuf and gRPC modules (see protos/musaops/v1/*.proto)."""
