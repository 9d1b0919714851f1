"""Model references: `ID` lets the node choose a variant, `ID@RUNTIME` pins one."""

from __future__ import annotations

import pytest

from orc.scheduler.model_refs import MODEL_RUNTIMES, split_model_ref


def test_a_plain_id_names_no_runtime_and_a_pinned_one_names_it() -> None:
    assert split_model_ref("smollm2-135m-instruct") == ("smollm2-135m-instruct", None)
    assert split_model_ref("smollm2-135m-instruct@mlx") == ("smollm2-135m-instruct", "mlx")
    assert split_model_ref("a@llama_cpp") == ("a", "llama_cpp")
    assert MODEL_RUNTIMES == ("llama_cpp", "mlx")


@pytest.mark.parametrize("bad", ["a@", "a@MLX", "@mlx", "a@onnx"])
def test_a_bad_reference_is_a_value_error_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=f"{bad!r}"):
        split_model_ref(bad)
