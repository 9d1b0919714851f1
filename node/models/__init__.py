"""Models and what runs them: the catalog of model files, the runtimes, the hardware probe.

Owns the catalog (`catalog`) and what it is made of: model ids and entries (`entry`), its
errors (`errors`), digests and their cache (`digests`), the models that come with orc's
packages (`embedded`), GGUF headers (`gguf`), mlx-lm folders (`mlx_folder`) and the GGUF to
MLX converter (`mlx_convert`); the runtimes behind the `ModelRuntime` seam (`runtimes`:
llama.cpp, MLX, scripts, and `runtimes.factory`, which builds them); and the probe of this
device's hardware (`hardware`). The catalog never imports the runtimes; the runtimes know a
model only by its `entry.ModelEntry`.
May import: `orc.scheduler`, `orc.node.home`.
"""
