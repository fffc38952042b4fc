"""Training: schedule, variants, checkpoint round trip, resume bit-identity after kill -9 and Ctrl-C."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import grokscope
from grokscope import GrokscopeError, RunConfig, load_run
from grokscope.config import VARIANTS, apply_variant
from grokscope.run import CKPT_DIR, STATE_FILE
from grokscope.loss import evaluate
from grokscope.run import schedule

from conftest import QUIET, silent, tiny_config

# conftest's tiny run, over 60 steps on 60 % of the table: metrics every 10 steps, a checkpoint and resume state every 20
TINY = {"task": {"frac": 0.6}, "train": {"steps": 60},
        "schedule": {"eval_every": 10, "eval_log_points": 4, "ckpt_every": 20, "ckpt_log_points": 3, "state_every": 20}}


def tiny(**over) -> RunConfig:
    cfg = tiny_config(**TINY)
    for section, values in over.items():
        cfg.update({section: values})
    return cfg


def test_schedule_log_spaced_then_every():
    s = schedule(1000, 100, 5)
    assert s[0] == 0 and s[-1] == 1000
    assert {1, 3, 10, 32, 100} <= set(s) and set(range(100, 1001, 100)) <= set(s)
    assert s == sorted(set(s))


def test_train_writes_a_loadable_run(tmp_path):
    run = grokscope.train(tiny(), out=tmp_path / "r", **QUIET)
    assert run.steps == schedule(60, 20, 3) and run.steps[0] == 0 and run.steps[-1] == 60
    m = run.metrics
    assert list(m.columns[:5]) == ["step", "train_loss", "train_acc", "val_loss", "val_acc"]
    assert m.step.tolist() == schedule(60, 10, 4)
    # checkpoint round trip: keys are HookedTransformer state-dict names; model_at reproduces metrics
    again = load_run(tmp_path / "r")
    model = again.model_at(60)
    sd = load_file(str(again.checkpoint_path(60)))
    assert set(sd) == set(model.state_dict()) and "blocks.0.attn.W_Q" in sd
    d = again.data
    loss, acc = evaluate(model, d.val_x, d.val_y)
    assert loss == pytest.approx(m.val_loss.iloc[-1], rel=1e-5) and acc == m.val_acc.iloc[-1]
    logits, cache = model.run_with_cache(d.train_x[:5])
    assert "blocks.1.mlp.hook_post" in cache
    # the data is the saved split, tokens as documented
    assert d.train_x.shape[1] == 4 and d.op_token == 7 and d.eq_token == 8
    assert len(d.train_y) == round(0.6 * 49)


@pytest.mark.slow
def test_a_small_run_really_groks(grokked_run):
    """The session's grokking run (tests/conftest.py): memorises first, generalises long after."""
    m = grokked_run.metrics
    t_train = m.step[m.train_acc >= 0.99].iloc[0]
    t_val = m.step[m.val_acc >= 0.99].iloc[0]
    assert m.val_acc[m.step == t_train].iloc[0] < 0.5 and t_val > 5 * t_train
    assert m.val_acc.iloc[-1] >= 0.99 and m.train_acc.iloc[-1] >= 0.99


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains(tmp_path, variant):
    cfg = apply_variant(tiny(train={"steps": 12}, schedule={"ckpt_every": 12, "eval_every": 12}), variant)
    run = grokscope.train(cfg, out=tmp_path / variant, **QUIET)
    assert run.config.train.variant == variant
    assert torch.isfinite(torch.tensor(run.metrics.train_loss.values)).all()
    w0, w1 = run.model_at(0).state_dict(), run.model_at(12).state_dict()
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)


def test_weight_decay_to_init_pulls_towards_init(tmp_path):
    # lr*wd = 0.5 per step with a tiny Adam lr: the weights shrink towards init, not to zero.
    cfg = tiny(train={"steps": 5, "lr": 1e-6, "weight_decay": 5e5, "warmup": 0, "wd_target": "init"},
               schedule={"ckpt_every": 5})
    run = grokscope.train(cfg, out=tmp_path / "i", **QUIET)
    w0, w5 = run.model_at(0).state_dict(), run.model_at(5).state_dict()
    torch.testing.assert_close(w5["blocks.0.mlp.W_in"], w0["blocks.0.mlp.W_in"], atol=1e-4, rtol=0)
    cfg.train.wd_target = "origin"
    run = grokscope.train(cfg, out=tmp_path / "o", **QUIET)
    assert run.model_at(5).state_dict()["blocks.0.mlp.W_in"].abs().max() < 0.05 * w0["blocks.0.mlp.W_in"].abs().max()


