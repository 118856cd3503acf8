"""float64 everywhere.

JAX defaults to float32. Least-squares fits to 1e-8 relative need float64, so the
package turns on ``jax_enable_x64`` the moment it is imported (before any array is
created). This is a process-wide JAX flag; we set it at import rather than in a context
manager because jitted functions cache their dtype at trace time, and a context that
flips the flag back would make cached traces and new arrays disagree.
"""

import jax

jax.config.update("jax_enable_x64", True)
