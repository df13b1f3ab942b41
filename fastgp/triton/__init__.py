"""Triton kernels of the fastgp ops: kernels.py (the @triton.jit kernels),
host.py (argument checks, row layouts, launch planning) and ops.py (the
kernels registered as fastgp::triton_* ops). Importing this package is cheap;
its modules need triton. The backend that uses them, and decides when they
can run, is fastgp/backends/triton.py.
"""
