"""tfmec.settings: the sections of RunConfig, their JSON forms, and the command line made from them
(no training here)."""
import argparse
import dataclasses
import inspect
import json
import os
import subprocess
import sys

import pytest

from tfmec.cli import add_tune_arguments, build_parser, main, run_config_from_args
from tfmec.experiment import RunConfig
from tfmec.settings import SECTIONS, SettingsParser, SweepSettings, TuneSettings, add_setting_arguments, spec, specs

# a non-default value for every setting (types and ranges valid), to see each one travel
EXAMPLE = {
    "data": "a.csv,b.csv", "rows": 500, "format": "csv", "label": "y", "engine": None, "label_threshold": 3.5,
    "field_map": None, "numeric": ["x"], "drop": ["ts"], "sep": ";", "names": ["y", "x", "ts"],
    "lists": ["genres:|"], "shares": ["history=item"], "max_length": 20, "min_count": 1, "batch_size": 256,
    "fractions": [0.7, 0.2, 0.1], "methods": ["none", "mec"], "seed": 3, "out": "runs/x", "verbose": 0,
    "model": "fm", "embedding_dim": 8, "epochs": 2, "patience": 1, "learning_rate": 0.01, "optimizer": "lazy_adam",
    "subspaces": 2, "codewords": 16, "alpha": 0.001, "beta": 0.01, "stage1_epochs": 1, "stage2": "retrain",
    "stage2_lr_scale": 0.5, "stage2_patience": 2, "bits": 4, "share_codebooks": True, "head_rows": 0.1,
    "afm_energy": 0.8, "afm_param_budget": 0.5, "afm_calibration_batches": 5, "afm_fine_tune_epochs": 1,
    "hash_bytes": 1000, "memory_budget": None, "target_ratio": 8.0, "frontier": [4.0, 16.0], "export": False,
    "export_rows": 64, "checkpoint_dir": "ckpt",
}


def test_every_setting_has_one_section_and_the_example_covers_them():
    names = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) and set(names) == set(EXAMPLE)
    assert set(RunConfig.setting_fields()) == set(EXAMPLE)
    assert not set(SECTIONS) & set(names)  # a section name is never a setting name


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_each_section_round_trips_flat_and_nested(section):
    values = {f.name: EXAMPLE[f.name] for f in dataclasses.fields(SECTIONS[section])}
    flat = RunConfig.from_dict(values)
    nested = RunConfig.from_dict({section: values})
    assert getattr(flat, section) == getattr(nested, section) == SECTIONS[section](**values)
    assert flat.to_dict(nested=True)[section] == values
    assert {k: flat.to_dict()[k] for k in values} == values
    for other in set(SECTIONS) - {section}:  # the other sections keep their defaults
        assert getattr(flat, other).to_dict() == SECTIONS[other]().to_dict()


def test_the_whole_config_round_trips_through_json():
    cfg = RunConfig.from_dict(EXAMPLE)
    flat, nested = json.loads(json.dumps(cfg.to_dict())), json.loads(json.dumps(cfg.to_dict(nested=True)))
    assert flat == EXAMPLE
    assert RunConfig.from_dict(flat) == RunConfig.from_dict(nested) == cfg
    assert set(nested) == set(SECTIONS)


