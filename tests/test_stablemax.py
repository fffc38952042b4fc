"""StableMax and ⊥Grad (Prieto et al. 2025), Grokfast's moving-average filter (Lee et al. 2024):
known answers against the formulas, gradient checks, and bit-identical resume with each of them."""
import math

import pytest
import torch

import grokscope
from grokscope.batched import batch_key
from grokscope.cli import build_config, make_parser
from grokscope.errors import GrokscopeError
from grokscope.files import atomic_save, read_safetensors
from grokscope.run import STATE_FILE
from grokscope.tasks import make_dataset
from grokscope.loss import answer_loss, collapsed, log_stablemax, stablemax_s
from grokscope.train import Trainer, orthogonalize_

from test_train import tiny

from conftest import QUIET, silent

CPU = torch.device("cpu")


# --- StableMax ---------------------------------------------------------------------------------------
def s_by_hand(v: float) -> float:
    return v + 1.0 if v >= 0 else 1.0 / (1.0 - v)


def test_stablemax_s_and_probabilities_match_the_formula():
    x = torch.tensor([[-3.0, -0.5, 0.0, 0.25, 2.0], [1.0, -1.0, 10.0, -100.0, 0.5]], dtype=torch.float64)
    s = stablemax_s(x)
    expect = torch.tensor([[s_by_hand(v) for v in row] for row in x.tolist()], dtype=torch.float64)
    assert torch.equal(s, expect)
    assert s[0].tolist() == [0.25, 1 / 1.5, 1.0, 1.25, 3.0]
    p = log_stablemax(x).exp()
    assert torch.allclose(p, expect / expect.sum(-1, keepdim=True), rtol=1e-14, atol=0)
    assert torch.allclose(p.sum(-1), torch.ones(2, dtype=torch.float64), rtol=1e-14, atol=0)
    # the loss is -log p_answer, in the loss dtype; the mean, sum and per-row reductions agree
    y = torch.tensor([4, 2])
    rows = answer_loss(x, y, torch.float64, "none", softmax="stablemax")
    by_hand = [-math.log(3.0 / (0.25 + 1 / 1.5 + 1 + 1.25 + 3)), -math.log(11.0 / (2 + 0.5 + 11 + 1 / 101 + 1.5))]
    assert rows.tolist() == pytest.approx(by_hand, rel=1e-14)
    assert float(answer_loss(x, y, torch.float64, softmax="stablemax")) == pytest.approx(sum(by_hand) / 2, rel=1e-14)
    assert float(answer_loss(x, y, torch.float64, "sum", softmax="stablemax")) == pytest.approx(sum(by_hand), rel=1e-14)
    assert answer_loss(x.float(), y, torch.float64, softmax="stablemax").dtype == torch.float64


def test_stablemax_is_not_softmax_and_keeps_the_argmax():
    torch.manual_seed(0)
    x = torch.randn(50, 7) * 5
    y = torch.randint(0, 7, (50,))
    assert not torch.allclose(answer_loss(x, y, softmax="stablemax"), answer_loss(x, y))
    assert torch.equal(log_stablemax(x.double()).argmax(-1), x.argmax(-1))  # s is increasing


def test_stablemax_gradcheck_float64():
    torch.manual_seed(1)
    x = (torch.randn(6, 5, dtype=torch.float64) * 3).requires_grad_(True)
    x.data[0, 0] = 1.0  # 1/(1-x) is infinite at x = 1: the unselected branch must not poison the gradient
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    assert torch.autograd.gradcheck(lambda z: answer_loss(z, y, torch.float64, "none", softmax="stablemax"), (x,))
    assert torch.autograd.gradcheck(stablemax_s, (x,))
    x.grad = None
    answer_loss(x, y, torch.float64, softmax="stablemax").backward()
    assert torch.isfinite(x.grad).all()


def test_stablemax_does_not_collapse_where_float32_softmax_does():
    logits = torch.zeros(2, 5)
    logits[0, 0], logits[1, 0] = 30.0, 2.0
    y = torch.zeros(2, dtype=torch.long)
    assert collapsed(logits, y).tolist() == [True, False]
    assert collapsed(logits, y, "stablemax").tolist() == [False, False]
    assert answer_loss(logits, y, torch.float32, softmax="stablemax")[()] > 0


def test_unknown_softmax_is_one_clear_error(tmp_path):
    with pytest.raises(GrokscopeError, match="softmax must be one of softmax, stablemax"):
        grokscope.train(tiny(train={"softmax": "sparsemax"}), out=tmp_path / "r", **QUIET)
    assert not (tmp_path / "r").exists()


