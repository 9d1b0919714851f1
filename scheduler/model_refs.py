"""Model references: how an ensemble, a node and the mesh name a model.

A model reference is a catalog id, which lets the node choose the variant it prefers, or
`ID@RUNTIME`, which pins one variant (docs/runtimes.md). The ensemble loader checks every
reference with `split_model_ref`; the catalog, the placer and the daemon read them with it.
Pure, and here, in the lowest layer, because the loader needs it and imports nothing of `orc.node`.
"""

from __future__ import annotations

__all__ = ["MODEL_RUNTIMES", "split_model_ref"]

MODEL_RUNTIMES = ("llama_cpp", "mlx")


def split_model_ref(ref: str) -> tuple[str, str | None]:
    """`ID@RUNTIME` -> (ID, RUNTIME), `ID` -> (ID, None); ValueError names what is wrong."""
    model_id, at, runtime = ref.rpartition("@")
    if not at:
        return ref, None
    if not model_id:
        raise ValueError(f"'{ref}' has a runtime but no model id before the '@'")
    if runtime not in MODEL_RUNTIMES:
        raise ValueError(f"'{ref}' pins the unknown runtime '{runtime}' (runtimes: {', '.join(MODEL_RUNTIMES)})")
    return model_id, runtime
