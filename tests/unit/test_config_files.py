"""Drop-ins, origins, located errors, TOML round trip, flags anywhere."""

import argparse
import tomllib

import pytest

from cri import cli, config, config_files, config_toml
from runtime.errors import InvalidArgument


def _parse(argv):
    p = argparse.ArgumentParser()
    config.add_flags(p)
    return p.parse_args(argv)


@pytest.fixture
def etc(tmp_path):
    main = tmp_path / "crispy.toml"
    main.write_text('log_level = "debug"\n[images]\npinned_images = ["a"]\n'
                    '[registries."docker.io"]\nmirrors = ["m.example"]\n')
    (tmp_path / "crispy.d").mkdir()
    (tmp_path / "crispy.d" / "20-b.toml").write_text('log_level = "warning"\n[images]\npinned_images = ["b"]\n')
    (tmp_path / "crispy.d" / "10-a.toml").write_text(
        '[images]\nmax_concurrent_downloads = 5\n[registries."docker.io"]\ninsecure = true\n')
    (tmp_path / "crispy.d" / "ignored.conf").write_text("not toml at all [")
    return main


def test_dropins_merge_in_lexical_order_tables_merged_scalars_replaced(etc):
    cfg = config.load(path=str(etc))
    assert cfg.log_level == "warning"                       # 20-b beats the main file
    assert cfg.images.pinned_images == ["b"]                # lists are replaced whole
    assert cfg.images.max_concurrent_downloads == 5         # 10-a
    assert cfg.registries["docker.io"].mirrors == ["m.example"]  # table merged: main's key kept...
    assert cfg.registries["docker.io"].insecure is True          # ...and 10-a's added


def test_dropins_apply_without_a_main_file(tmp_path, monkeypatch):
    (tmp_path / "crispy.d").mkdir()
    (tmp_path / "crispy.d" / "a.toml").write_text('log_level = "error"\n')
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "crispy.toml")
    assert config.load(_parse([])).log_level == "error"


def test_flags_and_set_beat_dropins(etc):
    cfg = config.load(_parse(["--config", str(etc), "--log-level", "error", "--set", "images.pinned_images=['c']"]))
    assert cfg.log_level == "error" and cfg.images.pinned_images == ["c"]


def test_origins_name_file_and_line_or_flag(etc):
    cfg, merged = config.load_layers(_parse(["--config", str(etc), "--set", "cni.plugin_timeout=5"]))
    text = config_toml.origins(cfg.to_dict(), merged)
    lines = {line.split(" = ")[0]: line.rsplit("# ", 1)[1] for line in text.splitlines()}
    assert lines["log_level"] == f"{etc.parent}/crispy.d/20-b.toml:1"
    assert lines["images.max_concurrent_downloads"] == f"{etc.parent}/crispy.d/10-a.toml:2"
    assert lines['registries."docker.io".mirrors'] == f"{etc}:5"
    assert lines["cni.plugin_timeout"] == "--set cni.plugin_timeout"
    assert lines["socket"] == "default"
    # The listing is itself TOML that loads back to the same values.
    assert config.load(path=str(_write(etc.parent / "o" / "x.toml", text))).to_dict() == cfg.to_dict()


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,where,needle", [
    ('[images]\n\nmax_concurrent_downloads = "x"\n', ":3:", "images.max_concurrent_downloads must be int"),
    ("[runtime]\nfoo = 1\n", ":2:", "unknown key runtime.'foo'"),
    ('[registries."q.io"]\nmirrors = 3\n', ":2:", "mirrors must be a list"),
    ("# c\n[streaming]\nport = 99999\n", ":3:", "streaming.port must be between 0 and 65535"),
    ("[streaming\nport = 1\n", ":1:", "not valid TOML"),
    ('log_level = "loud"\n', ":1:", "log_level must be one of"),
])
def test_a_broken_dropin_names_file_line_and_key(etc, text, where, needle):
    bad = etc.parent / "crispy.d" / "30-bad.toml"
    bad.write_text(text)
    with pytest.raises(InvalidArgument) as e:
        config.load(path=str(etc))
    assert f"{bad}{where}" in e.value.message and needle in e.value.message


def test_line_of_follows_tables_and_dotted_keys():
    text = 'a = 1\n[x]\nb = 2\n[registries."d.io"]\n# c\nmirrors = []\ny.z = 3\n'
    assert config_files.line_of(text, ("a",)) == 1
    assert config_files.line_of(text, ("x", "b")) == 3
    assert config_files.line_of(text, ("registries", "d.io", "mirrors")) == 6
    assert config_files.line_of(text, ("registries", "d.io", "y", "z")) == 7
    assert config_files.line_of(text, ("registries", "d.io", "insecure")) == 4  # the table that holds it
    assert config_files.line_of(text, ("nope",)) is None


def test_printed_config_loads_back_unchanged(etc, tmp_path, capsys):
    assert cli.main(["--config", str(etc), "config"]) == 0
    printed = capsys.readouterr().out
    tomllib.loads(printed)
    again = _write(tmp_path / "round" / "c.toml", printed)
    assert cli.main(["config", "--config", str(again)]) == 0
    assert capsys.readouterr().out == printed


def test_default_ignores_files_and_prints_the_defaults(etc, capsys):
    assert cli.main(["--config", str(etc), "config", "--default"]) == 0
    out = tomllib.loads(capsys.readouterr().out)
    assert out["log_level"] == "info" and out == config.Config().to_dict()


def test_flags_work_before_and_after_the_subcommand(tmp_path, capsys):
    for argv in (["--config", "/dev/null", "--log-level", "error", "config"],
                 ["config", "--config", "/dev/null", "--log-level", "error"],
                 ["--config", "/dev/null", "config", "--log-level", "error"]):
        assert cli.main(argv) == 0
        assert tomllib.loads(capsys.readouterr().out)["log_level"] == "error"


def test_repeatable_flags_add_up_across_the_subcommand(capsys):
    assert cli.main(["--config", "/dev/null", "--set", "log_level='error'", "--images-pinned-images", "a", "config",
                     "--set", "shutdown_grace=3", "--images-pinned-images", "b"]) == 0
    out = tomllib.loads(capsys.readouterr().out)
    assert out["log_level"] == "error" and out["shutdown_grace"] == 3.0
    assert out["images"]["pinned_images"] == ["a", "b"]
    # A single-valued flag: the later one wins.
    assert cli.main(["--log-level", "debug", "config", "--config", "/dev/null", "--log-level", "warning"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["log_level"] == "warning"


@pytest.mark.parametrize("argv", [["--help"], ["config", "--help"], ["status", "--help"]])
def test_every_flag_says_what_it_does_and_its_default(capsys, argv):
    with pytest.raises(SystemExit):
        cli.main(argv)
    out = " ".join(capsys.readouterr().out.split())
    for flag, dotted, _ in config._scalar_fields(config.Config):
        assert flag in out
        assert f"(key {dotted}; default: " in out
    # A key with neither an entry in config_help.HELP nor a comment above
    # its field gets only its name for help: give it one of the two.
    bare = [d for _, d, _ in config._scalar_fields(config.Config) if f"config key {d} (key" in out]
    assert not bare, f"keys without help: {bare}"
