"""``riskmodel policy check``: a summary for a good file, every placed problem for a bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

from riskmodel.cli import main
from riskmodel.policy import STARTER_POLICY


def test_check_the_starter_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(STARTER_POLICY)]) == 0

    out = capsys.readouterr().out
    assert "policy starter-3 is valid" in out
    assert "RULE_REDEEMED_THEN_INVALID" in out
    assert "small_first_refund (disabled)" in out


def test_check_a_bad_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        STARTER_POLICY.read_text().replace(
            "when: order_refund_out_all > 0\n", "when: order_refund_out_alll > 0\n"
        )
    )

    assert main(["policy", "check", str(bad)]) == 1

    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}, line ")
    assert "rule 'repeat_refund_of_order', when: unknown field 'order_refund_out_alll'" in err
    assert "did you mean 'order_refund_out_all'?" in err
