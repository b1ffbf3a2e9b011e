"""Prompt loading: every format, cleaning, de-duplication, sampling, errors, the hash, real data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hadis_profile.cli import app
from hadis_profile.errors import HadisError, InputError, ParameterError
from hadis_profile.prompts import PromptSet, load_prompts, prompt_set_hash

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


# ---------------------------------------------------------------------- formats


def test_txt_strips_drops_blanks_and_keeps_order(tmp_path: Path) -> None:
    f = write(tmp_path / "p.txt", "\ufeff  a red apple \r\n\r\nb\u2028c\n   \nlast")
    ps = load_prompts(f)
    assert ps.texts == ("a red apple", "b\u2028c", "last")  # U+2028 is not a line break here
    assert (ps.n_read, ps.n_blank, ps.n_duplicates, len(ps)) == (5, 2, 0, 3)
    assert ps.source == f and ps.column is None


def test_tsv_column_selector_and_literal_quotes(tmp_path: Path) -> None:
    f = write(
        tmp_path / "p.tsv",
        'Prompt\tCategory\n"G I G G L E" painted on a wall\tArt\n'
        "a cat\tAnimals\n\na dog\tAnimals\n",
    )
    assert load_prompts(f).texts == ('"G I G G L E" painted on a wall', "a cat", "a dog")
    assert load_prompts(f).column == "Prompt"  # default: case-insensitive 'prompt'
    assert load_prompts(f, column="Category").texts == ("Art", "Animals")  # de-duplicated
    assert load_prompts(f, column="category", dedup=False).texts == ("Art", "Animals", "Animals")


def test_tsv_short_row_is_reported_with_its_line(tmp_path: Path) -> None:
    f = write(tmp_path / "p.tsv", "id\tprompt\n1\ta cat\n2\n")
    with pytest.raises(HadisError, match=r"p\.tsv line 3 has 1 tab-separated fields"):
        load_prompts(f)


def test_csv_quoting_and_default_text_column(tmp_path: Path) -> None:
    f = write(tmp_path / "p.csv", 'id,Text\n1,"a cat, a dog"\n2,"two\nlines"\n3,plain\n')
    assert load_prompts(f).texts == ("a cat, a dog", "two\nlines", "plain")


def test_unknown_column_lists_the_columns(tmp_path: Path) -> None:
    f = write(tmp_path / "p.csv", "id,caption\n1,a cat\n")
    with pytest.raises(
        ParameterError, match=r"no 'prompt' or 'text' column; choose one with column from: 'id'"
    ) as info:
        load_prompts(f)
    assert info.value.param == "column"
    with pytest.raises(
        ParameterError, match="has no column 'Prompt'; its columns are: 'id', 'caption'"
    ) as info:
        load_prompts(f, column="Prompt")
    assert info.value.for_flag("--column").startswith("p.csv has no --column 'Prompt';")
    assert load_prompts(f, column="caption").texts == ("a cat",)


def test_jsonl_keys_bare_strings_and_nulls(tmp_path: Path) -> None:
    rows = [{"prompt": "a", "id": 1}, {"prompt": None}, "bare string", {"prompt": " b "}]
    f = write(tmp_path / "p.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    ps = load_prompts(f)
    assert ps.texts == ("a", "bare string", "b") and ps.column == "prompt" and ps.n_blank == 2
    g = write(tmp_path / "q.jsonl", '{"caption": "x", "text": "y"}\n')
    assert load_prompts(g).texts == ("y",)
    assert load_prompts(g, column="caption").texts == ("x",)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt": "a"}\n{not json}\n', "line 2 is not valid JSON"),
        ('{"prompt": 3}\n', "line 1: 'prompt' holds a number, not a string"),
        ("[1, 2]\n", "line 1 holds a list; each line must be an object"),
    ],
)
def test_jsonl_errors(tmp_path: Path, content: str, expected: str) -> None:
    with pytest.raises(HadisError, match=expected):
        load_prompts(write(tmp_path / "p.jsonl", content))


def test_parquet_round_trip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    f = tmp_path / "p.parquet"
    table = pa.table({"n": [1, 2, 3, 4], "prompt": ["a", None, "b ", "a"], "other": list("wxyz")})
    pq.write_table(table, f)
    ps = load_prompts(f)
    assert ps.texts == ("a", "b") and ps.n_blank == 1 and ps.n_duplicates == 1
    assert load_prompts(f, column="other").texts == tuple("wxyz")
    with pytest.raises(InputError, match="column 'n' holds int64, not strings"):
        load_prompts(f, column="n")
    with pytest.raises(HadisError, match="not a readable parquet file"):
        load_prompts(write(tmp_path / "bad.parquet", "not parquet"))


# ---------------------------------------------------------------------- options


def test_dedup_keeps_first_occurrence_in_order(tmp_path: Path) -> None:
    f = write(tmp_path / "p.txt", "b\na\nb\nc\na\n b \n")
    ps = load_prompts(f)
    assert ps.texts == ("b", "a", "c") and ps.n_duplicates == 3 and ps.n_unique == 3
    assert load_prompts(f, dedup=False).texts == ("b", "a", "b", "c", "a", "b")


def test_limit_and_deterministic_sample(tmp_path: Path) -> None:
    f = write(tmp_path / "p.txt", "".join(f"prompt {i}\n" for i in range(100)))
    assert load_prompts(f, limit=5).texts == tuple(f"prompt {i}" for i in range(5))
    a = load_prompts(f, sample=10, seed=7)
    assert a.texts == load_prompts(f, sample=10, seed=7).texts
    assert a.texts != load_prompts(f, sample=10, seed=8).texts
    order = [int(t.split()[1]) for t in a.texts]
    assert order == sorted(order) and len(set(order)) == 10  # file order, no repeats
    limited = load_prompts(f, limit=20, sample=5, seed=1)
    assert all(int(t.split()[1]) < 20 for t in limited.texts)
    assert (limited.limit, limited.sample, limited.seed) == (20, 5, 1)
    with pytest.raises(ParameterError, match=r"sample 30 is more than the first 20 prompts in p"):
        load_prompts(f, limit=20, sample=30)
    with pytest.raises(ParameterError, match=r"sample 101 is more than the 100 prompts in p\.txt"):
        load_prompts(f, sample=101)
    for bad in ({"limit": 0}, {"sample": -1}):
        with pytest.raises(ParameterError, match="must be at least 1") as info:
            load_prompts(f, **bad)
        assert info.value.param == next(iter(bad))


# ---------------------------------------------------------------------- errors


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_prompts(tmp_path / "missing.txt")
    with pytest.raises(HadisError, match="is empty"):
        load_prompts(write(tmp_path / "empty.txt", ""))
    with pytest.raises(HadisError, match=r"has no prompts \(only blank ones\)"):
        load_prompts(write(tmp_path / "blank.txt", "\n   \n\t\n"))
    with pytest.raises(HadisError, match="has no prompts"):
        load_prompts(write(tmp_path / "header.csv", "prompt\n"))
    with pytest.raises(InputError, match=r"unsupported extension '\.docx'.*\.txt, \.tsv"):
        load_prompts(write(tmp_path / "p.docx", "a\n"))
    with pytest.raises(ParameterError, match=r"^column applies only to \.tsv, \.csv"):
        load_prompts(write(tmp_path / "p.txt", "a\n"), column="prompt")
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(InputError, match="not a file"):
        load_prompts(tmp_path / "folder.txt")


def test_undecodable_file_names_encoding_and_options(tmp_path: Path) -> None:
    f = tmp_path / "latin.txt"
    f.write_bytes("café au lait\nna\xefve\n".encode("latin-1"))
    with pytest.raises(ParameterError) as info:
        load_prompts(f)
    message = str(info.value)
    assert "not valid utf-8 (byte 0xe9 at offset 3)" in message
    assert "choose another encoding, or have undecodable bytes replaced or ignored" in message
    assert "--" not in message  # the library names parameters; the CLI names flags
    assert "choose another --encoding," in info.value.for_flag("--encoding")
    assert load_prompts(f, encoding="latin-1").texts == ("café au lait", "naïve")
    assert load_prompts(f, errors="ignore").texts == ("caf au lait", "nave")
    assert load_prompts(f, errors="replace").texts[0] == "caf\ufffd au lait"
    with pytest.raises(ParameterError, match="encoding 'klingon' is not a known text encoding"):
        load_prompts(f, encoding="klingon")
    with pytest.raises(ParameterError, match="errors 'drop' is not an error handler") as info:
        load_prompts(f, errors="drop")
    assert info.value.param == "errors"


# ---------------------------------------------------------------------- hash


def test_prompt_set_hash_definition_and_store_agreement(tmp_path: Path) -> None:
    texts = ["a red apple", "two\nlines", "café"]
    inner = "\n".join(hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts)
    assert prompt_set_hash(texts) == hashlib.sha256(inner.encode("ascii")).hexdigest()
    assert prompt_set_hash(texts) != prompt_set_hash(texts[::-1])
    assert PromptSet.from_texts(texts).sha256 == prompt_set_hash(texts)
    assert load_prompts(write(tmp_path / "p.txt", "a red apple\n")).sha256 == prompt_set_hash(
        ["a red apple"]
    )

    from hadis_profile.store import RunStore

    store = RunStore.create(tmp_path / "run")
    store.add_prompts(texts)
    assert store.prompt_set_hash() == prompt_set_hash(texts)


# ---------------------------------------------------------------------- shipped sets


@pytest.mark.parametrize(("name", "count"), [("smoke.txt", 16), ("varied.txt", 300)])
def test_shipped_prompt_sets_are_clean(name: str, count: int) -> None:
    ps = load_prompts(ROOT / "prompts" / name)
    assert len(ps) == ps.n_read == count and ps.n_blank == 0 and ps.n_duplicates == 0


def test_cli_prompts_inspect(tmp_path: Path) -> None:
    f = write(tmp_path / "p.txt", "a [bold]cat[/bold]\na dog\na cat\na dog\n")
    runner = CliRunner()
    result = runner.invoke(app, ["prompts", "inspect", str(f)])
    assert result.exit_code == 0, result.output
    assert "duplicates  1 dropped, 3 unique" in result.output
    assert "1. a [bold]cat[/bold]" in result.output  # printed verbatim, not as Rich markup
    sampled = runner.invoke(app, ["prompts", "inspect", str(f), "--sample", "2", "--seed", "3"])
    assert sampled.exit_code == 0, sampled.output
    assert "prompts     2 (sample 2 with seed 3)" in sampled.output
    assert load_prompts(f, sample=2, seed=3).sha256 in sampled.output


# ---------------------------------------------------------------------- real data


def test_partiprompts(shared_data: Path) -> None:
    ps = load_prompts(shared_data / "prompts" / "PartiPrompts.tsv", column="Prompt")
    assert ps.n_read == 1632 and ps.n_blank == 0 and len(ps) == 1632 and ps.n_duplicates == 0
    assert any(t.startswith('"G I G G L E"') for t in ps)  # quotes kept (no TSV quoting)
    assert load_prompts(shared_data / "prompts" / "PartiPrompts.tsv").column == "Prompt"


def test_diffusiondb_first_5k(shared_data: Path) -> None:
    ps = load_prompts(shared_data / "prompts" / "diffusiondb_first_5k.txt")
    assert (ps.n_read, ps.n_blank, ps.n_duplicates, len(ps)) == (5000, 1, 655, 4344)
    assert (
        load_prompts(shared_data / "prompts" / "diffusiondb_first_5k.txt", dedup=False).n_read
        == 5000
    )


def test_hadis_reference_prompts_stay_aligned_without_dedup(shared_data: Path) -> None:
    """The 5,000 prompts line up with 5,000 feature rows, so they must not be de-duplicated."""
    f = shared_data / "hadis-reference" / "prompts_imagenet1k_5k.txt"
    ps = load_prompts(f, encoding="ascii", errors="ignore", dedup=False)
    assert len(ps) == 5000 and load_prompts(f, encoding="ascii", errors="ignore").n_duplicates > 0
