"""The config schema, declared once in config.py, drives the train flags, their help, coercion, the
checks, the sweep axes and the seed rule: each derived piece checked against known answers."""
from __future__ import annotations

import dataclasses

import pytest

from grokscope.cli import build_config, make_parser
from grokscope.config import (MAX_INT, SECTIONS, VARIANT_FIELDS, VARIANTS, Field, Option, RunConfig, TrainConfig, axes,
                              apply_variant, coerce, flags, parse_values, schema, set_field, set_flags)
from grokscope.errors import GrokscopeError, did_you_mean


def train_parser():
    action = next(a for a in make_parser("train")._actions if a.dest == "command")
    return action.choices["train"]


def test_every_field_is_declared_with_a_flag_and_help():
    fields = schema()
    assert [(f.section, f.name) for f in fields] == [(s, f.name) for s, c in SECTIONS.items() for f in dataclasses.fields(c)]
    assert {f.name for f in fields if not f.flag} == {"variant"}  # --variant applies a recipe, not one field
    assert all(f.option.help for f in fields if f.flag)
    assert len(flags()) == len(fields) - 1  # one flag per field, none twice


def test_train_flags_are_the_schema():
    """Each field's flag in `grokscope train`, with the field's help (its real default in it)."""
    options = {a.option_strings[0]: a for a in train_parser()._actions if a.option_strings}
    for flag, f in flags().items():
        assert options[f"--{flag}"].help == f.help
        assert options[f"--{flag}"].default is None  # unset flags leave the preset / config alone
    assert set(options) - {f"--{k}" for k in flags()} == {"-h", "--preset", "--config", "--variant", "--out",
                                                           "--resume", "--no-progress", "--threads", "--no-forecast", "--tensorboard",
                                                           "--tensorboard-every"}  # the process's, not the run's


@pytest.mark.parametrize("flag,text", [
    ("p", "modulus / prime p (default 97)"), ("steps", "optimisation budget (default 1e5)"),
    ("lr", "learning rate (default 1e-3)"), ("weight-decay", "weight decay, decoupled unless --wd-mode l2 (default 1)"),
    ("adam-eps", "Adam epsilon (default 1e-8)"),
    ("beta2", "Adam beta2 (default 0.98)"), ("orthograd-rescale", "⊥Grad: back to the gradient's norm (default true)"),
    ("batch-size", "minibatch (default min(512, half the training set))"),
    ("split-seed", "seed of the split and outliers (default: --seed)"),
    ("grokfast-filter", "ema (default) or ma: mean of the last --grokfast-window gradients"),
    ("eval-log-points", "log-spaced early evaluations (default 20)"),
])
def test_help_shows_the_real_default(flag, text):
    assert flags()[flag].help == text


def test_help_follows_a_changed_default():
    """The default in a help text is the field's, not typed again: change it and the help follows."""
    f = flags()["p"]
    assert dataclasses.replace(f, default=113).help == "modulus / prime p (default 113)"
    assert dataclasses.replace(flags()["lr"], default=3e-4).help == "learning rate (default 3e-4)"
    assert dataclasses.replace(flags()["softmax"], default="stablemax").help.startswith("stablemax (default)")
    for f in flags().values():  # every help that names a default names the real one
        if "default" in f.option.help:
            assert "{default}" in f.option.help, f.flag


def _other_value(f: Field):
    """A valid value for the field that is not its default (d_model and n_heads stay divisible)."""
    if f.type is bool:
        return not f.default
    if f.type is int:
        return f.default * 2 or 4
    if f.type is float:
        return f.default * 0.5 + 0.1
    choices = [c for c in f.option.checks if c.says.startswith("must be one of")]
    if choices:
        options = choices[0].says.removeprefix("must be one of ").split(", ")
        return next(o for o in options if o != f.default)
    return {"op": "x+y", "device": "cpu"}[f.name]


def test_every_flag_reaches_its_field():
    argv = ["train"]
    want = {}
    for flag, f in flags().items():
        value = _other_value(f)
        if f.option.switch:
            argv.append(f"--{flag}")
        else:
            argv += [f"--{flag}", str(value).lower() if f.type is bool else str(value)]
        want[(f.section, f.name)] = value
    cfg = build_config(train_parser().parse_args(argv[1:]))
    got = {(s, n): getattr(getattr(cfg, s), n) for s, n in want}
    assert got == pytest.approx(want)


