"""The query line of the runs tables: `test_auc >= 0.98 and arch == "seed_cnn"`, `tags contains paper`,
over any setting or metric; a query that cannot be read says which column, operator or value is wrong."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.present.compare import flatten, is_number


QUERY_OPERATORS = (">=", "<=", "!=", "==", ">", "<", "contains")
ORDER_OPERATORS = (">=", "<=", ">", "<")
QUERY_EXAMPLE = 'test_auc >= 0.98 and arch == "seed_cnn"'
# A condition: column, operator, value. The operator is every operator character in a row (spaces
# between them too), so a slip such as '>>=' or '> =' is named as the operator, not read as a value.
_CONDITION = re.compile(r"^(?P<column>[A-Za-z_][\w.]*)\s*(?P<op>[<>=!](?:\s*[<>=!])*|contains\b)\s*(?P<value>.*)$",
                        re.IGNORECASE | re.DOTALL)
_PIECES = re.compile(r'"[^"]*"|\'[^\']*\'|\band\b|[^"\'a]+|a', re.IGNORECASE)


class QueryError(ValueError):
    """A query line that cannot be read; the message names the column, operator or value at fault."""


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: object   # a number, True/False, or text
    text: str       # the value as written (without quotes)
    quoted: bool


def query_frame(table: pd.DataFrame, configs: dict[str, dict]) -> pd.DataFrame:
    """The runs table plus every flattened setting of each run's config (e.g. 'augmentation.zoom'),
    the columns a query may name; the table's own columns win (its 'name' is the display name)."""
    flat = pd.DataFrame([flatten(configs.get(run_id) or {}) for run_id in table["run_id"]], index=table.index)
    extra = [column for column in flat.columns if column not in table.columns]
    return pd.concat([table, flat[extra]], axis=1) if extra else table


def query_runs(table: pd.DataFrame, query: str, columns: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of `table` meeting every condition of `query` ('column op value' joined by 'and');
    `columns` (query_frame) holds what the conditions may name, by default the table itself. An
    empty cell meets no condition. QueryError for a query that cannot be read."""
    columns = table if columns is None else columns
    keep = pd.Series(True, index=table.index)
    for condition in parse_query(query, list(columns.columns)):
        keep &= matches(columns[condition.column], condition)
    return table[keep]


def parse_query(query: str, columns: list[str]) -> list[Condition]:
    """The conditions of a query line; QueryError names what is wrong."""
    return [parse_condition(part, columns) for part in split_conditions(query)] if query.strip() else []


def split_conditions(query: str) -> list[str]:
    """`query` cut at each 'and' outside quotes."""
    if query.count('"') % 2 or _unclosed_single_quote(query):
        raise QueryError("a quote is not closed: write text values as \"text\" or 'text'")
    parts, current = [], ""
    for piece in _PIECES.findall(query):
        if piece.lower() == "and":
            parts.append(current)
            current = ""
        else:
            current += piece
    parts.append(current)
    for part in parts:
        if not part.strip():
            raise QueryError(f"a condition is missing around 'and': write e.g. {QUERY_EXAMPLE}")
    return [part.strip() for part in parts]


def _unclosed_single_quote(query: str) -> bool:
    return bool(re.sub(r'"[^"]*"', "", query).count("'") % 2)


def parse_condition(text: str, columns: list[str]) -> Condition:
    found = _CONDITION.match(text)
    if not found:
        raise QueryError(f"{text!r}: a condition is a column, an operator and a value, e.g. {QUERY_EXAMPLE}")
    column, op, raw = found["column"], found["op"].lower(), found["value"].strip()
    if column not in columns:
        raise QueryError(f"unknown column {column!r}{_did_you_mean(column, columns)}")
    if op not in QUERY_OPERATORS:
        raise QueryError(f"{text!r}: unknown operator {op!r}{_operator_hint(op)}; use one of "
                         f"{', '.join(QUERY_OPERATORS)}")
    if not raw:
        raise QueryError(f"{text!r}: no value to compare {column} with")
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'"
    value_text = raw[1:-1] if quoted else raw
    return Condition(column, op, value_text if quoted else _plain_value(raw), value_text, quoted)


def _operator_hint(op: str) -> str:
    """' (did you mean >=?)' for an operator written with the right characters in a wrong way ('=>', '>>=')."""
    close = [known for known in QUERY_OPERATORS if known != "contains" and set(known) == set(op.replace(" ", ""))]
    return f" (did you mean {close[0]}?)" if close else ""


def _plain_value(raw: str):
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return float(raw)
    except ValueError:
        return raw


def _did_you_mean(column: str, columns: list[str]) -> str:
    same_letters = [c for c in columns if c.lower() == column.lower()]
    close = same_letters or difflib.get_close_matches(column, columns, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else f" (columns: {', '.join(sorted(columns))})"


def column_kind(values: pd.Series) -> str:
    """'number', 'bool', 'time' or 'text', from the column's non-empty cells ('empty' when none)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return "time"
    kinds = {_cell_kind(v) for v in values if not _is_empty(v)}
    return kinds.pop() if len(kinds) == 1 else "text" if kinds else "empty"


def _cell_kind(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    return "number" if isinstance(value, (int, float, np.integer, np.floating)) else "text"


def matches(values: pd.Series, condition: Condition) -> pd.Series:
    """Which cells of one column meet `condition` (empty cells never do)."""
    kind = column_kind(values)
    present = values.map(lambda v: not _is_empty(v)).astype(bool)
    if kind == "empty":
        return present
    target = _target(kind, condition)
    if kind == "text":
        cells = values.map(lambda v: "" if _is_empty(v) else str(v))
        if condition.op == "contains":
            result = cells.str.lower().str.contains(target.lower(), regex=False)
        else:
            result = _compare(cells, condition.op, target)
    elif kind == "time":
        result = _compare(values, condition.op, target)
    else:
        cells = values.map(lambda v: None if _is_empty(v) else float(v) if kind == "number" else bool(v))
        result = _compare(cells, condition.op, target)
    return present & result.fillna(False).astype(bool)


def _target(kind: str, condition: Condition):
    """The condition's value as the column's kind, or QueryError saying why it cannot be compared."""
    column, op = condition.column, condition.op
    if kind == "text":
        if op in ORDER_OPERATORS:
            raise QueryError(f"{column} holds text: compare it with ==, != or contains, not {op}")
        return condition.text
    if op == "contains":
        raise QueryError(f"{column} holds {KIND_NAMES[kind]}: contains works on text columns only")
    if kind == "number":
        if condition.quoted or not is_number(condition.value):
            raise QueryError(f"{column} holds numbers: {condition.text!r} is not a number")
        return condition.value
    if kind == "bool":
        if op in ORDER_OPERATORS or not isinstance(condition.value, bool):
            raise QueryError(f"{column} is true or false: write {column} == true or {column} == false")
        return condition.value
    try:
        return pd.Timestamp(condition.text, tz="UTC")
    except ValueError:
        raise QueryError(f"{column} holds times: {condition.text!r} is not a date like 2026-01-31") from None


KIND_NAMES = {"number": "numbers", "bool": "true or false", "time": "times"}


def _compare(cells: pd.Series, op: str, target) -> pd.Series:
    compare_to = {">=": cells.ge, "<=": cells.le, ">": cells.gt, "<": cells.lt, "==": cells.eq, "!=": cells.ne}[op]
    return compare_to(target)


def _is_empty(value) -> bool:
    return value is None or (not isinstance(value, (str, bool, list, tuple, dict)) and bool(pd.isna(value)))
