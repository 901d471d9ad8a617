"""Reading a policy file: YAML in, a validated ``Policy`` out, or every problem with its place.

A policy is validated as a whole: the YAML, the schema (``riskmodel.policy.schema``), every
condition against the known fields, and the checks that span sections. If anything is
wrong, ``PolicyError`` lists each problem with the file, the line and column, and the rule
(or segment, queue) it belongs to; nothing is returned, so the policy in service stays.

The fields a condition may read are the caller's to give (``fields``): this package sits
below the feature catalogue and must not import it. ``features.policy_fields`` passes
the catalogue plus the request fields of ``riskmodel.engine``.

The policy hash is SHA-256 over the policy file's bytes, then for each list file it names,
in the order they appear, a zero byte, the name as written, a zero byte and the file's
bytes. It changes whenever anything a decision depended on changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from riskmodel.domain import Decision
from riskmodel.errors import DataError
from riskmodel.policy.conditions import Kind
from riskmodel.policy.schema import PolicySpec

__all__ = [
    "LIST_KINDS",
    "KnownField",
    "Policy",
    "PolicyError",
    "Problem",
    "load_policy",
    "parse_policy",
]

LIST_KINDS = ("users", "devices", "ips", "payment_accounts")
"""List kinds, in the order the engine checks them."""


@dataclass(frozen=True)
class KnownField:
    """A name a condition may read, its kind, and words a reviewer understands."""

    kind: Kind = Kind.ANY
    doc: str = ""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy file, and where (1-based line and column)."""

    message: str
    line: int | None = None
    column: int | None = None
    where: str = ""  # e.g. "rule 'refund_velocity', when"

    def __str__(self) -> str:
        place = []
        if self.line is not None:
            place.append(f"line {self.line}, column {self.column}")
        if self.where:
            place.append(self.where)
        return f"{', '.join(place)}: {self.message}" if place else self.message


class PolicyError(DataError):
    """A policy file that cannot go live: ``problems`` says every reason, each placed."""

    def __init__(self, file: str, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = f"{file}, {self.problems[0]}"
        else:
            lines = "\n".join(f"  {p}" for p in self.problems)
            text = f"{file}: {len(self.problems)} problems\n{lines}"
        super().__init__(text)


@dataclass(frozen=True)
class Policy:
    """A validated policy, ready for the engine: the spec, the resolved lists, the hash."""

    spec: PolicySpec
    sha256: str
    source: str
    blocked: Mapping[str, frozenset[str]]  # kind -> entries, kinds of LIST_KINDS
    allowed: Mapping[str, frozenset[str]]
    fields: Mapping[str, KnownField] = field(default_factory=dict)
    text: str = ""  # the file as read
    list_files: Mapping[str, str] = field(default_factory=dict)  # name -> text, as read

    @property
    def version(self) -> str:
        return self.spec.version


FieldsArg = Collection[str] | Mapping[str, KnownField | Kind | str]


def _known(fields: FieldsArg) -> dict[str, KnownField]:
    if isinstance(fields, Mapping):
        out = {}
        for name, value in fields.items():
            out[name] = value if isinstance(value, KnownField) else KnownField(Kind(value))
        return out
    return {name: KnownField() for name in fields}


def load_policy(path: str | Path, fields: FieldsArg) -> Policy:
    """Read and validate the policy at ``path``; list files are read from beside it.

    ``fields``: the names conditions may use (features and request fields), as a
    collection of names or a mapping name -> ``KnownField`` (kind and description; the
    kind also checks comparisons). Raises ``PolicyError`` naming the file, the position
    and the rule of every problem.
    """
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), [Problem(f"cannot read the file: {exc.strerror}")]) from None
    return parse_policy(content, fields, source=str(path), base_dir=path.parent)


