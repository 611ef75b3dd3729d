"""Read vendor fields that may be unsupported, without retrying the ones that never work.

MTML and NVML answer NOT_SUPPORTED for fields a board lacks (power on some cards, memory
utilisation on others). nvitop's habit: treat such a field as absent (None) and stop asking
for it, so a sample costs only the calls that can succeed.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


class FieldReader:
    """Calls `fn(*args)`; on a vendor error returns None. Errors that mean "this device will
    never report this" (is_permanent) are remembered per key and the call is skipped later."""

    def __init__(self, error_type: type[BaseException], is_permanent: Callable[[BaseException], bool]):
        self._error_type = error_type
        self._is_permanent = is_permanent
        self._unsupported: set[tuple[int, str]] = set()

    def read(self, index: int, field: str, fn: Callable[..., Any], *args: Any) -> Any:
        key = (index, field)
        if key in self._unsupported:
            return None
        try:
            return fn(*args)
        except self._error_type as exc:
            if self._is_permanent(exc):
                log.debug("device %d does not report %s (%s); not asking again", index, field, exc)
                self._unsupported.add(key)
            return None
