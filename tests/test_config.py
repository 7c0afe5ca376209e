import pytest

from dicc.config import Config, load_config, save_config


def test_defaults_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 3\nmethod:\n  name: dicc\n  options: {k_max: 2}\n")
    cfg = load_config(
        f, ["optim.lr=0.2", "train.amp=false", "method.options.parent_weight=0.5", "data.longtail=fer2013-if100"]
    )
    assert cfg.train.epochs == 3 and cfg.optim.lr == 0.2 and cfg.train.amp == "off"
    assert cfg.method.options == {"k_max": 2, "parent_weight": 0.5}
    assert cfg.data.longtail == "fer2013-if100"
    assert cfg.model.name == "vgg_fer"


def test_round_trip(tmp_path):
    cfg = load_config(None, ["train.seed=5", "data.longtail=[1,2,3,4,5,6,7]"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg and isinstance(again, Config)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epoch=3", "unknown key(s) in train: epoch; valid: accumulate, amp, batch_size"),
        ("nothing.x=1", "unknown key(s) in config: nothing"),
        ("train.epochs=abc", "train.epochs: expected int"),
        ("train.amp=maybe", "train.amp: expected one of auto, on, off"),
        ("noequals", "not of the form key=value"),
    ],
)
def test_bad_keys_are_clear_errors(override, fragment):
    with pytest.raises(ValueError, match=None) as err:
        load_config(None, [override])
    assert fragment in str(err.value)


def test_missing_or_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(bad)


def test_a_yaml_syntax_error_is_one_line_naming_the_file_line_and_column(tmp_path, capsys):
    from dicc.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 2\n  bad: [1\n")
    assert main(["train", "-c", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"dicc train: error: {bad}: not valid YAML: line 4, column 1: expected ',' or ']', but got "
        "'<stream end>' (while parsing a flow sequence from line 3, column 8)"
    ]
    assert not (tmp_path / "run").exists()


def test_cli_flags_are_taken_literally(tmp_path, monkeypatch):
    import dicc.engine
    from dicc.cli import main

    seen = {}

    def fake_fit(cfg, resume=False):
        seen["cfg"] = cfg
        raise ValueError("stop here")

    monkeypatch.setattr(dicc.engine, "fit", fake_fit)
    odd = tmp_path / "fer #2: data"
    odd.mkdir()
    main(
        [
            "train",
            "--data",
            str(odd),
            "--out",
            str(tmp_path / "a: b"),
            "--longtail",
            "[1,2,3,4,5,6,7]",
            "--set",
            "train.epochs=2",
        ]
    )
    cfg = seen["cfg"]
    assert cfg.data.path == str(odd) and cfg.train.out == str(tmp_path / "a: b")
    assert cfg.data.longtail == [1, 2, 3, 4, 5, 6, 7] and cfg.train.epochs == 2


def test_mapping_for_a_string_key_is_an_error():
    with pytest.raises(ValueError, match="train.out: expected str"):
        load_config(None, ["train.out=a: b"])
