"""``geminifusion models`` and the CLI's error handling."""

from geminifusion.cli import main


def test_models_lists_variants_with_reference_counts(capsys):
    assert main(["models", "mit_b0", "mit_b3"]) == 0
    out = capsys.readouterr().out
    assert "5,863,562" in out and "74,551,274" in out  # official_keys.json counts


def test_models_forward_and_bad_size(capsys):
    assert main(["models", "mit_b0", "--forward", "64x64", "--modalities", "rgb"]) == 0
    assert "(1, 40, 16, 16)" in capsys.readouterr().out
    assert main(["models", "mit_b0", "--forward", "big"]) == 2  # argparse's usage error
    assert "expected HxW (e.g. 480x640), got 'big'" in capsys.readouterr().err


def test_unknown_architecture_is_a_clean_error(capsys):
    assert main(["models", "mit_b9"]) == 2
    assert "unknown architecture 'mit_b9'" in capsys.readouterr().err
