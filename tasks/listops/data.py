"""ListOps data: vocabulary, parser, evaluator, generator and TSV files.

ListOps (Nangia & Bowman, 2018) expressions are prefix expressions over the
digits 0-9 with four operators, each closed by ``]``:

* ``[MIN`` and ``[MAX``: minimum and maximum of the arguments;
* ``[MED``: median; with an even number of arguments, the floor of the mean of
  the two middle values (the only rule that reproduces every label of the
  official validation set);
* ``[SM``: sum modulo 10.

The label is the value of the expression (10 classes). Files are
tab-separated ``label<TAB>expression`` lines where the expression carries extra
parentheses spelling out a left-branching parse::

    0	( ( ( ( ( [MIN 1 ) 6 ) 5 ) 0 ) ] )

This module needs only the standard library, so data tools run without torch.
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator, Sequence, Union

from gradbench.errors import DataError, UserError

__all__ = [
    "MIN", "MAX", "MED", "SM", "CLOSE", "OPERATORS", "DIGITS", "VOCAB", "TOKEN_TO_ID",
    "Node", "Tree", "Example", "Mismatch", "CheckResult", "ExpressionError",
    "token_ids", "tokenize", "parse", "evaluate", "depth", "format_expression",
    "generate", "read_tsv", "write_tsv", "check_file", "official_validation_path",
]

MIN = "[MIN"
MAX = "[MAX"
MED = "[MED"
SM = "[SM"
CLOSE = "]"
OPERATORS: tuple[str, ...] = (MIN, MAX, MED, SM)
DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))
# Digits first so that a digit's id equals its value; no padding token, so a
# model can use len(VOCAB) as its padding id.
VOCAB: tuple[str, ...] = DIGITS + OPERATORS + (CLOSE,)
TOKEN_TO_ID: dict[str, int] = {token: i for i, token in enumerate(VOCAB)}

# Length limits used by generate(); see its docstring for the reasons.
DEFAULT_MIN_LENGTH = 4
DEFAULT_MAX_LENGTH = 99
# generate() gives up after this many rejected draws in a row, so impossible
# settings (e.g. max_length too small for n unique examples) fail instead of
# looping forever.
_MAX_CONSECUTIVE_REJECTIONS = 100_000


class ExpressionError(ValueError):
    """A token sequence that is not a well-formed ListOps expression."""


@dataclass(frozen=True)
class Node:
    """An operator applied to its arguments (digits or other nodes)."""

    op: str
    args: tuple["Tree", ...]


Tree = Union[int, Node]


@dataclass(frozen=True)
class Example:
    """One labelled expression: the label, the file-format string and its tokens."""

    label: int
    expression: str
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class Mismatch:
    """A line whose stated label differs from the recomputed value."""

    line: int
    stated: int
    computed: int


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`check_file`: how many examples, which labels are wrong."""

    path: Path
    count: int
    mismatches: list[Mismatch] = field(default_factory=list)
    # Number of examples per recomputed label 0..9, for a summary line.
    label_counts: tuple[int, ...] = (0,) * 10

    @property
    def ok(self) -> bool:
        """True when every stated label equals the recomputed one."""
        return not self.mismatches


# --------------------------------------------------------------------------
# Tokens, trees and values


def token_ids(tokens: Sequence[str]) -> list[int]:
    """Map tokens to their indices in :data:`VOCAB`."""
    try:
        return [TOKEN_TO_ID[t] for t in tokens]
    except KeyError as exc:
        raise ExpressionError(_unknown_token_message(exc.args[0])) from None


def _unknown_token_message(token: str) -> str:
    """Say which token is unknown and which ones are allowed."""
    return f"unknown token {token!r}; expected one of {' '.join(VOCAB)}"


def tokenize(expression: str) -> list[str]:
    """Split an expression on whitespace and drop the parse parentheses.

    The parentheses only record the left-branching parse the generator used,
    so they carry no information; they are still checked for balance because
    an unbalanced count means the line was cut or edited by hand.
    """
    tokens: list[str] = []
    open_parens = 0
    for token in expression.split():
        if token == "(":
            open_parens += 1
        elif token == ")":
            open_parens -= 1
            if open_parens < 0:
                raise ExpressionError("unbalanced parentheses: ')' without a matching '('")
        else:
            if token not in TOKEN_TO_ID:
                raise ExpressionError(_unknown_token_message(token))
            tokens.append(token)
    if open_parens:
        raise ExpressionError(f"unbalanced parentheses: {open_parens} '(' never closed")
    if not tokens:
        raise ExpressionError("empty expression")
    return tokens