def test_grokfast_changes_the_trajectory(tmp_path):
    a = grokscope.train(tiny(train={"steps": 10}), out=tmp_path / "a", **QUIET)
    b = grokscope.train(tiny(train={"steps": 10, "grokfast_lambda": 2.0}), out=tmp_path / "b", progress=False,
                        log=silent)
    assert not torch.equal(a.model_at(10).embed.W_E, b.model_at(10).embed.W_E)


def test_seeded_runs_are_identical(tmp_path):
    a = grokscope.train(tiny(), out=tmp_path / "a", **QUIET)
    b = grokscope.train(tiny(), out=tmp_path / "b", **QUIET)
    for k, v in a.state_dict_at(60).items():
        assert torch.equal(v, b.state_dict_at(60)[k])


def torch_step(opt):
    """A trainer's ``_adamw`` replaced by torch's own ``opt.step()`` at the trainer's learning rate."""
    def step(lr):
        opt.param_groups[0]["lr"] = lr
        opt.step()
    return step


@pytest.mark.parametrize("variant", ["default", "wd_init", "grokfast", "eps"])
def test_direct_adamw_is_bit_identical_to_opt_step(variant):
    """Trainer calls the fused AdamW kernel itself (adamw.adamw_); the weights and the optimiser state
    must be exactly what torch's public AdamW(fused=True).step() gives, step after step."""
    from grokscope.tasks import make_dataset
    from grokscope.train import Trainer
    over = {"wd_init": {"wd_target": "init"}, "grokfast": {"grokfast_lambda": 2.0},
            "eps": {"adam_eps": 1e-25}}.get(variant, {})  # eps: Prieto et al.'s
    cfg = tiny(train=over)
    tr = cfg.train
    data = make_dataset("x+y", 7, 0.6, seed=0)
    a, b = Trainer(cfg, data, torch.device("cpu")), Trainer(cfg, data, torch.device("cpu"))
    assert a.direct_adamw
    opt = torch.optim.AdamW(b.params, lr=tr.lr, betas=(tr.beta1, tr.beta2), fused=True, eps=tr.adam_eps,
                            weight_decay=tr.weight_decay if tr.wd_target == "origin" else 0.0)
    b._adamw = torch_step(opt)
    for _ in range(25):
        a.step()
        b.step()
    assert a.adam.n_steps == 25
    for i, (p, q) in enumerate(zip(a.params, b.params)):
        assert torch.equal(p, q)
        st = opt.state[q]
        assert torch.equal(a.adam.exp_avg[i], st["exp_avg"]) and torch.equal(a.adam.exp_avg_sq[i], st["exp_avg_sq"])
        assert torch.equal(a.adam.steps[i], st["step"])
    # the resume state holds what torch's optimiser holds, under opt.<name>.<key>, as before
    opt_keys = {k for k in a.state_tensors() if k.startswith("opt.")}
    assert opt_keys == {f"opt.{n}.{k}" for n, q in zip(b.names, b.params) for k in opt.state[q]}


@pytest.mark.parametrize("grokfast", [{}, {"grokfast_lambda": 2.0}, {"grokfast_lambda": 5.0, "grokfast_filter": "ma",
                                                                      "grokfast_window": 3}])
def test_l2_weight_decay_is_torch_adams_weight_decay(grokfast):
    """--wd-mode l2 is torch.optim.Adam(weight_decay=wd) (what Lee et al.'s Grokfast code trains with): the
    term wd * W joins the gradient inside the optimiser, after the Grokfast filter, so it is not amplified."""
    from grokscope.tasks import make_dataset
    from grokscope.train import Trainer
    data = make_dataset("x+y", 7, 0.6, seed=0)
    a = Trainer(tiny(train={"weight_decay": 0.3, "wd_mode": "l2", **grokfast}), data, torch.device("cpu"))
    b = Trainer(tiny(train={"weight_decay": 0.0, **grokfast}), data, torch.device("cpu"))
    tr = b.cfg.train
    opt = torch.optim.Adam(b.params, lr=tr.lr, betas=(tr.beta1, tr.beta2), weight_decay=0.3, fused=True)  # bit for bit
    b._adamw = torch_step(opt)
    for _ in range(12):
        a.step()
        b.step()
    for p, q in zip(a.params, b.params):
        assert torch.equal(p, q)
    # and it is not AdamW's decoupled decay: with a large wd the two part
    c = Trainer(tiny(train={"weight_decay": 0.3, **grokfast}), data, torch.device("cpu"))
    for _ in range(12):
        c.step()
    assert max((p - q).abs().max().item() for p, q in zip(a.params, c.params)) > 1e-4