def parse_policy(
    content: bytes | str,
    fields: FieldsArg,
    *,
    source: str = "<policy>",
    base_dir: Path | None = None,
) -> Policy:
    """Validate a policy given as bytes (``load_policy`` without the file read)."""
    raw = content.encode() if isinstance(content, str) else content
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(source, [Problem(f"not UTF-8 text: {exc.reason}")]) from None
    root = _compose(text, source)
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise PolicyError(source, [Problem("the policy is a mapping of sections", 1, 1)])
    known = _known(fields)
    kinds = {name: f.kind for name, f in known.items()}
    locate = _Locator(root, data, text)
    spec: PolicySpec | None = None
    problems: list[Problem] = []
    try:
        spec = PolicySpec.model_validate(data, context={"fields": kinds})
    except ValidationError as exc:
        problems += _schema_problems(exc, locate)
    # Checks across sections read the raw data, so they run (and report) even when the
    # schema found problems elsewhere: the writer sees everything in one go.
    problems += _cross_checks(data, locate)
    digest = hashlib.sha256(raw)
    read: dict[str, str] = {}
    lists = {
        side: _side_lists(data, side, base_dir, digest, read, locate, problems) for side in _SIDES
    }
    for kind in LIST_KINDS:
        both = sorted(lists["block"][kind] & lists["allow"][kind])
        if both:
            shown = ", ".join(repr(b) for b in both[:5]) + (" ..." if len(both) > 5 else "")
            problems.append(
                locate.problem(
                    ("lists", "allow", kind),
                    f"on both the block and the allow list of {kind}: {shown}",
                )
            )
    if problems or spec is None:
        raise PolicyError(source, sorted(set(problems), key=_place))
    return Policy(
        spec=spec,
        sha256=digest.hexdigest(),
        source=source,
        blocked=lists["block"],
        allowed=lists["allow"],
        fields=known,
        text=text,
        list_files=read,
    )


def _place(problem: Problem) -> tuple[int, int, str]:
    return (problem.line or 0, problem.column or 0, problem.message)


# --- YAML with positions ------------------------------------------------------------------


def _compose(text: str, source: str) -> yaml.Node:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        problem = Problem(
            f"not valid YAML: {exc.problem}",
            None if mark is None else mark.line + 1,
            None if mark is None else mark.column + 1,
        )
        raise PolicyError(source, [problem]) from None
    if root is None:
        raise PolicyError(source, [Problem("the file is empty")])
    duplicates = list(_duplicate_keys(root))
    if duplicates:
        raise PolicyError(source, duplicates)
    return root


def _duplicate_keys(node: yaml.Node) -> Any:
    # PyYAML keeps the last of two equal keys without a word: a second ``block:`` would
    # silently replace the first.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                yield Problem(
                    f"key {key.value!r} appears twice in this mapping",
                    key.start_mark.line + 1,
                    key.start_mark.column + 1,
                )
            seen.add(key.value)
            yield from _duplicate_keys(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item)


_NAMED = {"rules": "rule", "segments": "segment", "queues": "queue"}


def _item_words(owner: str | int | None, index: int, data: Any) -> str:
    if isinstance(owner, str) and owner in _NAMED:
        name = data.get("name") if isinstance(data, dict) else None
        kind = _NAMED[owner]
        return f"{kind} {name!r}" if isinstance(name, str) else f"{kind} {index + 1}"
    return f"item {index + 1}"