def test_coerce_by_declared_type():
    assert coerce(int, "1e5") == 100_000 and coerce(int, 7.0) == 7 and coerce(int, "12") == 12
    assert coerce(int, str(MAX_INT)) == MAX_INT  # exact, not through a float
    for bad in ("2.5", 2.5, "x", "nan", float("inf")):
        with pytest.raises((ValueError, OverflowError)):
            coerce(int, bad)
    assert [coerce(bool, v) for v in ("yes", "off", "TRUE", "0", 1, False)] == [True, False, True, False, True, False]
    with pytest.raises(ValueError):
        coerce(bool, "maybe")
    assert coerce(float, "3e-4") == 3e-4 and coerce(str, 5) == "5"


def test_set_field_refuses_what_it_would_have_rounded():
    cfg = RunConfig()
    with pytest.raises(GrokscopeError, match=r"config field task.p: bad value '97.5'"):
        set_field(cfg.task, "p", "97.5", where="task")
    set_field(cfg.train, "orthograd", "on", where="train")
    set_field(cfg.train, "steps", "2e4", where="train")
    assert cfg.train.orthograd is True and cfg.train.steps == 20_000
    with pytest.raises(GrokscopeError, match=r"unknown config field train.step; did you mean 'steps'\?"):
        set_field(cfg.train, "step", 5, where="train")


@pytest.mark.parametrize("section,key,value,message", [
    ("task", "p", 1, "p must be at least 2, got 1"),
    ("task", "frac", 1.0, "training fraction must be in (0, 1), got 1.0"),
    ("task", "seed", -1, "split seed (task.seed) must be in 0..9223372036854775806 (2**63 - 2), got -1"),
    ("task", "outliers", -3, "outliers must not be negative, got -3"),
    ("model", "norm", "BN", "norm must be one of LN, RMS, none, got 'BN'"),
    ("train", "stop_val_acc", 1.5, "stop_val_acc must be in [0, 1], got 1.5"),
    ("train", "resid_dropout", 1.0, "resid_dropout must be in [0, 1), got 1.0"),
    ("train", "steps", 0, "steps must be positive, got 0"),
    ("train", "lr", float("nan"), "lr must be a finite number, got nan"),
    ("train", "seed", 2**63 - 1, "seed must be in 0..9223372036854775806 (2**63 - 2), got 9223372036854775807"),
    ("schedule", "ckpt_log_points", 10**7, "ckpt_log_points must be at most 1000000, got 10000000"),
    ("schedule", "eval_every", 0, "eval_every must be at least 1, got 0"),
])
def test_validate_says_what_the_declared_check_says(section, key, value, message):
    cfg = RunConfig()
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(GrokscopeError) as e:
        cfg.validate()
    assert str(e.value) == message


def test_validate_enforces_every_declared_check():
    """For each field and probe value: validate refuses it exactly when one of its declared checks does."""
    probes = [-1, 0, 1, 2, 0.5, 1.0, 1.5, -0.5, "nope", "ma", "LN", 10**7]
    for f in schema():
        for value in probes:
            if type(value) is not f.type and not (f.type is float and isinstance(value, int)):
                continue
            cfg = RunConfig()
            setattr(getattr(cfg, f.section), f.name, value)
            bad = any(not c.ok(value) for c in f.option.checks)
            if f.name in ("d_model", "n_heads") and not bad and (cfg.model.d_model % cfg.model.n_heads):
                bad = True  # the rule between fields
            try:
                cfg.validate()
                refused = False
            except GrokscopeError:
                refused = True
            assert refused == bad, (f.section, f.name, value)


def test_cross_field_rules():
    cfg = RunConfig()
    cfg.model.d_model = 30
    with pytest.raises(GrokscopeError, match="d_model 30 is not divisible by n_heads 4"):
        cfg.validate()


def test_parse_values_for_sweep_axes():
    assert parse_values("frac", "0.3, 0.5") == [0.3, 0.5]
    assert parse_values("p", "97,1e2") == [97, 100]
    assert parse_values("orthograd", "on,off") == [True, False]
    assert parse_values("variant", "adam,adamw") == ["adam", "adamw"]
    assert parse_values("seed", [0, 1, 2]) == [0, 1, 2]
    for axis, text, msg in (("p", "2.5", r"axis p: bad value '2.5'"), ("seed", "1,1", "repeated values"),
                            ("frac", " , ", "axis frac: no values"), ("lrr", "1", r"unknown sweep axis 'lrr'; did you mean 'lr'")):
        with pytest.raises(GrokscopeError, match=msg):
            parse_values(axis, text)
    assert set(axes()) == set(flags()) - {"full-batch", "compile"}


