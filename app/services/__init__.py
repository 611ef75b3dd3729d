"""Qt-free console services: NodeHub (gRPC), store (SQLAlchemy), export."""