def test_a_stablemax_run_trains_and_evaluates_with_stablemax(tmp_path):
    run = grokscope.train(tiny(train={"softmax": "stablemax", "steps": 20}), out=tmp_path / "r", progress=False,
                          log=silent)
    assert run.config.train.softmax == "stablemax"
    data = make_dataset("x+y", 7, 0.6, seed=0)
    model = run.model_at(20)
    from grokscope.forward import answer_logits
    with torch.no_grad():
        logits = answer_logits(model, data.train_x)
    row = run.metrics.set_index("step").loc[20]
    assert row.train_loss == pytest.approx(float(answer_loss(logits, data.train_y, softmax="stablemax")), rel=1e-6)
    # near chance s(x) ~ 1 + x ~ e^x, so the two losses are close, but not the same
    assert abs(row.train_loss - float(answer_loss(logits, data.train_y))) > 1e-4
    assert row.train_acc == pytest.approx(float((logits.argmax(-1) == data.train_y).float().mean()))


# --- ⊥Grad -------------------------------------------------------------------------------------------
def test_orthogonalize_leaves_each_gradient_orthogonal_to_its_tensor():
    torch.manual_seed(2)
    ws = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True), torch.zeros(3, requires_grad=True)]
    gs = [torch.randn(4, 3), torch.randn(5), torch.randn(3)]
    gs[1] = gs[1] + 3 * ws[1].detach()  # a gradient mostly along its weights
    for rescale in (False, True):
        for w, g in zip(ws, gs):
            w.grad = g.clone()
        orthogonalize_(ws, rescale=rescale)
        for w, g in zip(ws[:2], gs[:2]):
            wd = w.detach().double().reshape(-1)
            ex = g.double().reshape(-1) - (wd @ g.double().reshape(-1)) / (wd @ wd) * wd
            if rescale:
                ex = ex * g.double().norm() / ex.norm()
            assert torch.allclose(w.grad.double().reshape(-1), ex, rtol=1e-6, atol=1e-7)
            cos = float(w.grad.double().reshape(-1) @ wd) / (w.grad.double().norm() * wd.norm())
            assert abs(cos) < 1e-6
            assert float(w.grad.norm()) == pytest.approx(float(g.norm()) if rescale else float(ex.norm()), rel=1e-6)
        assert torch.equal(ws[2].grad, gs[2])  # a zero tensor: nothing to project on


def test_orthograd_in_the_trainer_projects_every_tensor():
    data = make_dataset("x+y", 7, 0.6, seed=0)
    t = Trainer(tiny(train={"orthograd": True, "orthograd_rescale": False}), data, CPU)
    for _ in range(3):
        t.step()
    # one more step with the AdamW update removed: the gradients it applies are what ⊥Grad left
    t._adamw = lambda lr: None
    before = [p.detach().clone() for p in t.params]
    t.step()
    for p, w in zip(t.params, before):
        cos = float(p.grad.double().reshape(-1) @ w.double().reshape(-1)) / (
            float(p.grad.double().norm()) * float(w.double().norm()) + 1e-300)
        assert abs(cos) < 1e-5, cos
    plain = Trainer(tiny(), data, CPU)
    for _ in range(4):
        plain.step()
    assert not torch.equal(plain.params[0], t.params[0])


# --- Grokfast-MA ------------------------------------------------------------------------------------
def test_grokfast_ma_against_a_direct_computation():
    data = make_dataset("x+y", 7, 0.6, seed=0)
    window, lam = 3, 5.0
    t = Trainer(tiny(train={"grokfast_lambda": lam, "grokfast_filter": "ma", "grokfast_window": window,
                            "batch_size": 4}), data, CPU)
    raw, applied = [], []
    t._adamw_real = t._adamw

    def spy(lr):  # called after the filter: record the raw gradient (recomputed) and the filtered one
        applied.append([p.grad.clone() for p in t.params])
        t._adamw_real(lr)

    t._adamw = spy
    real_ma = t._grokfast_ma

    def capture(w, lam_):
        raw.append([p.grad.clone() for p in t.params])
        real_ma(w, lam_)

    t._grokfast_ma = capture
    for _ in range(7):
        t.step()
    for i in range(7):
        for j in range(len(t.params)):
            if i + 1 < window:  # until the window is full the gradient passes unchanged
                expect = raw[i][j]
            else:
                expect = raw[i][j] + lam * torch.stack([raw[k][j] for k in range(i - window + 1, i + 1)]).mean(0)
            assert torch.allclose(applied[i][j], expect, rtol=1e-5, atol=1e-6), (i, j)  # float32 sums
    assert t.ma_count == 7 and t.ema is None


