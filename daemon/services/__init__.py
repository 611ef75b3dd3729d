"""gRPC servicers: Node, Telemetry, Inference, Audit."""
