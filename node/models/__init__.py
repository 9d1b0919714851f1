"""Models and what runs them: the catalog of model files, the runtimes, the hardware probe.

Owns the catalog (`catalog`: model ids, variants, digests, the embedded models), the runtimes
behind the `ModelRuntime` seam (`runtimes`: llama.cpp, MLX, scripts) and the probe of this
device's hardware (`hardware`).
May import: `orc.scheduler`, `orc.node.home`.
"""
