"""The CLI's error boundary: bad flags are one line and exit code 2."""

from ropescale.cli.main import main


def test_help_exits_zero(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    assert "ropescale" in capsys.readouterr().out


def test_unknown_command_is_one_line_exit_2(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such-command" in err


def test_unexpected_error_is_one_line_naming_the_log(monkeypatch, tmp_path, capfd):
    import ropescale.cli.methods as methods

    def boom(args):
        raise RuntimeError("a bug\nspread over lines")

    log = tmp_path / "last-error.log"
    monkeypatch.setenv("ROPESCALE_ERROR_LOG", str(log))
    monkeypatch.setattr(methods, "run", boom)
    assert main(["methods"]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "unexpected error (RuntimeError: a bug spread over lines)" in err[0] and str(log) in err[0]
    text = log.read_text()
    assert text.startswith("ropescale methods") and "Traceback" in text and "def boom" not in err[0]
    assert "in boom" in text  # the frame that raised


def test_user_error_with_debug_shows_the_traceback_and_the_line(monkeypatch, capfd):
    import ropescale.cli.methods as methods

    def bad(args):
        raise ValueError("--thing must be positive")

    monkeypatch.setattr(methods, "run", bad)
    assert main(["--debug", "methods"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == "error: --thing must be positive"


def test_interrupt_is_exit_130_with_the_commands_note(monkeypatch, capfd):
    import ropescale.cli.methods as methods
    from ropescale.cli.common import on_interrupt

    def interrupted(args):
        on_interrupt(args, lambda: "every finished cell is in r.jsonl")
        raise KeyboardInterrupt

    monkeypatch.setattr(methods, "run", interrupted)
    assert main(["methods"]) == 130
    err = capfd.readouterr().err.strip().splitlines()
    assert err == ["ropescale: interrupted; every finished cell is in r.jsonl"]


def test_interrupt_before_any_note_still_one_line(monkeypatch, capfd):
    import ropescale.cli.methods as methods

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(methods, "run", interrupted)
    assert main(["methods"]) == 130
    assert capfd.readouterr().err.strip().splitlines() == ["ropescale: interrupted"]


def test_finetune_interrupt_note_names_the_last_checkpoint(tmp_path):
    from ropescale.cli.finetune import interrupt_note

    assert "no checkpoint was written yet" in interrupt_note(str(tmp_path))
    for step in (2, 4):
        ckpt = tmp_path / "checkpoints" / f"step-{step:07d}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoints" / ".tmp-step-0000006").mkdir()   # a save cut short: never the latest
    note = interrupt_note(str(tmp_path))
    assert "step-0000004" in note and "--resume" in note