class _Locator:
    """Finds the YAML node of a validation path, and says what it belongs to."""

    def __init__(self, root: yaml.Node, data: Any, text: str) -> None:
        self.root = root
        self.data = data
        self.lines = text.splitlines()

    def walk(self, loc: Sequence[str | int]) -> tuple[yaml.Node, str]:
        """The deepest node of ``loc`` in the file, and words for where it is. Parts that
        are not in the file (a tagged union's tag, a missing key) are stepped over."""
        node, data = self.root, self.data
        words: list[str] = []
        for position, part in enumerate(loc):
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                for key, value in node.value:
                    if key.value == part:
                        if part not in _NAMED:
                            words.append(part)
                        node = value
                        data = data.get(part) if isinstance(data, dict) else None
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                node = node.value[part]
                data = data[part] if isinstance(data, list) and part < len(data) else None
                owner = loc[position - 1] if position > 0 else None
                words.append(_item_words(owner, part, data))
        return node, ", ".join(words)

    def key_node(self, loc: Sequence[str | int]) -> yaml.Node | None:
        """The key node of the last part of ``loc`` (for keys that should not be there)."""
        parent, _ = self.walk(loc[:-1])
        if isinstance(parent, yaml.MappingNode):
            for key, _value in parent.value:
                if key.value == loc[-1]:
                    return key  # type: ignore[no-any-return]
        return None

    def problem(
        self,
        loc: Sequence[str | int],
        message: str,
        *,
        offset: int | None = None,
        key: bool = False,
    ) -> Problem:
        node, where = self.walk(loc)
        if key:
            found = self.key_node(loc)
            if found is not None:
                node = found
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if offset is not None and isinstance(node, yaml.ScalarNode):
            line, column = self._inside(node, offset)
        return Problem(message, line, column, where)

    def _inside(self, node: yaml.ScalarNode, offset: int) -> tuple[int, int]:
        """Line and column of character ``offset`` of a scalar's value in the file.

        A scalar over several lines (plain, quoted, ``|`` or ``>``) gives one character of
        its value per line break, so walking its lines in the file finds the place."""
        start, end = node.start_mark, node.end_mark
        pieces: list[tuple[int, int, int]] = []  # (line index, column, length) per line
        if node.style in ("|", ">"):
            # The first non-empty line sets the block's indentation; it ends before the
            # first non-empty line indented less.
            body: list[int] = []
            indent = -1
            for i in range(start.line + 1, min(end.line + 1, len(self.lines))):
                text = self.lines[i]
                depth = len(text) - len(text.lstrip(" "))
                if text.strip():
                    if indent < 0:
                        indent = depth
                    elif depth < indent:
                        break
                body.append(i)
            indent = max(indent, 0)
            pieces = [(i, indent, max(len(self.lines[i]) - indent, 0)) for i in body]
        else:
            quote = 1 if node.style in ("'", '"') else 0
            first = start.column + quote
            pieces.append((start.line, first, len(self.lines[start.line]) - first))
            for i in range(start.line + 1, min(end.line + 1, len(self.lines))):
                text = self.lines[i]
                indent = len(text) - len(text.lstrip())
                pieces.append((i, indent, len(text) - indent))
        left = offset
        for index, column, length in pieces:
            if left <= length:
                return index + 1, column + left + 1
            left -= length + 1
        return start.line + 1, start.column + 1


def _schema_problems(exc: ValidationError, locate: _Locator) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        context = error.get("ctx") or {}
        if error["type"] == "extra_forbidden":
            problems.append(locate.problem(loc, f"unknown key {loc[-1]!r}", key=True))
            continue
        if error["type"] == "condition":
            problems.append(
                locate.problem(
                    loc, context.get("problem", error["msg"]), offset=context.get("offset")
                )
            )
            continue
        message = error["msg"]
        if error["type"] == "missing":
            message = f"{loc[-1]!r} is required"
            loc = loc[:-1]
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        elif error["type"] == "string_type" and isinstance(error.get("input"), bool):
            message += " (YAML reads yes / no / on / off as true / false: quote it)"
        problems.append(locate.problem(loc, message))
    return problems


# --- checks across sections (on the raw data: the schema may have failed elsewhere) ----------

_SIDES = ("block", "allow")


def _items(data: Any, *path: str) -> list[tuple[int, dict[str, Any]]]:
    """The mappings of the list at ``path`` with their indexes; anything else is skipped
    (the schema reports it)."""
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    if not isinstance(data, list):
        return []
    return [(i, item) for i, item in enumerate(data) if isinstance(item, dict)]