def _adam_case(seed=0, shapes=((5, 3), (7,), (2, 4, 3))):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g) for s in shapes]
    grads = [torch.randn(s, generator=g) for s in shapes]
    m = [torch.randn(s, generator=g) * 0.1 for s in shapes]
    v = [torch.rand(s, generator=g) * 0.01 for s in shapes]
    steps = [torch.tensor(3.0) for _ in shapes]
    return params, grads, m, v, steps


def test_adamw_written_out_fallback_matches_the_fused_kernel():
    """The fallback (the written-out formula) and the fast path (torch's fused kernel) give the same update."""
    from grokscope.adamw import adamw_
    hyper = dict(lr=3e-3, beta1=0.9, beta2=0.98, weight_decay=1.0)
    fast, slow = _adam_case(), _adam_case()
    for _ in range(3):
        adamw_(*fast, **hyper, fused=True)
        adamw_(*slow, **hyper, fused=False)
    for a, b in zip(fast, slow):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    assert float(fast[4][0]) == 6.0 and float(slow[4][0]) == 6.0
    assert not torch.equal(fast[0][0], _adam_case()[0][0])  # it did update


def test_adamw_columns_update_each_run_as_its_own_scalars():
    """K runs on a (K, n) buffer with (K, 1) settings = K one-run updates with scalar settings."""
    from grokscope.adamw import adamw_
    K, n = 3, 11
    g = torch.Generator().manual_seed(1)
    p, grad = torch.randn(K, n, generator=g), torch.randn(K, n, generator=g)
    m, v = torch.zeros(K, n), torch.zeros(K, n)
    lrs, b1s, b2s, wds = [1e-3, 3e-3, 1e-2], [0.9, 0.8, 0.95], [0.98, 0.999, 0.9], [1.0, 0.0, 0.1]
    col = lambda xs: torch.tensor(xs)[:, None]  # noqa: E731
    # the scalars as the float32 columns hold them (0.999 is 0.99900001 there: 1 - beta2 differs by 1e-5)
    lrs, b1s, b2s, wds = ([float(x) for x in col(xs)[:, 0]] for xs in (lrs, b1s, b2s, wds))
    rows = [(p[k].clone(), m[k].clone(), v[k].clone(), torch.tensor(0.0)) for k in range(K)]
    step = torch.tensor(0.0)
    for _ in range(4):
        adamw_([p], [grad], [m], [v], [step], lr=col(lrs), beta1=col(b1s), beta2=col(b2s), weight_decay=col(wds))
        for k, (pk, mk, vk, sk) in enumerate(rows):
            adamw_([pk], [grad[k]], [mk], [vk], [sk], lr=lrs[k], beta1=b1s[k], beta2=b2s[k], weight_decay=wds[k],
                   fused=False)
    for k, (pk, mk, vk, _) in enumerate(rows):  # float32 arithmetic against float64 scalars: a few ulps
        torch.testing.assert_close(p[k], pk, rtol=2e-6, atol=1e-8)
        torch.testing.assert_close(m[k], mk, rtol=2e-6, atol=1e-9)
        torch.testing.assert_close(v[k], vk, rtol=2e-6, atol=1e-12)


def test_adamw_falls_back_when_the_private_kernel_is_missing(monkeypatch):
    """A torch without ``torch._fused_adamw_``: the trainer takes the written-out formula, with the
    same result as asking for it directly."""
    from grokscope.adamw import adamw_
    from grokscope.tasks import make_dataset
    from grokscope.train import Trainer
    data = make_dataset("x+y", 7, 0.6, seed=0)
    ref = Trainer(tiny(), data, torch.device("cpu"))
    ref.direct_adamw = False  # the written-out formula, asked for
    monkeypatch.delattr(torch, "_fused_adamw_")
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.98, weight_decay=1.0)
    a, b = _adam_case(), _adam_case()
    adamw_(*a, **hyper)  # fused asked for, kernel missing: no error, the formula
    adamw_(*b, **hyper, fused=False)
    assert all(torch.equal(x, y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))
    t = Trainer(tiny(), data, torch.device("cpu"))
    assert not t.direct_adamw
    for _ in range(5):
        t.step()
        ref.step()
    assert all(torch.equal(p, q) for p, q in zip(t.params, ref.params))


