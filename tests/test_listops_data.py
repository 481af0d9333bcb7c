"""Tests for the ListOps data module: evaluator, format, generator and files."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import pytest

from gradbench.errors import DataError, UserError
from gradbench.tasks.listops import data as listops
from gradbench.tasks.listops.data import (
    CLOSE, MAX, MED, MIN, OPERATORS, SM, VOCAB, Example, ExpressionError, Node,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CANDIDATES = [
    Path("/work/shared/data/listops/valid.tsv"),
    REPO_ROOT.parent / "shared" / "data" / "listops" / "valid.tsv",
]


@pytest.fixture(scope="module")
def official_lines() -> list[str]:
    """Lines of the embedded official validation set."""
    return listops.official_validation_path().read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def generated() -> list[Example]:
    """2,000 examples with the default settings (shared by several tests)."""
    return listops.generate(2000, seed=0)


# --- official data -------------------------------------------------------


def test_official_labels_all_reproduced():
    result = listops.check_file(listops.official_validation_path())
    assert result.count == 1000
    assert result.mismatches == []
    assert result.ok
    assert sum(result.label_counts) == 1000


def test_format_round_trip_is_byte_identical(official_lines):
    assert len(official_lines) == 1000
    for line in official_lines:
        expression = line.split("\t")[1]
        tree = listops.parse(listops.tokenize(expression))
        assert listops.format_expression(tree) == expression


def test_embedded_copy_matches_shared_copy():
    shared = next((p for p in SHARED_CANDIDATES if p.is_file()), None)
    if shared is None:
        pytest.skip("shared ListOps validation set not available")
    assert listops.official_validation_path().read_bytes() == shared.read_bytes()


@pytest.mark.parametrize(
    "even_median, expect_all_right",
    [
        (lambda a, b: (a + b) // 2, True),   # floor of the mean: the rule we use
        (lambda a, b: -(-(a + b) // 2), False),  # ceiling of the mean
        (lambda a, b: round((a + b) / 2), False),  # round half to even
        (lambda a, b: a, False),  # lower middle value
        (lambda a, b: b, False),  # upper middle value
    ],
)
def test_official_labels_single_out_floor_median(official_lines, even_median, expect_all_right):
    def value(tree):
        if not isinstance(tree, Node):
            return tree
        args = sorted(value(a) for a in tree.args)
        if tree.op == MED and len(args) % 2 == 0:
            return even_median(args[len(args) // 2 - 1], args[len(args) // 2])
        return listops.evaluate(Node(tree.op, tuple(args)))

    wrong = sum(
        value(listops.parse(listops.tokenize(expr))) != int(label)
        for label, expr in (line.split("\t") for line in official_lines)
    )
    assert (wrong == 0) == expect_all_right


def _nodes(tree):
    """All operator nodes of a tree."""
    if isinstance(tree, Node):
        yield tree
        for arg in tree.args:
            yield from _nodes(arg)


# --- tokens, parser, evaluator -------------------------------------------


def test_tokenize_drops_parentheses():
    assert listops.tokenize("( ( ( ( [MAX 2 ) 1 ) 4 ) ] )") == [MAX, "2", "1", "4", CLOSE]


def test_vocab_and_token_ids():
    assert len(VOCAB) == 15 and len(set(VOCAB)) == 15
    assert listops.token_ids(["0", "9", MIN, CLOSE]) == [0, 9, VOCAB.index(MIN), VOCAB.index(CLOSE)]
    with pytest.raises(ExpressionError):
        listops.token_ids(["[FIRST"])


@pytest.mark.parametrize(
    "op, args, value",
    [
        (MIN, [3, 1, 2], 1),
        (MAX, [3, 1, 2], 3),
        (SM, [9, 8, 7], 4),
        (MED, [5, 1, 3], 3),
        (MED, [1, 2], 1),      # floor(1.5)
        (MED, [9, 0, 4, 7], 5),  # middles 4 and 7 -> floor(5.5)
        (MED, [2, 4, 4, 2], 3),
    ],
)
def test_operator_values(op, args, value):
    assert listops.evaluate(Node(op, tuple(args))) == value
    assert listops.evaluate([op, *map(str, args), CLOSE]) == value


def test_evaluate_nested_string():
    assert listops.evaluate("[SM [MAX 2 9 ] [MIN 4 7 ] 5 ]") == 8


@pytest.mark.parametrize(
    "expression, message",
    [
        ("[MIN 1 2", "never closed"),
        ("[MIN 1 2 ] ]", "extra token"),
        ("1 2 ]", "extra token"),
        ("] 1", "closes nothing"),
        ("[MIN ]", "no arguments"),
        ("[MIN 1 12 ]", "unknown token"),
        ("( [MIN 1 2 ]", "parentheses"),
        ("[MIN 1 2 ] )", "parentheses"),
        ("( )", "empty"),
    ],
)
def test_parse_errors(expression, message):
    with pytest.raises(ExpressionError, match=message):
        listops.parse(listops.tokenize(expression))


def test_depth():
    assert listops.depth(7) == 1
    assert listops.depth(listops.parse(listops.tokenize("[MIN 1 [MAX 2 [SM 3 4 ] ] ]"))) == 4


# --- generator -----------------------------------------------------------


def test_generate_is_deterministic():
    assert listops.generate(200, seed=3) == listops.generate(200, seed=3)


def test_generate_seeds_differ():
    a = [e.expression for e in listops.generate(200, seed=1)]
    b = [e.expression for e in listops.generate(200, seed=2)]
    assert a != b


def test_generated_examples_are_consistent(generated):
    assert len(generated) == 2000
    for example in generated:
        assert listops.tokenize(example.expression) == list(example.tokens)
        assert listops.evaluate(example.tokens) == example.label
        assert listops.format_expression(listops.parse(example.tokens)) == example.expression


def test_generate_default_limits(generated):
    lengths = [len(e.tokens) for e in generated]
    assert min(lengths) >= listops.DEFAULT_MIN_LENGTH
    assert max(lengths) <= listops.DEFAULT_MAX_LENGTH
    assert len({e.expression for e in generated}) == len(generated)  # unique by default
    for example in generated:
        tree = listops.parse(example.tokens)
        assert isinstance(tree, Node)
        assert listops.depth(tree) <= 20
        assert all(2 <= len(n.args) <= 5 for n in _nodes(tree))


def test_generate_respects_custom_limits():
    examples = listops.generate(300, seed=5, max_args=3, max_depth=3, min_length=8, max_length=20)
    for example in examples:
        tree = listops.parse(example.tokens)
        assert 8 <= len(example.tokens) <= 20
        assert listops.depth(tree) <= 3
        assert all(2 <= len(n.args) <= 3 for n in _nodes(tree))
    # Depth 3 is reached, so the limit is binding rather than vacuous.
    assert max(listops.depth(listops.parse(e.tokens)) for e in examples) == 3


def test_generate_without_unique_allows_repeats():
    examples = listops.generate(3000, seed=0, max_length=4, unique=False)
    assert all(len(e.tokens) == 4 for e in examples)
    assert len({e.expression for e in examples}) < len(examples)


def test_generated_mix_is_sane(generated):
    labels = collections.Counter(e.label for e in generated)
    assert set(labels) == set(range(10))
    assert max(labels.values()) < 3 * min(labels.values())
    ops = collections.Counter(t for e in generated for t in e.tokens if t in OPERATORS)
    total = sum(ops.values())
    assert set(ops) == set(OPERATORS)
    assert all(0.15 < count / total < 0.35 for count in ops.values())
    # Deep trees appear, not only flat lists.
    assert max(listops.depth(listops.parse(e.tokens)) for e in generated) >= 5


def test_generate_rejects_bad_settings():
    with pytest.raises(UserError, match="max_args"):
        listops.generate(10, seed=0, max_args=1)
    with pytest.raises(UserError, match="min_length"):
        listops.generate(10, seed=0, min_length=50, max_length=10)


def test_generate_gives_up_on_impossible_requests(monkeypatch):
    # Only 400 distinct length-4 expressions exist, so 401 unique ones cannot.
    monkeypatch.setattr(listops, "_MAX_CONSECUTIVE_REJECTIONS", 2000)
    with pytest.raises(UserError, match=r"found only \d+ of 401"):
        listops.generate(401, seed=0, max_length=4)


# --- files ---------------------------------------------------------------


def test_write_then_read_round_trip(tmp_path, generated):
    path = tmp_path / "sub" / "train.tsv"
    listops.write_tsv(path, generated[:300])
    assert listops.read_tsv(path) == generated[:300]
    assert [p.name for p in path.parent.iterdir()] == ["train.tsv"]  # no temp file left
    assert path.stat().st_mode & 0o777 == 0o644


def test_read_official_file():
    examples = listops.read_tsv(listops.official_validation_path())
    assert len(examples) == 1000
    assert examples[1] == Example(0, "( ( ( ( ( [MIN 1 ) 6 ) 5 ) 0 ) ] )", (MIN, "1", "6", "5", "0", CLOSE))


def test_write_tsv_replaces_atomically_and_cleans_up_on_error(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("old\n")

    class Boom:
        label = 1

        @property
        def expression(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        listops.write_tsv(path, [Boom()])
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["data.tsv"]


def test_check_file_reports_wrong_label(tmp_path, official_lines):
    lines = official_lines[:20]
    label, expression = lines[6].split("\t")
    wrong = (int(label) + 3) % 10
    lines[6] = f"{wrong}\t{expression}"
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + "\n")
    result = listops.check_file(path)
    assert result.count == 20
    assert not result.ok
    assert result.mismatches == [listops.Mismatch(line=7, stated=wrong, computed=int(label))]


def test_missing_file_is_data_error(tmp_path):
    with pytest.raises(DataError, match="not found: .*nope.tsv"):
        listops.read_tsv(tmp_path / "nope.tsv")
    with pytest.raises(DataError, match="not found"):
        listops.check_file(tmp_path / "nope.tsv")


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("4 ( ( ( [MAX 2 ) 4 ) ] )", "malformed ListOps line .*:3: expected 'label<TAB>expression'"),
        ("x\t( ( ( [MAX 2 ) 4 ) ] )", "malformed ListOps line .*:3: label 'x'"),
        ("4\t( ( ( [MAX 2 ) 4 ) ] )\textra", "malformed ListOps line .*:3"),
        ("4\t( ( ( [MAX 2 ) 41 ) ] )", "bad ListOps expression at .*:3: unknown token '41'"),
        ("4\t( ( ( [MAX 2 ) 4 ) )", "bad ListOps expression at .*:3: unbalanced brackets"),
        ("4\t( ( ( [MAX 2 ) 4 ) ] ) ]", "bad ListOps expression at .*:3: unbalanced parentheses|extra token"),
        ("4\t( ( ( [MAX 2 ) 4 ) ]", "bad ListOps expression at .*:3: unbalanced parentheses"),
    ],
)
def test_bad_lines_are_data_errors_with_line_numbers(tmp_path, bad_line, message):
    path = tmp_path / "bad.tsv"
    path.write_text(f"0\t( ( ( [MIN 0 ) 1 ) ] )\n\n{bad_line}\n")
    with pytest.raises(DataError, match=message) as info:
        listops.read_tsv(path)
    assert "\n" not in str(info.value)
    assert "fix:" in str(info.value)


def test_data_module_does_not_import_torch():
    # Checked in a fresh interpreter: other tests may have imported torch.
    import subprocess

    code = "import sys, gradbench.tasks.listops.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
