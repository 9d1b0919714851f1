"""Model references as ensembles write them: a catalog id, or `ID@RUNTIME` to pin one variant.

Used by the loader (to check `model:`), by placement and by the node (to match a reference
against what a node serves).
"""

from __future__ import annotations

# A model reference is a catalog id, which lets the node choose the variant it prefers, or
# `ID@RUNTIME`, which pins one variant (docs/runtimes.md).
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
