"""`orc ensembles`, `orc models` and `--help`."""




def test_ensembles_list_show_graph(orc):
    listed = orc("ensembles", "list")
    assert listed.code == 0
    for name in ("perspectives", "document-digest", "triage"):
        assert name in listed.stdout
    shown = orc("ensembles", "show", "triage")
    assert "explain-code: llm model smollm2-135m-instruct" in shown.stdout and "when ${classify.is_code}" in shown.stdout
    graph = orc("ensembles", "graph", "perspectives")
    assert graph.stdout.startswith("flowchart TD") and graph.stdout.count("-->") == 3
    as_json = orc("ensembles", "show", "document-digest", "--json").json()
    assert [a["name"] for a in as_json["agents"]] == ["split", "summarize", "editor"]


def test_models_list_and_add_remove(orc, tmp_path):
    data = orc("models", "--json").json()
    smol = next(m for m in data if m["id"] == "smollm2-135m-instruct")
    assert smol["runtime"] == "llama_cpp" and len(smol["sha256"]) == 64 and smol["size_bytes"] > 50_000_000
    table = orc("models")
    assert "smollm2-135m-instruct" in table.stdout and "llama_cpp" in table.stdout
    fake = tmp_path / "tiny.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 64)
    added = orc("models", "add", str(fake), "--id", "tiny-test")
    assert added.code == 0 and "tiny-test" in orc("models").stdout
    assert orc("models", "remove", "tiny-test").code == 0
    assert "tiny-test" not in orc("models").stdout


def test_help_teaches(orc):
    result = orc("run", "--help")
    assert result.code == 0
    for flag in ("--input", "--file", "--json", "--explain", "--local", "--home"):
        assert flag in result.stdout
    assert "Examples" in result.stdout