def _cross_checks(data: dict[str, Any], locate: _Locator) -> list[Problem]:
    problems: list[Problem] = []
    rules = _items(data, "rules")

    def unique(section: tuple[str, ...], attribute: str) -> None:
        seen: set[Any] = set()
        for index, item in _items(data, *section):
            value = item.get(attribute)
            if not isinstance(value, str):
                continue
            if value in seen:
                problems.append(
                    locate.problem(
                        (*section, index, attribute), f"{attribute} {value!r} is used twice"
                    )
                )
            seen.add(value)

    thresholds = data.get("thresholds")
    pairs = [(("thresholds",), thresholds)] + [
        (("thresholds", "segments", i), segment)
        for i, segment in _items(data, "thresholds", "segments")
    ]
    for loc, pair in pairs:
        if isinstance(pair, dict):
            review, block = pair.get("review"), pair.get("block")
            if (
                isinstance(review, int | float)
                and isinstance(block, int | float)
                and review >= block
            ):
                # The schema says the same when the rest of the section is valid; the
                # duplicate is dropped.
                message = f"review ({float(review)}) must be below block ({float(block)})"
                problems.append(locate.problem(loc, message))
    unique(("rules",), "name")
    unique(("rules",), "code")
    unique(("thresholds", "segments"), "name")
    unique(("review", "queues"), "name")
    queues = {q.get("name") for _, q in _items(data, "review", "queues")}
    review = data.get("review")
    default = review.get("default_queue") if isinstance(review, dict) else None
    if isinstance(default, str) and default not in queues:
        named = ", ".join(sorted(str(q) for q in queues)) or "none"
        problems.append(
            locate.problem(
                ("review", "default_queue"), f"no queue named {default!r} (queues: {named})"
            )
        )
    for index, rule in rules:
        queue = rule.get("queue")
        if isinstance(queue, str) and queue not in queues:
            problems.append(locate.problem(("rules", index, "queue"), f"no queue named {queue!r}"))
    green = data.get("green_channel")
    exempt = green.get("exempt_rules") if isinstance(green, dict) else None
    if isinstance(exempt, list):
        actions = {r.get("name"): r.get("action") for _, r in rules}
        for index, name in enumerate(exempt):
            loc = ("green_channel", "exempt_rules", index)
            if name not in actions:
                problems.append(locate.problem(loc, f"no rule named {name!r}"))
            elif actions[name] != Decision.REVIEW.value:
                problems.append(
                    locate.problem(
                        loc,
                        f"rule {name!r} is a {actions[name]} rule; only review rules can be "
                        "lightened",
                    )
                )
    return problems


def _side_lists(
    data: dict[str, Any],
    side: str,
    base_dir: Path | None,
    digest: Any,
    read: dict[str, str],
    locate: _Locator,
    problems: list[Problem],
) -> dict[str, frozenset[str]]:
    """Entries of each kind of the ``side`` lists, inline or read from a list file (the
    files read are added to ``read``)."""
    lists = data.get("lists")
    section = lists.get(side) if isinstance(lists, dict) else None
    out: dict[str, frozenset[str]] = {}
    for kind in LIST_KINDS:
        value = section.get(kind) if isinstance(section, dict) else None
        loc = ("lists", side, kind)
        if isinstance(value, list):
            out[kind] = frozenset(e.strip() for e in value if isinstance(e, str) and e.strip())
        elif isinstance(value, dict) and isinstance(value.get("file"), str):
            out[kind] = _list_file(
                value["file"], base_dir, digest, read, locate, (*loc, "file"), problems
            )
        else:
            out[kind] = frozenset()
    return out


def _list_file(
    name: str,
    base_dir: Path | None,
    digest: Any,
    read: dict[str, str],
    locate: _Locator,
    loc: tuple[str, ...],
    problems: list[Problem],
) -> frozenset[str]:
    if base_dir is None:
        problems.append(locate.problem(loc, "list files need a policy read from a file"))
        return frozenset()
    # Only files in the policy's own folder (or below it): a policy names its lists, not
    # any file the service can read (``/etc/passwd`` would load as a block list).
    folder = base_dir.resolve()
    path = (folder / name).resolve()
    if not path.is_relative_to(folder):
        problems.append(locate.problem(loc, f"list file {name!r} must lie in the policy's folder"))
        return frozenset()
    try:
        content = path.read_bytes()
        text = content.decode("utf-8")
    except OSError as exc:
        problems.append(locate.problem(loc, f"cannot read list file {name!r}: {exc.strerror}"))
        return frozenset()
    except UnicodeDecodeError:
        problems.append(locate.problem(loc, f"list file {name!r} is not UTF-8"))
        return frozenset()
    digest.update(b"\0" + name.encode() + b"\0" + content)
    read[name] = text
    entries = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(e for e in entries if e)