def test_flat_names_read_and_write_the_sections():
    cfg = RunConfig(alpha=1e-3, model="fm", methods=("none", "mec"))
    assert cfg.alpha == cfg.mec.alpha == 1e-3 and cfg.model == cfg.network.model == "fm"
    cfg.bits = 8
    assert cfg.mec.bits == 8
    copy = dataclasses.replace(cfg, epochs=3, out="elsewhere")
    assert (copy.epochs, copy.out, copy.alpha, copy.bits) == (3, "elsewhere", 1e-3, 8)
    assert cfg.epochs == 20 and copy.mec is not cfg.mec  # sections are copied, not shared
    copy.codewords = 16
    assert cfg.codewords == 256
    from tfmec.settings import MECSettings

    assert RunConfig(mec=MECSettings(alpha=0.5), beta=0.25).mec == MECSettings(alpha=0.5, beta=0.25)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'cdewords' \(did you mean 'codewords'"):
        RunConfig(cdewords=16)


def test_unknown_keys_are_named_with_the_source_and_the_near_name():
    with pytest.raises(ValueError) as info:
        RunConfig.from_dict({"model": "fm", "epoch": 7, "cdewords": 16}, source="--config c.json")
    text = str(info.value)
    assert text.startswith("--config c.json: unknown setting(s) ['cdewords', 'epoch']")
    assert "did you mean 'codewords' for 'cdewords', 'epochs' for 'epoch'?" in text
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['mec.epochs'\] \(did you mean 'training.epochs'"):
        RunConfig.from_dict({"mec": {"epochs": 3}})
    with pytest.raises(ValueError, match=r"\['mecc'\] \(did you mean 'mec' for 'mecc'"):
        RunConfig.from_dict({"mecc": {"alpha": 1.0}})
    with pytest.raises(ValueError, match=r"setting 'alpha' given twice \('alpha' and 'mec.alpha'\)"):
        RunConfig.from_dict({"alpha": 1.0, "mec": {"alpha": 2.0}})
    with pytest.raises(ValueError, match="'mec' is a section of settings"):
        RunConfig.from_dict({"mec": 3})
    with pytest.raises(ValueError, match="expected a JSON object of RunConfig settings, got list"):
        RunConfig.from_dict([])


def test_comma_separated_text_and_lists_from_json():
    cfg = RunConfig.from_dict({"methods": "none, mec", "numeric": "a,b", "lists": "tags:,"})
    assert cfg.methods == ["none", "mec"] and cfg.numeric == ["a", "b"]
    assert cfg.lists == "tags:,"  # a list separator may be a comma: not split (and refused by the type check)
    assert RunConfig.from_dict({}).methods == ["none"] and RunConfig().methods == ("none",)


def _run_specs():
    return [s for cls in SECTIONS.values() for s in specs(cls)]


def test_every_flag_defaults_to_the_dataclass_default():
    args = build_parser().parse_args(["run"])
    assert args.given_settings == {}
    cfg = run_config_from_args(args)
    for s in _run_specs():
        assert getattr(cfg, s.name) == s.default or list(getattr(cfg, s.name)) == list(s.default), s.name
        if s.option:
            parsed = getattr(args, s.dest or s.name)
            expected = False if s.switch is not dataclasses.MISSING else s.default
            assert parsed == expected or list(parsed) == list(expected), s.name
    assert cfg.to_dict() == RunConfig.from_dict({}).to_dict()


def test_stage1_defaults_come_from_learn_codes():
    from tfmec.mec import learn_codes
    from tfmec.mec.codes import CodeSet, stage1_default

    params = inspect.signature(learn_codes).parameters
    cfg = RunConfig()
    for setting_name, keyword in (("subspaces", "num_subspaces"), ("codewords", "num_codewords"), ("alpha", "alpha"),
                                  ("beta", "beta"), ("stage1_epochs", "epochs")):
        assert getattr(cfg, setting_name) == params[keyword].default == stage1_default(keyword)
    assert CodeSet(config={"num_negatives": 9}).setting("num_negatives") == 9  # recorded with the codes
    assert CodeSet().setting("num_negatives") == params["num_negatives"].default
    assert CodeSet().setting("contrastive_temperature") == params["contrastive_temperature"].default
    assert CodeSet().setting("beta", 0.0) == 0.0


def test_given_flags_are_known_without_reading_argv_again():
    argv = ["run", "--epochs", "3", "--quiet", "--no-export", "--share-codebooks", "--list", "a", "--list", "b:|",
            "--method", "none,mec", "--frontier", "4,8", "--target-ratio", "2"]
    args = build_parser().parse_args(argv)
    assert args.given_settings == {"epochs": 3, "verbose": 0, "export": False, "share_codebooks": True,
                                   "lists": ["a", "b:|"], "methods": ["none", "mec"], "frontier": [4.0, 8.0],
                                   "target_ratio": 2.0}
    assert args.quiet is True and args.no_export is True and args.codewords == 256  # not given: the default
    cfg = run_config_from_args(args)
    assert (cfg.epochs, cfg.verbose, cfg.export, cfg.share_codebooks, cfg.list_columns) == (
        3, 0, False, True, {"a": None, "b": "|"})


@pytest.mark.parametrize("nested", [False, True])
def test_config_file_with_flags_on_top(tmp_path, nested):
    values = {"model": "fm", "epochs": 7, "codewords": 16, "verbose": 0, "export": False, "lists": ["g"]}
    if nested:
        values = {"network": {"model": "fm"}, "training": {"epochs": 7}, "mec": {"codewords": 16},
                  "run": {"verbose": 0}, "exporting": {"export": False}, "input": {"lists": ["g"]}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(values))
    argv = ["run", "--config", str(path), "--epochs", "3", "--list", "h"]
    cfg = run_config_from_args(build_parser().parse_args(argv))
    assert (cfg.model, cfg.epochs, cfg.codewords, cfg.verbose, cfg.export, cfg.lists) == ("fm", 3, 16, 0, False, ["h"])
    assert cfg.batch_size == 1024 and cfg.methods == ["none"]


def test_config_file_errors_name_the_file(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"mec": {"alfa": 1e-3}}))
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert f"--config {path}: unknown setting(s) ['mec.alfa'] (did you mean 'mec.alpha'" in err
    path.write_text("{not json")
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "x")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_run_help_lists_every_flag():
    result = subprocess.run([sys.executable, "-m", "tfmec.cli", "run", "--help"], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    flags = [s.option for s in _run_specs() if s.option] + ["--config", "--verbose"]
    assert len(flags) == 49
    missing = [f for f in flags if f not in result.stdout.split()]
    assert not missing, missing
    assert "(default 50)" in result.stdout  # --max-length: the default comes from the field


def test_tune_flags_come_from_the_sections_and_the_sweep():
    parser = SettingsParser(prog="tune")
    add_tune_arguments(parser)
    args = parser.parse_args([])
    for s in specs(SweepSettings) + specs(TuneSettings):
        expected, got = (False if s.switch is not dataclasses.MISSING else s.default), getattr(args, s.name)
        assert (list(got) == list(expected)) if isinstance(expected, tuple) else got == expected, s.name
    assert not hasattr(args, "methods") and not hasattr(args, "no_export") and args.given_settings == {}
    args = parser.parse_args(["--alpha", "1e-5,1e-3", "--codewords", "16", "--epochs", "2", "--method", "mec+afm"])
    assert args.alpha == (1e-5, 1e-3) and args.codewords == [16] and args.method == "mec+afm"
    assert args.given_settings == {"epochs": 2}  # tune's own and swept options are not RunConfig settings
    with pytest.raises(SystemExit):
        parser.parse_args(["--oracle", "grid"])


def test_field_checks_name_the_flag():
    cases = [({"rows": 5}, "--rows must be at least 10, got 5"), ({"engine": "spark"}, "unknown --engine 'spark'"),
             ({"optimizer": "sgd"}, "unknown --optimizer 'sgd'; choose one of ('adam', 'lazy_adam')"),
             ({"stage2": "often"}, "unknown --stage2 'often'"), ({"export_rows": 0}, "export_rows must be at least 1"),
             ({"shares": ["a=a"]}, "--share 'a=a': expected FIELD=OTHER"), ({"lists": [":|"]}, "--list ':|': expected"),
             ({"embedding_dim": 0}, "--embedding-dim must be positive, got 0"),
             ({"afm_param_budget": 2.0}, "--afm-param-budget must be in (0, 1], got 2.0"),
             ({"memory_budget": 0, "methods": ["mec"]}, "--memory-budget must be a positive number of bytes, got 0"),
             ({"fractions": [0.8, "x", 0.1]}, "--fractions (setting 'fractions'): every entry must be a number")]
    for values, message in cases:
        with pytest.raises(ValueError) as info:
            RunConfig.from_dict(values).validate()
        assert message in str(info.value), (values, str(info.value))


def test_a_generated_parser_for_one_section():
    from tfmec.settings import AFMSettings

    parser = SettingsParser(prog="x")
    groups = add_setting_arguments(parser, [AFMSettings])
    assert list(groups) == ["AFM"]
    args = parser.parse_args(["--afm-energy", "0.5"])
    assert args.given_settings == {"afm_energy": 0.5} and args.afm_fine_tune_epochs == 3
    assert spec(AFMSettings, "afm_energy").option == "--afm-energy"
    with pytest.raises(SystemExit):
        parser.parse_args(["--afm-energy", "high"])
    assert isinstance(parser, argparse.ArgumentParser)
