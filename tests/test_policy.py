"""Loading a policy file: a valid one becomes a ``Policy``; a bad one is refused with the
file, the line and column, and the rule of every problem."""

from __future__ import annotations

import hashlib
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from features.policy_fields import load_with_catalogue, policy_fields
from riskmodel.domain import Decision
from riskmodel.policy import STARTER_POLICY, Kind, PolicyError, load_policy, parse_policy

FIELDS = {
    "amount": Kind.NUMBER,
    "reason": Kind.STRING,
    "user_refunds_7d": Kind.NUMBER,
    "order_earlier_refunds": Kind.NUMBER,
}

MINIMAL = """\
version: v1
thresholds: {review: 0.3, block: 0.8}
review:
  default_queue: ordinary
  queues:
    - {name: ordinary, deadline_hours: 24}
"""


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy(path, FIELDS)
    assert caught.value.file == str(path)
    assert str(path) in str(caught.value)
    return [str(p) for p in caught.value.problems]


def test_the_starter_policy_is_valid_against_the_catalogue() -> None:
    policy = load_with_catalogue(STARTER_POLICY)

    assert policy.version == "starter-3"
    assert policy.sha256 == hashlib.sha256(STARTER_POLICY.read_bytes()).hexdigest()
    codes = [r.code for r in policy.spec.rules]
    assert len(set(codes)) == len(codes)
    assert {q.name: q.deadline_hours for q in policy.spec.review.queues} == {
        "disputes": 48,
        "ordinary": 24,
    }
    assert policy.fields["user_refunds_7d"].doc  # descriptions travel for explanations


def test_a_minimal_policy_takes_the_defaults(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, MINIMAL), FIELDS)

    assert policy.spec.rules == []
    assert policy.spec.prorated.fee == Decimal("0")
    assert policy.spec.green_channel is None
    assert all(not entries for entries in policy.blocked.values())


def test_a_condition_error_names_file_rule_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL
        + """\
rules:
  - name: velocity
    code: RULE_VELOCITY
    action: review
    message: too many refunds
    when: user_refunds_7dd >= 3
""",
    )

    assert problems(path) == [
        "line 12, column 11, rule 'velocity', when: unknown field 'user_refunds_7dd'; "
        "did you mean 'user_refunds_7d'?"
    ]


