"""One well-known data directory: the platform's user data folder by default, EXPLAINER_DATA_DIR or
--data-dir over it; a command run from another folder finds the same store, and one that finds
nothing says which store it looked in."""

from __future__ import annotations

from explainer.settings import default_data_dir, load_settings
from workers.cli import main


def test_default_is_the_platform_user_data_folder_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    s = load_settings({})
    assert s.data_dir == default_data_dir() == (tmp_path / "xdg" / "activation-explainer")
    assert s.data_dir_origin == "default"
    env = load_settings({"EXPLAINER_DATA_DIR": str(tmp_path / "env")})
    assert (env.data_dir, env.data_dir_origin) == (tmp_path / "env", "EXPLAINER_DATA_DIR")
    flag = load_settings({"EXPLAINER_DATA_DIR": str(tmp_path / "env")}, data_dir=tmp_path / "flag")
    assert (flag.data_dir, flag.data_dir_origin) == (tmp_path / "flag", "--data-dir")
    assert flag.database_url == f"sqlite:///{tmp_path / 'flag' / 'explainer.db'}"


def test_commands_from_any_folder_use_the_same_store(settings, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("EXPLAINER_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    store = tmp_path / "xdg" / "activation-explainer" / "explainer.db"
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        assert main(["search", "anything"]) == 0
        assert capsys.readouterr().out.strip() == f"no hits in the store at {store} (data directory from default)"
        assert list((tmp_path / folder).iterdir()) == []  # no ./data made here


def test_data_dir_flag_before_or_after_the_command_and_empty_results_name_the_store(searchable, tmp_path, capsys):
    empty = tmp_path / "elsewhere"
    assert main(["--data-dir", str(empty), "search", "fabricated citations"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no hits in the store at ") and str(empty / "explainer.db") in out and "--data-dir" in out
    assert main(["runs", "--data-dir", str(empty)]) == 0
    assert f"no runs in the store at {empty / 'explainer.db'}" in capsys.readouterr().out
    assert main(["search", "fabricated citations", "--data-dir", str(searchable.data_dir)]) == 0
    assert "no hits" not in capsys.readouterr().out
    assert main(["report", "--data-dir", str(empty), "-o", str(tmp_path / "r.md")]) == 0
    assert f"(the store at {empty / 'explainer.db'}" in capsys.readouterr().out


def test_lookups_that_find_nothing_name_the_store(settings, tmp_path, capsys):
    where = f"the store at {settings.data_dir / 'explainer.db'} (data directory from EXPLAINER_DATA_DIR)"
    for argv in (
        ["show", "tiny/layers.1.mlp/0"],
        ["runs", "show", "abcd"],
        ["report", "--run", "abcd", "-o", str(tmp_path / "r.md")],
        ["report", "--units", "tiny/layers.1.mlp/0", "-o", str(tmp_path / "r.md")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and where in err, (argv, err)
    assert not (tmp_path / "r.md").exists()
