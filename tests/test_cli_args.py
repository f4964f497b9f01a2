"""Command-line mistakes: one line naming the command and the argument, exit 2, before anything starts."""

import pytest

from flaretune.cli import main

CASES = [
    (["bench", "stream", "--streams", "0"],
     "flaretune bench stream: argument --streams: expected a whole number >= 1, got '0'"),
    (["bench", "stream", "--size-gb", "-4"],
     "flaretune bench stream: argument --size-gb: expected a number > 0, got '-4'"),
    (["bench", "stream", "--chunk-mb", "abc"],
     "flaretune bench stream: argument --chunk-mb: expected a number, got 'abc'"),
    (["bench", "stream", "--timeout", "0"],
     "flaretune bench stream: argument --timeout: expected a number > 0, got '0'"),
    (["bench", "stream", "--baseline-size-gb", "-1"],
     "flaretune bench stream: argument --baseline-size-gb: expected a number >= 0, got '-1'"),
    (["bench", "quantize", "--types", "nf5"],
     "flaretune bench quantize: argument --types: Invalid quantization_type 'nf5' for --types; "
     "valid: float16, bfloat16, blockwise8, nf4, fp4, entropy"),
    (["bench", "quantize", "--params", "5k"],
     "flaretune bench quantize: argument --params: at least 10k parameters, got '5k'"),
    (["bench", "quantize", "--repeat", "0"],
     "flaretune bench quantize: argument --repeat: expected a whole number >= 1, got '0'"),
    (["privacy", "epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "-3", "--delta", "1e-5"],
     "flaretune privacy epsilon: argument --steps: expected a whole number >= 1, got '-3'"),
    (["bench"], "flaretune bench: the following arguments are required: benchmark"),
]


@pytest.mark.parametrize("argv, line", CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_a_command_line_mistake_is_one_line_and_exit_2(argv, line, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 2
    assert (out, err) == ("", f"{line} (see {line.split(': ')[0]} --help)\n")
    assert list(tmp_path.iterdir()) == []  # nothing was prepared


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """``flaretune data check FILE | head``: the reader closes the pipe first; the command stops with
    SIGPIPE's status and no traceback."""
    import os
    import subprocess
    import sys

    data = tmp_path / "train.conll"
    data.write_text("Aspirin B-Chemical\ncaused O\nnausea B-Disease\n\n", encoding="utf-8")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes a byte
    try:
        done = subprocess.run([sys.executable, "-m", "flaretune.cli", "data", "check", str(data)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 141