def test_bad_grokfast_settings_are_clear_errors(tmp_path):
    for over, msg in (({"grokfast_filter": "median"}, "grokfast_filter must be one of ema, ma"),
                      ({"grokfast_window": 0}, "grokfast_window must be at least 1")):
        with pytest.raises(GrokscopeError, match=msg):
            grokscope.train(tiny(train=over), out=tmp_path / "r", **QUIET)


# --- resume: bit-identical with each option -----------------------------------------------------------
@pytest.mark.parametrize("over", [
    {"orthograd": True},
    {"orthograd": True, "orthograd_rescale": False, "softmax": "stablemax"},
    {"grokfast_lambda": 5.0, "grokfast_filter": "ma", "grokfast_window": 4},
], ids=["orthograd", "orthograd-stablemax", "grokfast-ma"])
def test_resume_with_the_option_is_bit_identical(tmp_path, over):
    """An uninterrupted trainer against one stopped after 9 steps, its resume state written to and
    read back from a safetensors file, and continued in a fresh Trainer (as ``--resume`` does)."""
    cfg = tiny(train={**over, "batch_size": 5})
    data = make_dataset("x+y", 7, 0.6, seed=0)
    ref = Trainer(cfg, data, CPU)
    for _ in range(20):
        ref.step()
    cut = Trainer(cfg, data, CPU)
    for _ in range(9):
        cut.step()
    atomic_save(cut.state_tensors(), tmp_path / STATE_FILE, {"step": "9"})
    resumed = Trainer(cfg, data, CPU)
    resumed.load_state_tensors(read_safetensors(tmp_path / STATE_FILE, "state"), 9, "state")
    for _ in range(11):
        resumed.step()
    for p, q in zip(ref.params, resumed.params):
        assert torch.equal(p, q)
    ra, rb = ref.state_tensors(), resumed.state_tensors()
    assert set(ra) == set(rb) and all(torch.equal(ra[k], rb[k]) for k in ra)


def test_resume_through_the_api_with_orthograd_and_ma_is_bit_identical(tmp_path):
    over = {"orthograd": True, "grokfast_lambda": 5.0, "grokfast_filter": "ma", "grokfast_window": 3}
    ref = grokscope.train(tiny(train=over), out=tmp_path / "ref", **QUIET)
    grokscope.train(tiny(train=over), out=tmp_path / "cut", steps=40, **QUIET)
    cut = grokscope.train(resume=tmp_path / "cut", steps=60, **QUIET)
    a, b = ref.state_dict_at(60), cut.state_dict_at(60)
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- reachable from the CLI and sweeps; batching --------------------------------------------------------
def test_cli_flags_set_the_fields():
    args = make_parser("train").parse_args(["train", "--softmax", "stablemax", "--orthograd", "--grokfast-filter", "ma",
                                     "--grokfast-window", "7", "--grokfast-lambda", "5"])
    tr = build_config(args).train
    assert (tr.softmax, tr.orthograd, tr.orthograd_rescale, tr.grokfast_filter, tr.grokfast_window) == \
        ("stablemax", True, True, "ma", 7)
    tr = build_config(make_parser("train").parse_args(["train", "--orthograd-rescale", "false"])).train
    assert (tr.orthograd, tr.orthograd_rescale) == (False, False)


def test_sweep_axes_parse_the_new_fields():
    from grokscope.config import parse_values
    from grokscope.sweep.spec import apply_coords

    assert parse_values("orthograd", "false,true") == [False, True]
    assert parse_values("softmax", "softmax,stablemax") == ["softmax", "stablemax"]
    cfg = apply_coords(tiny(), {"orthograd": True, "softmax": "stablemax"})
    assert cfg.train.orthograd and cfg.train.softmax == "stablemax"


def test_batch_key_separates_softmaxes_and_refuses_orthograd_and_ma():
    assert batch_key(tiny(), 7) is not None
    assert batch_key(tiny(train={"softmax": "stablemax"}), 7) not in (None, batch_key(tiny(), 7))
    assert batch_key(tiny(train={"orthograd": True}), 7) is None
    assert batch_key(tiny(train={"grokfast_lambda": 5.0, "grokfast_filter": "ma"}), 7) is None
    assert batch_key(tiny(train={"grokfast_lambda": 2.0}), 7) is not None


def test_batched_stablemax_follows_the_run_trained_alone(tmp_path):
    from grokscope.batched import train_many
    cfg = tiny(train={"softmax": "stablemax", "steps": 20})
    alone = grokscope.train(cfg, out=tmp_path / "alone", **QUIET)
    (batched,) = train_many([cfg], [tmp_path / "batched"], **QUIET)
    ma, mb = alone.metrics, batched.metrics
    assert ma.train_loss.tolist() == pytest.approx(mb.train_loss.tolist(), rel=1e-4)
    assert ma.val_acc.tolist() == mb.val_acc.tolist()