def parse(tokens: Sequence[str]) -> Tree:
    """Build the tree of a prefix token sequence such as ``['[MAX', '2', '1', ']']``.

    Uses an explicit stack rather than recursion so deeply nested input gives
    an :class:`ExpressionError`, never a RecursionError.
    """
    # Each frame is [operator, arguments so far].
    stack: list[tuple[str, list[Tree]]] = []
    root: Tree | None = None
    for position, token in enumerate(tokens):
        if root is not None:
            raise ExpressionError(f"extra token {token!r} after the end of the expression")
        if token in OPERATORS:
            stack.append((token, []))
            continue
        if token == CLOSE:
            if not stack:
                raise ExpressionError(f"unbalanced brackets: ']' at token {position + 1} closes nothing")
            op, args = stack.pop()
            if not args:
                raise ExpressionError(f"operator {op} has no arguments")
            value: Tree = Node(op, tuple(args))
        elif token in TOKEN_TO_ID:
            value = int(token)
        else:
            raise ExpressionError(_unknown_token_message(token))
        if stack:
            stack[-1][1].append(value)
        else:
            root = value
    if stack:
        raise ExpressionError(f"unbalanced brackets: {len(stack)} operator(s) never closed with ']'")
    if root is None:
        raise ExpressionError("empty expression")
    return root


def _apply(op: str, values: Sequence[int]) -> int:
    """Value of one operator applied to digit values."""
    if op == MIN:
        return min(values)
    if op == MAX:
        return max(values)
    if op == SM:
        return sum(values) % 10
    if op == MED:
        ordered = sorted(values)
        mid = len(ordered) // 2
        if len(ordered) % 2:
            return ordered[mid]
        # Floor of the mean of the two middle values: the original generator
        # took int(numpy.median(...)), and the official labels confirm it.
        return (ordered[mid - 1] + ordered[mid]) // 2
    raise ExpressionError(f"unknown operator {op!r}; expected one of {' '.join(OPERATORS)}")


def evaluate(expression: Tree | Sequence[str] | str) -> int:
    """Value (0-9) of a tree, a token sequence or an expression string."""
    if isinstance(expression, str):
        expression = tokenize(expression)
    tree = expression if isinstance(expression, (int, Node)) else parse(expression)
    return _evaluate_tree(tree)


def _evaluate_tree(tree: Tree) -> int:
    """Recursive evaluation; ListOps trees are at most ~20 levels deep."""
    if isinstance(tree, Node):
        return _apply(tree.op, [_evaluate_tree(arg) for arg in tree.args])
    return tree


def depth(tree: Tree) -> int:
    """Number of levels: 1 for a digit, 1 + deepest argument for an operator.

    This is the depth the generator's ``max_depth`` bounds (root at level 1).
    """
    if isinstance(tree, Node):
        return 1 + max(depth(arg) for arg in tree.args)
    return 1


def format_expression(tree: Tree) -> str:
    """The official string of a tree, with its left-branching parentheses.

    An operator with arguments a1..ak is written as the left-nested pairs
    ``((((OP a1) a2) ...) ak) ]``, i.e. ``( ( ( [MIN a1 ) a2 ) ] )`` for k=2.
    """
    if not isinstance(tree, Node):
        return str(tree)
    parts = ["( " * (len(tree.args) + 1), tree.op, " ", format_expression(tree.args[0])]
    for arg in tree.args[1:]:
        parts += [" ) ", format_expression(arg)]
    parts.append(" ) ] )")
    return "".join(parts)


def _tokens_of(tree: Tree) -> list[str]:
    """Prefix tokens of a tree (the expression without parentheses)."""
    if not isinstance(tree, Node):
        return [str(tree)]
    tokens = [tree.op]
    for arg in tree.args:
        tokens += _tokens_of(arg)
    tokens.append(CLOSE)
    return tokens


def _example_of(tree: Tree) -> Example:
    """Label, official string and tokens of a tree."""
    return Example(_evaluate_tree(tree), format_expression(tree), tuple(_tokens_of(tree)))