def test_positions_inside_folded_and_quoted_conditions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL
        + """\
rules:
  - name: folded
    code: RULE_A
    action: block
    message: m
    when: >-
      amount > 3
      and reason == 5
  - {name: quoted, code: RULE_B, action: review, message: m, when: "amount >"}
""",
    )

    assert problems(path) == [
        "line 14, column 18, rule 'folded', when: compares a string with a number: never true",
        "line 15, column 77, rule 'quoted', when: expected a value, found the end",
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: v1
        thresholds:
          review: 0.9
          block: 0.5
          segments:
            - {name: young, account_age_below_days: 7, review: 0.1, block: 0.2}
            - {name: young, review: 0.1, block: 0.2}
        rules:
          - {name: a, code: RULE_A, action: review, message: m, when: amount > 1, queue: nowhere}
          - {name: b, code: RULE_A, action: block, message: m, when: amount > 1, colour: red}
          - {name: a, code: RULE_C, action: maybe, message: m, when: amount > 1}
        lists:
          block: {users: {file: missing.txt}, ips: [1.2.3.4]}
          allow: {ips: ["1.2.3.4"]}
        review:
          default_queue: ordinary
          queues: [{name: disputes, deadline_hours: 48}]
        green_channel:
          who: amount > 1
          max_amount: 10.001
          review_threshold: 0.5
          exempt_rules: [b, nope]
        """,
    )

    assert problems(path) == [
        "line 3, column 3, thresholds: review (0.9) must be below block (0.5)",
        "line 7, column 7, thresholds, segment 'young': a segment needs at least one of "
        "product_types, amount_from, amount_below, account_age_below_days",
        "line 7, column 14, thresholds, segment 'young', name: name 'young' is used twice",
        "line 9, column 82, rule 'a', queue: no queue named 'nowhere'",
        "line 10, column 21, rule 'b', code: code 'RULE_A' is used twice",
        "line 10, column 74, rule 'b', colour: unknown key 'colour'",
        "line 11, column 12, rule 'a', name: name 'a' is used twice",
        "line 11, column 37, rule 'a', action: Input should be 'approve', 'review' or 'block'",
        "line 13, column 25, lists, block, users, file: cannot read list file 'missing.txt': "
        "No such file or directory",
        "line 14, column 16, lists, allow, ips: on both the block and the allow list of ips: "
        "'1.2.3.4'",
        "line 16, column 18, review, default_queue: no queue named 'ordinary' (queues: disputes)",
        "line 20, column 15, green_channel, max_amount: an amount has at most two decimal places",
        "line 22, column 18, green_channel, exempt_rules, item 1: rule 'b' is a block rule; "
        "only review rules can be lightened",
        "line 22, column 21, green_channel, exempt_rules, item 2: no rule named 'nope'",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: v1\nthresholds: [\n", "line 3, column 1: not valid YAML"),
        ("", "the file is empty"),
        ("- a\n- b\n", "line 1, column 1: the policy is a mapping of sections"),
        (MINIMAL + "version: v2\n", "line 7, column 1: key 'version' appears twice"),
        (MINIMAL.replace("version: v1", "version: 3"), "line 1, column 10, version: Input should"),
        (MINIMAL.replace("version: v1\n", ""), "line 1, column 1: 'version' is required"),
        (MINIMAL + "colour: red\n", "line 7, column 1, colour: unknown key 'colour'"),
        (
            MINIMAL + "rules: [{name: r, code: R1, action: review, message: m, when: amount > 1}]",
            "code: String should match pattern",
        ),
        (
            MINIMAL + "rules: [{name: r, code: RULE_R, action: block, message: m, "
            "when: amount > 1, queue: ordinary}]",
            "rule 'r': only a review rule names a queue",
        ),
    ],
)
def test_bad_files_are_refused_with_a_place(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(write(tmp_path, text))

    assert any(expected in p for p in found), found


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the file"):
        load_policy(tmp_path / "absent.yaml", FIELDS)
    path = tmp_path / "latin.yaml"
    path.write_bytes("version: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(path, FIELDS)


def test_list_files_beside_the_policy_are_read_and_hashed(tmp_path: Path) -> None:
    (tmp_path / "blocked_users.txt").write_text("# confirmed abusers\nu1\n  u2  # ring\n\nu3\n")
    text = MINIMAL + "lists:\n  block:\n    users: {file: blocked_users.txt}\n"
    path = write(tmp_path, text)

    policy = load_policy(path, FIELDS)
    assert policy.blocked["users"] == {"u1", "u2", "u3"}
    first = policy.sha256
    assert first != hashlib.sha256(path.read_bytes()).hexdigest()

    (tmp_path / "blocked_users.txt").write_text("u1\n")
    assert load_policy(path, FIELDS).sha256 != first  # a list change is a policy change


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../outside.txt", "sub/../../outside.txt", "link.txt"]
)
def test_list_files_outside_the_policys_folder_are_refused(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "policy"
    folder.mkdir()
    (tmp_path / "outside.txt").write_text("u1\n")
    (folder / "link.txt").symlink_to(tmp_path / "outside.txt")
    text = MINIMAL + f"lists:\n  block:\n    users: {{file: '{name}'}}\n"

    found = problems(write(folder, text))

    assert any(f"list file {name!r} must lie in the policy's folder" in p for p in found), found


def test_list_files_may_lie_in_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "users.txt").write_text("u9\n")
    text = MINIMAL + "lists:\n  block:\n    users: {file: lists/users.txt}\n"

    assert load_policy(write(tmp_path, text), FIELDS).blocked["users"] == {"u9"}


def test_list_files_need_a_directory(tmp_path: Path) -> None:
    text = MINIMAL + "lists:\n  block:\n    users: {file: blocked_users.txt}\n"
    with pytest.raises(PolicyError, match="list files need a policy read from a file"):
        parse_policy(text, FIELDS)


def test_inline_lists_are_trimmed(tmp_path: Path) -> None:
    text = MINIMAL + "lists:\n  allow:\n    devices: [' d1 ', d2]\n"
    policy = load_policy(write(tmp_path, text), FIELDS)

    assert policy.allowed["devices"] == {"d1", "d2"}


def test_known_fields_may_be_plain_names() -> None:
    text = MINIMAL + "rules: [{name: r, code: RULE_R, action: review, message: m, when: x == 1}]"

    assert parse_policy(text, ["x"]).spec.rules[0].action is Decision.REVIEW
    with pytest.raises(PolicyError, match="unknown field 'x'"):
        parse_policy(text, ["y"])


def test_every_request_field_and_feature_is_a_known_field() -> None:
    fields = policy_fields()

    assert fields["reason"].kind is Kind.STRING
    assert fields["user_refunds_7d"].kind is Kind.NUMBER
    assert fields["payment_account"].kind is Kind.STRING  # a request field, not a feature
