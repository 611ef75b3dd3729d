"""Run device detection in a fresh process and print what it found as one JSON object.

Tests start this with LD_LIBRARY_PATH pointing at a stub vendor library (see build.py):
    python probe_devices.py [preference] [max_samples]
It samples until device 0's utilisation changes (at most max_samples times, 20 ms apart)
and reports every sample it took, whether torch got imported, and any detection error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time


def main() -> None:
    preference = sys.argv[1] if len(sys.argv) > 1 else "auto"
    max_samples = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    from musaops.daemon.devices import UnknownDeviceError, detect

    out: dict = {"preference": preference}
    try:
        acc = detect(preference)
    except Exception as exc:  # reported, the test decides
        out.update(error_type=type(exc).__name__, error=str(exc))
        print(json.dumps(out))
        return
    samples = [acc.sample()]
    while len(samples) < max_samples and samples[-1] and (
        samples[-1][0].utilization_percent == samples[0][0].utilization_percent
    ):
        time.sleep(0.02)
        samples.append(acc.sample())
    count = len(acc.info())
    try:
        acc.memory_free_bytes(count)
        bad_index = "no error"
    except UnknownDeviceError as exc:
        bad_index = str(exc)
    out.update(
        backend=acc.backend,
        torch_device_type=acc.torch_device_type,
        info=[dataclasses.asdict(i) for i in acc.info()],
        samples=[[dataclasses.asdict(s) for s in batch] for batch in samples],
        free=[acc.memory_free_bytes(i) for i in range(count)],
        bad_index=bad_index,
        torch_imported="torch" in sys.modules,
        cuda_device_order=os.environ.get("CUDA_DEVICE_ORDER"),
    )
    acc.close()
    out["after_close"] = [dataclasses.asdict(s) for s in acc.sample()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
