"""`gradbench data listops`: generate ListOps examples or check an official-format file's labels.

Declared by the task (``ListOps.data_commands``) and loaded by the CLI only when run;
imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from gradbench.errors import UserError

console = Console()


def data_listops(
    out: Annotated[Optional[Path], typer.Option(help="Write generated examples to this official-format file.")] = None,
    check: Annotated[Optional[Path], typer.Option(help="Recompute every label of an official-format file; "
                                                  "exit 1 if any differs.")] = None,
    n: Annotated[int, typer.Option(help="Examples to generate.")] = 1000,
    seed: Annotated[int, typer.Option(help="Generator seed; same seed, same file.")] = 0,
    max_args: Annotated[int, typer.Option(help="Most arguments of an operator.")] = 5,
    max_depth: Annotated[int, typer.Option(help="Deepest nesting (the root is level 1).")] = 20,
    branching_prob: Annotated[float, typer.Option(help="Probability that a node below max_depth is an "
                                                  "operator.")] = 0.25,
    min_length: Annotated[int, typer.Option(help="Shortest expression in tokens (parentheses excluded).")] = 4,
    max_length: Annotated[int, typer.Option(help="Longest expression in tokens (99: under 100, as in GST).")] = 99,
    duplicates: Annotated[bool, typer.Option("--duplicates/--unique", help="Allow repeated expressions.")] = False,
):
    """Write generated ListOps examples (--out) or check an official-format file's labels (--check)."""
    from . import data

    if (out is None) == (check is None):
        raise UserError("give exactly one of --out FILE (generate) or --check FILE (verify labels)")
    if check is not None:
        result = data.check_file(check)
        for m in result.mismatches[:20]:
            console.print(f"{check}:{m.line}: label {m.stated}, value {m.computed}", markup=False, soft_wrap=True)
        if len(result.mismatches) > 20:
            console.print(f"... and {len(result.mismatches) - 20} more", markup=False)
        console.print(f"{check}: {result.count} examples, {len(result.mismatches)} mismatched labels", markup=False,
                      soft_wrap=True)
        return 0 if result.ok else 1
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    examples = data.generate(n, seed, max_args, max_depth, branching_prob, min_length, max_length, not duplicates)
    data.write_tsv(out, examples)
    console.print(f"wrote {len(examples)} examples to {out}", markup=False, soft_wrap=True)
    return 0
