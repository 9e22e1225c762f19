"""Pure media functions: bytes in, numpy out. No Triton, no HTTP."""
