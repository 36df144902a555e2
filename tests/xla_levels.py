"""XLA compile settings a test may pin for its own programs.

The default suite compiles with XLA's quickest CPU settings (``tests/conftest.py``):
optimisation level 0, which halves compile times. A test whose time goes into running
a long program (hundreds of steps), or that asserts two different programs agree to the
last bit, compiles its own jits at XLA's default level instead:
``jax.jit(fn, compiler_options=DEFAULT_XLA)``.
"""

#: XLA's default CPU optimisation level (the same bits as no option at all).
DEFAULT_XLA = {"xla_backend_optimization_level": 3}
