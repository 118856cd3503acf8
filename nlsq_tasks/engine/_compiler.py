"""The XLA options every compiled program of the engine is built with."""

# The p x p trust-region logic is many tiny kernels; LLVM's expensive passes buy nothing
# there and cost seconds of compile time (measured: same run time, ~40% less compile).
# XLA:CPU's newer fusion emitters roughly double the compile of these many small fusions
# (3.5 -> 1.9 CPU s for a 3-parameter fit at n=100; 3.4 -> 1.8 s at 1e6 points) for no
# run-time gain (warm fits within noise at n=100 and 1e6, standard and chunked). Every
# compiled program of the engine uses these options, so that the single, batched, sharded
# and streaming paths run the same machine code for the same arithmetic. CPU-only keys are
# ignored by other backends.
COMPILER_OPTIONS = {"xla_llvm_disable_expensive_passes": True, "xla_cpu_use_fusion_emitters": False}
