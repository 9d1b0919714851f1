"""`orc models convert ID --to q8_0|q4_0`: llama.cpp requantizes a catalog GGUF into a model of
its own, which `orc models` lists and an ensemble runs, through the real CLI."""

from __future__ import annotations

from pathlib import Path

from support import assert_one_clean_error, write

from orc.node.models.gguf import read_gguf_metadata

SMOLLM2 = "smollm2-135m-instruct"
# llama.cpp's enum llama_ftype, as written in a GGUF's general.file_type.
FILE_TYPES = {"q4_0": 2, "q8_0": 7}


def _left_over(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial")) if folder.exists() else []


def test_requantize_list_and_run_it(orc, home: Path, tmp_path: Path) -> None:
    made = orc("models", "convert", SMOLLM2, "--to", "q8_0")
    assert made.code == 0, made.stderr
    assert made.stdout.startswith(f"converted {SMOLLM2} -> {SMOLLM2}-q8_0@llama_cpp"), made.stdout
    path = home / "models" / "gguf" / f"{SMOLLM2}-q8_0.gguf"
    assert read_gguf_metadata(path)["general.file_type"] == FILE_TYPES["q8_0"]
    assert _left_over(path.parent) == []
    assert orc("models", "convert", SMOLLM2, "--to", "q8_0").stdout.startswith("already converted")

    listed = {(m["id"], m["runtime"]): m for m in orc("models", "--json").json()}
    source, requantized = listed[(SMOLLM2, "llama_cpp")], listed[(f"{SMOLLM2}-q8_0", "llama_cpp")]
    assert requantized["converted_from"] == source["sha256"] and requantized["sha256"] != source["sha256"]
    assert "requantized to Q8_0" in requantized["description"]

    ensemble = write(tmp_path, "q8.yaml", f"name: q8\nagents:\n  - name: a\n    model: {SMOLLM2}-q8_0\n"
                                          "    temperature: 0\n    max_tokens: 16\n")
    run = orc("run", str(ensemble), "Name three colors.", "--json", "--threads", "2")
    assert run.code == 0, run.stderr
    result = run.json()["results"]["a"]
    assert result["status"] == "completed" and result["model"] == f"{SMOLLM2}-q8_0" and result["output"].strip()


def test_an_id_taken_by_another_quantization_is_refused(orc, home: Path) -> None:
    assert orc("models", "convert", SMOLLM2, "--to", "q8_0", "--id", "small").code == 0
    again = orc("models", "convert", SMOLLM2, "--to", "q4_0", "--id", "small")
    assert_one_clean_error(again, 2)
    assert "'small' already has a llama_cpp variant" in again.stderr and "--id" in again.stderr
    assert not (home / "models" / "gguf" / "small.gguf.partial").exists()
    embedded = orc("models", "convert", SMOLLM2, "--to", "q4_0", "--id", SMOLLM2)
    assert_one_clean_error(embedded, 2)
    assert "embedded model's id" in embedded.stderr


def test_an_unknown_target_is_one_clean_error(orc) -> None:
    result = orc("models", "convert", SMOLLM2, "--to", "q3_k")
    assert_one_clean_error(result, 2)
    assert "to mlx, q8_0, q4_0, not to 'q3_k'" in result.stderr


def test_a_broken_gguf_fails_cleanly_and_leaves_nothing(orc, home: Path, tmp_path: Path) -> None:
    """A GGUF whose header reads but whose weights are cut off: the quantizer's failure is one
    message, and neither a file nor a catalog entry is left."""
    listed = {(m["id"], m["runtime"]): m for m in orc("models", "--json").json()}
    whole = Path(listed[(SMOLLM2, "llama_cpp")]["path"]).read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: len(whole) // 3])
    assert orc("models", "add", str(cut), "--id", "cut").code == 0
    result = orc("models", "convert", "cut", "--to", "q4_0")
    assert_one_clean_error(result, 2)
    assert "could not requantize cut.gguf to Q4_0" in result.stderr
    folder = home / "models" / "gguf"
    assert _left_over(folder) == [] and not (folder / "cut-q4_0.gguf").exists()
    assert "cut-q4_0" not in {m["id"] for m in orc("models", "--json").json()}
