"""``flaretune privacy epsilon|noise`` print one number; bad values are one-line errors."""

import pytest

from flaretune.cli import main
from flaretune.privacy import epsilon_for, noise_for_epsilon


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_prints_the_accountants_value(capsys, accountant):
    rc = main(["privacy", "epsilon", "--noise-multiplier", "1.1", "--sample-rate", "0.01", "--steps", "300",
               "--delta", "1e-5", "--accountant", accountant])
    assert rc == 0
    assert float(capsys.readouterr().out) == pytest.approx(epsilon_for(1.1, 0.01, 300, 1e-5, accountant), rel=1e-5)


def test_noise_prints_the_multiplier_that_reaches_epsilon(capsys):
    assert main(["privacy", "noise", "--epsilon", "2", "--sample-rate", "0.02", "--steps", "200", "--delta", "1e-5"]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(noise_for_epsilon(2.0, 0.02, 200, 1e-5), rel=1e-5)


def test_a_bad_value_is_one_line_on_stderr(capsys):
    rc = main(["privacy", "epsilon", "--noise-multiplier", "1", "--sample-rate", "1.5", "--steps", "10",
               "--delta", "1e-5"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    assert captured.err == "flaretune: sample_rate must be in (0, 1], got 1.5\n"
