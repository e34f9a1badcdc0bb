"""Turning a lesson's check cell into what runs in the sandbox and what stays with the grader.

A check cell reads like ordinary Python for the learner (and ``%seqlab check`` and nbval run
it as it is)::

    async def five_tellers():
        check_equal(await safe_deposits(5, 10), 50, what="the balance")

    check_explore(five_tellers, seeds=range(50), check=through_one_sequencer(5), what="...")

For grading, :func:`compile_check` splits it, in the grading process, without running any
learner code:

- every ``check_equal(actual, expected, what=...)`` becomes ``__seqlab_observe__.equal(k,
  actual)`` in the sandbox; ``expected`` is evaluated here and never sent. It may call
  functions of the cell (they are defined here too): the grader then works out the answer
  itself, e.g. by running a program of the cell that the learner's code is pointed at. Such
  a function stays in the sandbox's copy only if other code of the cell uses it too;
- ``check(condition, message)`` becomes ``__seqlab_observe__.truth(k, condition)``;
- ``check_explore(fn, *args, seeds=..., check=rule, what=...)`` becomes
  ``__seqlab_observe__.explore(k, fn, *args, seeds=..., trace=True)``: the runner explores
  and sends each run's observations, error and trace; ``rule`` (and every helper only the
  rules use) runs here, on the trace as data;
- ``check_raises(exc, fn, *args)`` becomes ``__seqlab_observe__.raises(k, fn, *args)``.

Line numbers are kept (a rewritten call keeps its lines), so an error in the cell is placed
in its visible or hidden part. ``what`` and ``message`` must be string literals: they are the
grader's words, not values computed by learner code.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .lesson import BEGIN_HIDDEN, END_HIDDEN

__all__ = ["LessonError", "Site", "CompiledCheck", "compile_check", "OBSERVER"]

OBSERVER = "__seqlab_observe__"
_HELPERS = {"check_equal", "check", "check_explore", "check_raises"}


class LessonError(ValueError):
    """A check cell the grader cannot split (the message names the cell and line)."""


@dataclass
class Site:
    """One check call in a check cell."""

    id: int
    kind: str  # "equal", "truth", "explore" or "raises"
    line: int
    hidden: bool
    what: str
    expected: Any = None
    rule: Callable[[Any], Any] | None = None
    rule_doc: str = ""
    replay: str = ""
    scenario: str | None = None  # explore: the scenario function's name when defined here
    inside: str | None = None  # the top-level function this call sits in, if any


@dataclass
class CompiledCheck:
    grade_id: str
    worker_source: str
    sites: dict[int, Site]
    hidden_lines: set[int] = field(default_factory=set)
    # The sandbox's copy with its rules kept (see ``keep_rules``), to replay a run that only a
    # rule rejected; "" when there is no such exploration (or it may not be sent: hidden).
    explain_source: str = ""

    def scenario_sites(self, name: str | None) -> list[Site]:
        return [s for s in self.sites.values() if name is not None and s.inside == name]

    @property
    def top_level_sites(self) -> list[Site]:
        return [s for s in self.sites.values() if s.inside is None and s.kind != "explore"]


def _hidden_lines(source: str) -> set[int]:
    hidden: set[int] = set()
    inside = False
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith(BEGIN_HIDDEN):
            inside = True
        elif stripped.startswith(END_HIDDEN):
            inside = False
        if inside:
            hidden.add(number)
    return hidden


def _offsets(source: str) -> list[int]:
    """Character offset of the start of each line (1-based line -> index lines[line-1])."""
    starts, total = [], 0
    for line in source.splitlines(keepends=True):
        starts.append(total)
        total += len(line)
    starts.append(total)
    return starts


def _char(source_lines: list[str], starts: list[int], line: int, byte_col: int) -> int:
    text = source_lines[line - 1].encode("utf-8")[:byte_col].decode("utf-8", errors="ignore")
    return starts[line - 1] + len(text)


def compile_check(
    source: str, grade_id: str, skip_visible_explores: bool = False, keep_rules: bool = False
) -> CompiledCheck:
    """Split check cell ``source`` (see the module docstring); raises :class:`LessonError`.

    With ``skip_visible_explores``, explorations outside the hidden part are left out (the
    grader has already run them from the visible part alone).

    With ``keep_rules`` (for visible parts only: their rules are in the learner's notebook
    anyway), the rules stay in the sandbox's copy too and each exploration with a rule gets
    it as ``rule=``: a failing run can then be replayed there, shrunk and explained."""
    label = f"check cell {grade_id!r}"
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise LessonError(f"{label}: line {exc.lineno}: {exc.msg}") from None
    hidden = _hidden_lines(source)
    lines = source.splitlines(keepends=True)
    starts = _offsets(source)

    def span(node: ast.AST) -> tuple[int, int]:
        return (
            _char(lines, starts, node.lineno, node.col_offset),  # type: ignore[attr-defined]
            _char(lines, starts, node.end_lineno, node.end_col_offset),  # type: ignore[attr-defined]
        )

    def text(node: ast.AST) -> str:
        a, b = span(node)
        return source[a:b]

    # Names the trace rules need: defined here, run only in the grader.
    rule_names: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "check_explore"
        ):
            for kw in node.keywords:
                if kw.arg == "check":
                    rule_names |= {n.id for n in ast.walk(kw.value) if isinstance(n, ast.Name)}
    # Functions an expected value is computed with (the grader's own answer, e.g. running
    # a program of the cell under a seed): defined here too, and kept in the sandbox's copy.
    defs = {s.name: s for s in tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
    expected_nodes = [
        n
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "check_equal"
        and len(node.args) == 2
        for n in ast.walk(node.args[1])
    ]
    pending = [n.id for n in expected_nodes if isinstance(n, ast.Name) and n.id in defs]
    answer_names: set[str] = set()
    while pending:
        name = pending.pop()
        if name not in answer_names:
            answer_names.add(name)
            pending += [
                n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name) and n.id in defs
            ]
    # Of those, the ones nothing but an expected value (or another of them) uses are the
    # grader's answer alone: left out of the sandbox's copy, as rules are.
    inside_answers = {id(n) for n in expected_nodes}
    inside_answers |= {id(n) for name in answer_names for n in ast.walk(defs[name])}
    used_elsewhere = {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and n.id in answer_names and id(n) not in inside_answers
    }
    grader_ns: dict[str, Any] = {"__builtins__": builtins, "__name__": f"seqlab_check_{grade_id}"}
    edits: list[tuple[int, int, str]] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            exec(compile(ast.Module([stmt], []), f"<{label}>", "exec"), grader_ns)
        elif isinstance(stmt, ast.FunctionDef) and stmt.name in rule_names:
            exec(compile(ast.Module([stmt], []), f"<{label}>", "exec"), grader_ns)
            if not keep_rules:
                a, b = span(stmt.decorator_list[0] if stmt.decorator_list else stmt)
                edits.append((a, b, "\n" * source[a:b].count("\n") + "pass"))
        elif (
            isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name in answer_names
        ):
            exec(compile(ast.Module([stmt], []), f"<{label}>", "exec"), grader_ns)
            if stmt.name not in used_elsewhere and stmt.name not in rule_names:
                a, b = span(stmt.decorator_list[0] if stmt.decorator_list else stmt)
                edits.append((a, b, "\n" * source[a:b].count("\n") + "pass"))

    def grader_eval(node: ast.expr, role: str) -> Any:
        try:
            return eval(compile(ast.Expression(node), f"<{label}>", "eval"), grader_ns)
        except Exception as exc:
            raise LessonError(
                f"{label}, line {node.lineno}: the grader cannot work out {role} "
                f"{text(node)!r} by itself ({type(exc).__name__}: {exc}); it may use only "
                "literals, builtins, imports and functions of this cell"
            ) from None

    def literal(node: ast.expr | None, role: str, default: str) -> str:
        if node is None:
            return default
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        raise LessonError(f"{label}, line {node.lineno}: {role} must be a string literal")

    sites: dict[int, Site] = {}
    top_defs = {
        s.name: s for s in tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
    }

    def owner(node: ast.AST) -> str | None:
        for name, fn in top_defs.items():
            if fn.lineno <= node.lineno <= (fn.end_lineno or fn.lineno):  # type: ignore[attr-defined]
                return name
        return None

    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _HELPERS
        ):
            continue
        where = owner(node)
        if where in rule_names:
            continue
        kind = node.func.id
        k = len(sites)
        keywords = {kw.arg: kw.value for kw in node.keywords}
        site = Site(k, kind, node.lineno, node.lineno in hidden, "", inside=where)
        if kind == "check_equal":
            if len(node.args) != 2 or set(keywords) - {"what"}:
                raise LessonError(
                    f"{label}, line {node.lineno}: use check_equal(actual, expected, what=...)"
                )
            site.kind = "equal"
            site.what = literal(keywords.get("what"), "what=", "the result")
            site.expected = grader_eval(node.args[1], "the expected value")
            call = f"{OBSERVER}.equal({k}, {text(node.args[0])}"
        elif kind == "check":
            if len(node.args) != 2 or keywords:
                raise LessonError(f"{label}, line {node.lineno}: use check(condition, message)")
            site.kind = "truth"
            site.what = literal(node.args[1], "the message", "")
            call = f"{OBSERVER}.truth({k}, {text(node.args[0])}"
        elif kind == "check_raises":
            if len(node.args) < 2 or set(keywords) - {"what"}:
                raise LessonError(
                    f"{label}, line {node.lineno}: use check_raises(Error, fn, *args)"
                )
            site.kind = "raises"
            expected = grader_eval(node.args[0], "the expected exception")
            names = expected if isinstance(expected, tuple) else (expected,)
            site.expected = tuple(e.__name__ for e in names)
            site.what = literal(keywords.get("what"), "what=", f"{text(node.args[1])}()")
            call = f"{OBSERVER}.raises({k}, " + ", ".join(text(a) for a in node.args[1:])
        else:
            if not node.args or set(keywords) - {"seeds", "check", "what"}:
                raise LessonError(
                    f"{label}, line {node.lineno}: use check_explore(fn, *args, seeds=..., "
                    "check=rule, what=...)"
                )
            if where is not None:
                raise LessonError(
                    f"{label}, line {node.lineno}: check_explore must be at top level"
                )
            site.kind = "explore"
            fn_text = text(node.args[0])
            site.what = literal(keywords.get("what"), "what=", fn_text)
            site.replay = ", ".join(text(a) for a in node.args)
            if isinstance(node.args[0], ast.Name) and node.args[0].id in top_defs:
                site.scenario = node.args[0].id
            if "check" in keywords:
                rule = grader_eval(keywords["check"], "the trace rule")
                if not callable(rule):
                    raise LessonError(f"{label}, line {node.lineno}: check= must be a function")
                site.rule = rule
                site.rule_doc = " ".join((getattr(rule, "__doc__", None) or "").split()) or (
                    f"the rule {text(keywords['check'])} (check=) accepts the trace"
                )
            if skip_visible_explores and not site.hidden:
                a, b = span(node)
                edits.append((a, b, "None" + "\n" * source[a:b].count("\n")))
                continue
            parts = [text(a) for a in node.args]
            if "seeds" in keywords:
                parts.append(f"seeds={text(keywords['seeds'])}")
            parts.append(f"trace={site.rule is not None}")
            if keep_rules and site.rule is not None:
                parts.append(f"rule={text(keywords['check'])}")
            call = f"{OBSERVER}.explore({k}, " + ", ".join(parts)
        a, b = span(node)
        pad = source[a:b].count("\n") - call.count("\n")
        edits.append((a, b, call + "\n" * max(pad, 0) + ")"))
        sites[k] = site
    edits.sort()
    out, last = [], 0
    for a, b, replacement in edits:
        if a < last:  # a check call nested in another one's argument: keep the outer edit
            continue
        out.append(source[last:a])
        out.append(replacement)
        last = b
    out.append(source[last:])
    worker = "".join(out)
    for site in sites.values():
        if site.kind == "explore" and site.scenario is not None and not site.hidden:
            site.hidden = any(s.hidden for s in sites.values() if s.inside == site.scenario)
    return CompiledCheck(grade_id, worker, sites, hidden)
