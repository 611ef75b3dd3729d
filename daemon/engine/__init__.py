"""The inference engine: Llama-family model, paged KV cache, continuous batching scheduler.

`load_engine` is imported lazily so that `import musaops.daemon.engine.api` (and this
package) never imports torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_engine"]


def load_engine(*args: Any, **kwargs: Any) -> Any:
    """See musaops.daemon.engine.load.load_engine (imports torch on first call)."""
    from .load import load_engine as _load_engine

    return _load_engine(*args, **kwargs)
