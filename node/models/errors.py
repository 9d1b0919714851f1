"""The errors of the model catalog, one hierarchy under `CatalogError`; each docstring is
written for the user who meets it (the CLI prints it as the advice)."""

from __future__ import annotations

__all__ = [
    "CatalogError",
    "CatalogFileCorrupt",
    "InvalidModelId",
    "ModelFileInvalid",
    "ModelFileMissing",
    "ModelIdTaken",
    "ModelNotRemovable",
    "UnknownModel",
]


class CatalogError(Exception):
    """The model catalog could not do what was asked; the message says why and what to do."""


class ModelFileInvalid(CatalogError):
    """That is not a model orc can serve: it must be a GGUF file (it starts with "GGUF") or an
    mlx-lm model folder (config.json, model*.safetensors and a tokenizer)."""


class ModelFileMissing(CatalogError):
    """A model's weights file is gone. Restore it, or remove the model with `orc models remove ID`."""


class ModelIdTaken(CatalogError):
    """That id already has a variant for this runtime. Pick a different id with `--id`."""


class InvalidModelId(CatalogError):
    """Model ids are 1 to 64 characters: lowercase letters, digits, ".", "_" and "-", starting
    with a letter or digit."""


class UnknownModel(CatalogError):
    """No model with that id is in this node's catalog; `orc models` lists the ones there are."""


class ModelNotRemovable(CatalogError):
    """Embedded models come with orc and cannot be removed; use `orc-node start --model ID` to
    serve only some models."""


class CatalogFileCorrupt(CatalogError):
    """The catalog file of user-added models cannot be read. Fix or delete it (deleting forgets
    the added models, not their files), then add them again."""
