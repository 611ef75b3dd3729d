"""Qt-free console core: immutable dataclasses and ring buffers."""
