"""llama.cpp's sampling, done in MLX: the MLX runtime samples as the llama.cpp runtime does, so
the two variants of one model answer alike.

The same repetition penalty (1.1 over the last 64 sampled tokens, prompt excluded) and, above
temperature 0, the same chain as llama-cpp-python's defaults: top-k 40, top-p 0.95 (or the
request's), min-p 0.05, then temperature. Temperature 0 is greedy. `mlx` is imported when a
sampler is made, which happens on the MLX worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orc.node.models.runtimes.base import GenerationParams
from orc.node.models.runtimes.generation import REPEAT_PENALTY

__all__ = ["repetition_penalty", "sampler"]

# llama-cpp-python's defaults for create_completion (top_k, top_p, min_p) and for the window
# of its repetition penalty (last_n_tokens_size), which the llama.cpp runtime samples with.
_TOP_K = 40
_DEFAULT_TOP_P = 0.95
_MIN_P = 0.05
_PENALTY_WINDOW = 64


def repetition_penalty(prompt_length: int) -> Callable[[Any, Any], Any]:
    """llama.cpp's repeat penalty: the logit of each token among the last 64 sampled ones (the
    prompt is not counted) is divided by 1.1 if positive, multiplied by 1.1 if not."""
    import mlx.core as mx

    def apply(tokens: Any, logits: Any) -> Any:
        recent = tokens[prompt_length:][-_PENALTY_WINDOW:]
        if recent.size == 0:
            return logits
        picked = logits[:, recent]
        logits[:, recent] = mx.where(picked <= 0, picked * REPEAT_PENALTY, picked / REPEAT_PENALTY)
        return logits

    return apply


def sampler(params: GenerationParams, seed: int) -> Callable[[Any], Any]:
    """Greedy at temperature 0; otherwise llama-cpp-python's default chain (top-k, top-p,
    min-p on the untempered distribution, then temperature), drawn with a key from `seed`."""
    import mlx.core as mx

    if params.temperature == 0:
        return lambda logprobs: mx.argmax(logprobs, axis=-1)
    top_p = _DEFAULT_TOP_P if params.top_p is None else params.top_p
    key = [mx.random.key(seed)]

    def sample(logprobs: Any) -> Any:
        k = min(_TOP_K, logprobs.shape[-1])
        candidates = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[:, :k]
        scores = mx.take_along_axis(logprobs, candidates, axis=-1)
        order = mx.argsort(-scores, axis=-1)
        candidates = mx.take_along_axis(candidates, order, axis=-1)
        scores = mx.take_along_axis(scores, order, axis=-1)
        probs = mx.softmax(scores, axis=-1)
        # top-p keeps the shortest prefix reaching `top_p`; min-p drops what is less likely than
        # min_p x the likeliest; the likeliest is always kept.
        keep = ((mx.cumsum(probs, axis=-1) - probs) < top_p) & (probs >= _MIN_P * probs[:, :1])
        keep = keep | (mx.arange(k) == 0)
        tempered = mx.where(keep, scores / params.temperature, -float("inf"))
        key[0], draw = mx.random.split(key[0])
        choice = mx.random.categorical(tempered, axis=-1, key=draw)
        return mx.take_along_axis(candidates, choice[:, None], axis=-1)[:, 0]

    return sample