def test_output_folder_holding_a_run_is_refused_and_untouched(tmp_path):
    grokscope.train(tiny(), out=tmp_path / "r", **QUIET)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("*")}
    with pytest.raises(GrokscopeError, match="already holds a run"):
        grokscope.train(tiny(), out=tmp_path / "r", **QUIET)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("*")} == before


def test_config_not_matching_weights_is_one_clear_error(tmp_path):
    grokscope.train(tiny(train={"steps": 2}), out=tmp_path / "r", **QUIET)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    cfg["model"]["d_mlp"] = 48
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GrokscopeError, match="does not match the run's config"):
        load_run(tmp_path / "r").model_at(2)


def test_truncated_checkpoint_is_one_clear_error(tmp_path):
    run = grokscope.train(tiny(train={"steps": 2}), out=tmp_path / "r", **QUIET)
    path = run.checkpoint_path(2)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(GrokscopeError, match="unreadable"):
        run.model_at(2)


# --- processes: kill -9, Ctrl-C, CLI -------------------------------------------------------------
def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "grokscope.cli", *args], capture_output=True, text=True, **kw)


def write_cfg(path: Path, **over) -> Path:
    path.write_text(tiny(**over).to_json())
    return path


def final_weights(run_dir: Path, step: int) -> dict:
    return load_file(str(run_dir / CKPT_DIR / f"step_{step:08d}.safetensors"))