# --------------------------------------------------------------------------
# Generator


class _TooLong(Exception):
    """Raised inside the generator as soon as a tree exceeds the length budget."""


def generate(
    n: int,
    seed: int,
    max_args: int = 5,
    max_depth: int = 20,
    branching_prob: float = 0.25,
    min_length: int = DEFAULT_MIN_LENGTH,
    max_length: int = DEFAULT_MAX_LENGTH,
    unique: bool = True,
) -> list[Example]:
    """Draw ``n`` random labelled expressions; the same arguments give the same list.

    Trees grow as in the original ListOps generator: a node at level
    ``< max_depth`` (the root is level 1) is, with probability
    ``branching_prob``, an operator drawn uniformly from MIN/MAX/MED/SM with a
    uniform number of arguments in ``2..max_args``, each grown one level down;
    otherwise (and always at level ``max_depth``) it is a uniform digit.
    ``max_args=5``, ``max_depth=20`` and ``branching_prob=0.25`` are the
    original defaults.

    Trees whose token count (parentheses excluded) lies outside
    ``min_length..max_length`` (inclusive) are rejected and redrawn.
    ``min_length=4`` (the shortest operator expression, ``[OP a b ]``) drops
    bare digits, as in the official data, which has none. ``max_length=99``
    follows the GST paper's "sequences under 100 tokens";
    the original script had no length limit (its validation set reaches 911
    tokens), so pass a large ``max_length`` to approach it.

    With ``unique`` (the default, as in the original, which collected examples
    in a set) repeated expressions are redrawn too; this makes short
    expressions rarer than independent draws would.
    """
    _check_generate_args(n, max_args, max_depth, branching_prob, min_length, max_length)
    rng = random.Random(seed)
    examples: list[Example] = []
    seen: set[str] = set()
    rejected_in_a_row = 0
    while len(examples) < n:
        tree = _draw_tree(rng, max_args, max_depth, branching_prob, max_length)
        example = None if tree is None else _example_of(tree)
        if (
            example is None
            or len(example.tokens) < min_length
            or (unique and example.expression in seen)
        ):
            rejected_in_a_row += 1
            if rejected_in_a_row >= _MAX_CONSECUTIVE_REJECTIONS:
                raise UserError(
                    f"listops generator found only {len(examples)} of {n} examples after "
                    f"{rejected_in_a_row} rejected draws in a row (min_length={min_length}, "
                    f"max_length={max_length}, unique={unique}); fix: widen the length limits, "
                    "ask for fewer examples or allow duplicates"
                )
            continue
        rejected_in_a_row = 0
        seen.add(example.expression)
        examples.append(example)
    return examples


MAX_EXAMPLES = 10_000_000
MAX_DEPTH = 200


def _check_generate_args(
    n: int, max_args: int, max_depth: int, branching_prob: float, min_length: int, max_length: int
) -> None:
    """Reject settings that cannot produce ListOps data, naming the fix."""
    problems = []
    if not 0 <= n <= MAX_EXAMPLES:  # all examples are held in memory before the file is written
        problems.append(f"n={n} must be in 0..{MAX_EXAMPLES:,}")
    if not 2 <= max_args <= 1000:
        problems.append(f"max_args={max_args} must be in 2..1000")
    if not 1 <= max_depth <= MAX_DEPTH:  # trees are grown recursively: deeper would exhaust the stack
        problems.append(f"max_depth={max_depth} must be in 1..{MAX_DEPTH}")
    if not 0.0 <= branching_prob <= 1.0:
        problems.append(f"branching_prob={branching_prob} must be in [0, 1]")
    if min_length < 1 or max_length < min_length:
        problems.append(f"need 1 <= min_length <= max_length, got {min_length} and {max_length}")
    if problems:
        raise UserError("bad listops generator settings: " + "; ".join(problems))


def _draw_tree(
    rng: random.Random, max_args: int, max_depth: int, branching_prob: float, max_length: int
) -> Tree | None:
    """One tree, or None when it would exceed ``max_length`` tokens.

    Stopping as soon as the budget is spent gives the same distribution as
    growing the whole tree and rejecting it, without building huge trees.
    """
    budget = [max_length]
    try:
        return _grow(rng, 1, max_args, max_depth, branching_prob, budget)
    except _TooLong:
        return None


