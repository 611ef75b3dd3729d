"""Hardware access: one Accelerator protocol, MUSA, CUDA and CPU back ends, detect()."""