def start_and_stop(run_dir, cfg_file, sig, min_state_step):
    proc = subprocess.Popen([sys.executable, "-m", "grokscope.cli", "train", "--config", str(cfg_file), "--out",
                             str(run_dir), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    state = run_dir / STATE_FILE
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            from grokscope.files import read_metadata
            try:
                if int(read_metadata(state).get("step", 0)) >= min_state_step:
                    break
            except GrokscopeError:
                pass
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be stopped; make it longer"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
@pytest.mark.slow
def test_resume_is_bit_identical(tmp_path, sig):
    over = dict(train={"steps": 800}, schedule={"ckpt_every": 50, "state_every": 100, "eval_every": 50})
    cfg_file = write_cfg(tmp_path / "cfg.json", **over)
    ref = cli("train", "--config", str(cfg_file), "--out", str(tmp_path / "ref"), "--no-progress")
    assert ref.returncode == 0, ref.stderr
    rc, out, err = start_and_stop(tmp_path / "cut", cfg_file, sig, min_state_step=100)
    if sig == signal.SIGINT:
        assert rc == 130 and "--resume" in out, (rc, out, err)
        assert "Traceback" not in err
    else:
        assert rc == -signal.SIGKILL
    resumed = cli("train", "--resume", str(tmp_path / "cut"), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    a, b = final_weights(tmp_path / "ref", 800), final_weights(tmp_path / "cut", 800)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = load_run(tmp_path / "ref").metrics, load_run(tmp_path / "cut").metrics
    common = ma.columns.drop("elapsed_s")
    assert mb.step.is_unique
    mb = mb[mb.step.isin(ma.step)].reset_index(drop=True)  # SIGINT adds a row at the stop step
    assert ma[common].equals(mb[common])


BAD = [
    (["train", "--op", "x^5"], "unknown operation"),
    (["train", "--frac", "1.2"], "(0, 1)"),
    (["train", "--frac", "0"], "(0, 1)"),
    (["train", "--op", "x/y", "--p", "91"], "needs a prime"),
    (["train", "--variant", "sgd"], "unknown variant"),
    (["train", "--preset", "huge"], "unknown preset"),
    (["train", "--steps", "ten"], "invalid int"),
    (["train", "--lr", "-1"], "lr must be positive"),
    (["train", "--n-layers", "0"], "n_layers must be at least 1"),
]


@pytest.mark.parametrize("section,key,value,msg", [
    ("model", "n_layers", 0, "at least 1"), ("model", "d_model", 0, "at least 1"), ("model", "n_heads", 0, "at least 1"),
    ("model", "d_mlp", 0, "at least 1"), ("train", "lr", 0.0, "positive"), ("train", "beta1", 1.0, "[0, 1)"),
    ("train", "beta2", -0.1, "[0, 1)"), ("train", "grokfast_alpha", 1.5, "[0, 1)"),
    ("train", "weight_decay", -1.0, "negative"), ("train", "warmup", -1, "negative"),
    ("train", "batch_size", -1, "negative"), ("train", "update_noise", -0.1, "negative"),
    ("train", "weight_noise", -0.1, "negative"), ("train", "grokfast_lambda", -2.0, "negative"),
    ("schedule", "eval_log_points", -1, "negative"), ("schedule", "ckpt_log_points", -1, "negative"),
])
def test_out_of_range_config_is_one_clear_error_before_anything_is_written(tmp_path, section, key, value, msg):
    with pytest.raises(GrokscopeError, match=f"{key} must.*{msg.replace('[', '.').replace(')', '.')}"):
        grokscope.train(tiny(**{section: {key: value}}), out=tmp_path / "run", **QUIET)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,msg", BAD)
@pytest.mark.slow
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, msg):
    r = cli(*args, "--out", str(tmp_path / "never"), cwd=tmp_path)
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_cli_bad_paths(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    r = cli("train", "--config", str(tmp_path / "bad.json"))
    assert r.returncode == 2 and "not valid JSON" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "typo.json").write_text('{"train": {"step": 5}}')
    r = cli("train", "--config", str(tmp_path / "typo.json"))
    assert r.returncode == 2 and "did you mean 'steps'" in r.stderr
    r = cli("train", "--resume", str(tmp_path))
    assert r.returncode == 2 and "not a run directory" in r.stderr
    r = cli("train", "--resume", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a run directory" in r.stderr
    # a folder that holds a run is left as it was
    cfg_file = write_cfg(tmp_path / "cfg.json", train={"steps": 3})
    assert cli("train", "--config", str(cfg_file), "--out", str(tmp_path / "r")).returncode == 0
    snapshot = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    r = cli("train", "--config", str(cfg_file), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "already holds a run" in r.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()} == snapshot


@pytest.mark.slow
def test_cli_train_prints_disk_estimate_and_lists(tmp_path):
    cfg_file = write_cfg(tmp_path / "cfg.json", train={"steps": 3})
    r = cli("train", "--config", str(cfg_file), "--out", str(tmp_path / "r"), "--no-progress")
    assert r.returncode == 0 and "on disk" in r.stdout
    ops = cli("ops").stdout
    assert all(name in ops for name in ("x+y", "x/y", "x^3+xy^2+y", "s5conj", "s5aba", "x*y"))
    assert "adamw-to-init" in cli("variants").stdout


def test_every_command_has_working_help():
    from grokscope.cli import main

    for command in ([], ["train"], ["analyze"], ["report"], ["sweep"], ["sweep-report"], ["ops"], ["variants"],
                    ["presets"]):
        try:
            main([*command, "--help"])
        except SystemExit as e:
            assert e.code == 0, command
        else:
            raise AssertionError(f"{command} --help did not exit")


def test_an_early_stop_completes_the_bar_and_says_why(tmp_path, capsys):
    """A run that reaches ``stop_val_acc`` ends before its budget: its bar ends at 100 % (not frozen part
    way, like a crash) and it, and the log, say at which step and why."""
    alone = grokscope.train(tiny_config(), out=tmp_path / "alone", **QUIET)
    m = alone.metrics
    theta = float(m.loc[m.step > 0, "val_acc"].max())
    reached = int(m.loc[(m.step > 0) & (m.val_acc >= theta), "step"].iloc[0])
    assert reached < 20  # the planted stop lands before the 20-step budget
    lines = []
    capsys.readouterr()
    run = grokscope.train(tiny_config(train={"stop_val_acc": theta}), out=tmp_path / "stop", log=lines.append)
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    why = f"stopped early at step {reached} of 20: validation accuracy reached {theta:g} at step {reached}"
    assert run.steps[-1] == reached
    assert "100%" in bar and f"{reached}/{reached}" in bar and why in bar, bar
    assert f"grokscope: {why}" in lines