def _grow(
    rng: random.Random, level: int, max_args: int, max_depth: int, branching_prob: float,
    budget: list[int],
) -> Tree:
    """Grow a subtree at ``level``, spending one budget unit per token."""
    if level < max_depth and rng.random() < branching_prob:
        _spend(budget, 2)  # the operator and its closing bracket
        op = rng.choice(OPERATORS)
        n_args = rng.randint(2, max_args)
        args = tuple(
            _grow(rng, level + 1, max_args, max_depth, branching_prob, budget) for _ in range(n_args)
        )
        return Node(op, args)
    _spend(budget, 1)
    return rng.randrange(10)


def _spend(budget: list[int], tokens: int) -> None:
    """Take tokens from the remaining budget, aborting the tree when it runs out."""
    budget[0] -= tokens
    if budget[0] < 0:
        raise _TooLong


# --------------------------------------------------------------------------
# Files


def read_tsv(path: str | os.PathLike[str]) -> list[Example]:
    """Read a ``label<TAB>expression`` file; blank lines are skipped.

    Raises :class:`DataError` naming the path, the line and the fix for a
    missing file, a malformed line, an unknown token or unbalanced brackets.
    """
    return [example for _, example in _iter_tsv(Path(path))]


def _iter_tsv(path: Path) -> Iterator[tuple[int, Example]]:
    """Yield (line number, example) for each non-blank line of a ListOps file."""
    text = _read_text(path)
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        yield line_no, _parse_line(path, line_no, line)


def _read_text(path: Path) -> str:
    """Whole file as UTF-8 text, with file-system problems as DataError."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"ListOps file not found: {path}; fix: check the path, or generate one "
            "with gradbench.tasks.listops.data.generate and write_tsv"
        ) from None
    except IsADirectoryError:
        raise DataError(f"ListOps path is a folder, not a file: {path}; fix: give the .tsv file") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"ListOps file is not UTF-8 text: {path} (byte {exc.start}); "
            "fix: give a label<TAB>expression text file"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read ListOps file {path}: {exc.strerror}; fix: check its permissions") from None


def _parse_line(path: Path, line_no: int, line: str) -> Example:
    """One ``label<TAB>expression`` line as an Example; DataError otherwise."""
    where = f"{path}:{line_no}"
    fields = line.split("\t")
    if len(fields) != 2:
        raise DataError(
            f"malformed ListOps line {where}: expected 'label<TAB>expression', found "
            f"{len(fields)} tab-separated field(s); fix: one tab between a digit label and the expression"
        )
    label_text, expression = fields
    if label_text.strip() not in DIGITS:
        raise DataError(
            f"malformed ListOps line {where}: label {label_text!r} is not a digit 0-9; "
            "fix: put the expression's value before the tab"
        )
    try:
        tokens = tokenize(expression)
        parse(tokens)
    except ExpressionError as exc:
        raise DataError(
            f"bad ListOps expression at {where}: {exc}; fix: correct or remove the line"
        ) from None
    return Example(int(label_text), expression, tuple(tokens))


def write_tsv(path: str | os.PathLike[str], examples: Sequence[Example]) -> None:
    """Write examples as ``label<TAB>expression`` lines, atomically.

    The data go to a temporary file in the same folder that then replaces
    ``path``, so readers never see a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep an existing file's permissions; mkstemp would otherwise leave 0600.
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for example in examples:
                handle.write(f"{example.label}\t{example.expression}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException as exc:
        # Leave no stray temporary file behind, whatever went wrong.
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # full disk: name the file in the one-line error
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def check_file(path: str | os.PathLike[str]) -> CheckResult:
    """Recompute every label of a ListOps file and list the lines that disagree."""
    path = Path(path)
    count = 0
    mismatches: list[Mismatch] = []
    label_counts = [0] * 10
    for line_no, example in _iter_tsv(path):
        computed = evaluate(example.tokens)
        count += 1
        label_counts[computed] += 1
        if computed != example.label:
            mismatches.append(Mismatch(line_no, example.label, computed))
    return CheckResult(path, count, mismatches, tuple(label_counts))


def official_validation_path() -> Path:
    """Path of the embedded copy of the official 1,000-line validation set."""
    return Path(str(resources.files(__package__).joinpath("valid.tsv")))