def test_the_sweep_axes_are_the_schema():
    """The sweep reads the schema itself: its axes are config.axes (plus variant), typed by config.parse_values."""
    from grokscope import sweep
    from grokscope.sweep import spec as sweep_spec

    assert sweep_spec.parse_values is parse_values  # the sweep types its values with the config's own function
    for flag in axes():
        assert sweep.axis_name(flag) == flag
        assert sweep.axis_name(flag.replace("-", "_")) == flag
    with pytest.raises(GrokscopeError, match=r"unknown sweep axis 'lrr'; did you mean 'lr'"):
        sweep.axis_name("lrr")
    spec = sweep.SweepSpec.make(fixed={"p": "11"}, grid={"orthograd": "false,true", "seeds": "0,1"})
    assert [c.config.train.orthograd for c in spec.cells()] == [False, False, True, True]
    assert [c.config.task.seed for c in spec.cells()] == [0, 1, 0, 1]  # the seed rule of set_flags


def test_seed_rule_is_one_function():
    assert set_flags(RunConfig(), {"seed": 3}).task.seed == 3
    assert set_flags(RunConfig(), {"seed": 3, "split-seed": 5}).task.seed == 5
    assert set_flags(RunConfig(), {"seed": 3}, seed_sets_split=False).task.seed == 0
    args = train_parser().parse_args(["--seed", "4"])
    assert build_config(args).task.seed == 4
    from grokscope.sweep.spec import apply_coords  # the sweep's cells follow the same rule

    assert apply_coords(RunConfig(), {"seed": 6}).task.seed == set_flags(RunConfig(), {"seed": 6}).task.seed == 6


def test_variant_first_then_the_flags():
    cfg = set_flags(RunConfig(), {"variant": "adam", "weight-decay": 0.5, "dropout": 0.2})
    assert (cfg.train.variant, cfg.train.weight_decay, cfg.train.resid_dropout) == ("adam", 0.5, 0.2)


def test_variants_are_data_and_their_reset_list_is_derived():
    assert set(VARIANT_FIELDS) == {"lr", "weight_decay", "wd_target", "full_batch", "update_noise", "weight_noise",
                                   "resid_dropout"}  # the list that used to be typed by hand
    cfg = RunConfig()
    cfg.train.lr, cfg.train.wd_target, cfg.train.weight_noise = 0.1, "init", 0.3
    apply_variant(cfg, "adam-fullbatch")
    base = TrainConfig()
    assert (cfg.train.lr, cfg.train.wd_target, cfg.train.weight_noise) == (base.lr, base.wd_target, base.weight_noise)
    assert (cfg.train.weight_decay, cfg.train.full_batch) == (0.0, True)
    for name, values in VARIANTS.items():  # every variant names real fields and makes a valid config
        assert set(values) <= {f.name for f in dataclasses.fields(TrainConfig)}
        apply_variant(RunConfig(), name).validate()


def test_presets_are_valid_configs():
    from grokscope.config import PRESET_HELP, PRESETS, preset

    assert list(PRESETS) == list(PRESET_HELP) == ["paper", "fig1", "quick", "nanda"]
    for name in PRESETS:
        preset(name).validate()
    assert preset("quick").task.p == 31 and preset("fig1").train.steps == 1_000_000


def test_did_you_mean():
    assert did_you_mean("x+z", ["x+y", "x-y", "s5"]) == "; did you mean 'x+y'?"
    assert did_you_mean("zzzz", ["x+y"]) == ""
    assert did_you_mean("adamw-init", {"adamw-to-init": 1, "adam": 2}) == "; did you mean 'adamw-to-init'?"


@pytest.mark.parametrize("lookup,message", [
    (lambda: __import__("grokscope.tasks").tasks.get_operation("x+z"), "unknown operation 'x+z'; did you mean 'x+y'?"),
    (lambda: apply_variant(RunConfig(), "adamw-init"), "unknown variant 'adamw-init'; did you mean 'adamw-to-init'?"),
    (lambda: RunConfig().update({"trian": {}}), "unknown config section 'trian'; did you mean 'train'?"),
    (lambda: __import__("grokscope.analyses").analyses.get_analysis("fourer"), "unknown analysis 'fourer'; did you mean 'fourier'?"),
])
def test_every_lookup_says_did_you_mean(lookup, message):
    with pytest.raises(GrokscopeError) as e:
        lookup()
    assert str(e.value).startswith(message)


def test_option_defaults():
    assert Option() == Option(None, "", (), None, None, False, True)
