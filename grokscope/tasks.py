"""The binary-operation datasets of Power et al. (2022), appendix A.1.1, with split and outliers.

An equation ``x op y = c`` is the token sequence ``[x, OP, y, EQ]`` with label ``c``. Element tokens
come first: token ``i`` is ``elements[i]`` (for the modular operations, residue ``r`` is token ``r``),
then ``OP = n`` and ``EQ = n + 1`` where ``n`` is the number of elements. The model's output space is
the ``n`` element tokens only.

S5 convention: a permutation is a tuple ``s`` with ``s[i]`` the image of ``i``; the product is
function composition, ``(x·y)(i) = x(y(i))`` (apply ``y`` first). The 120 permutations are tokens in
lexicographic order, so token 0 is the identity.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Hashable, Sequence

from .errors import GrokscopeError, did_you_mean

N_CTX = 4  # tokens of an equation: x op y =

if TYPE_CHECKING:  # torch is imported where a table is built: listing the operations needs no torch
    import torch


def chance_loss(n_answers: int) -> float:
    """ln N: the validation loss of a uniform guess over the task's N possible answers. "Below chance"
    everywhere (the phases' boundary, the forecast's grok step, a sweep's steps to ln N) means below this."""
    return math.log(n_answers)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


@dataclass(frozen=True)
class Operation:
    """A binary operation over a finite set of elements.

    ``elements(p)`` lists the elements (their order fixes the token ids), ``domain(p)`` lists the
    ``(x, y)`` pairs that form the equations, and ``fn(x, y, p)`` gives the answer, an element.
    """

    name: str
    fn: Callable[[Any, Any, int], Hashable]
    elements: Callable[[int], Sequence[Hashable]]
    domain: Callable[[int], Sequence[tuple]]
    needs_prime: bool = False
    uses_p: bool = True
    kind: str = "custom"  # "modular", "multiplicative", "group", "custom": what the analyses may assume
    description: str = ""


OPERATIONS: dict[str, Operation] = {}


def register_operation(
    name: str,
    fn: Callable[..., Hashable],
    elements: Sequence[Hashable] | Callable[[int], Sequence[Hashable]],
    domain: Sequence[tuple] | Callable[[int], Sequence[tuple]] | None = None,
    *,
    needs_prime: bool = False,
    kind: str = "custom",
    description: str = "",
    overwrite: bool = False,
) -> Operation:
    """Register a binary operation so that configs can name it.

    ``elements`` is a sequence of hashable elements (or a function of ``p`` returning one);
    ``fn(x, y)`` (or ``fn(x, y, p)`` when ``elements`` is a function of ``p``) returns an element.
    ``domain`` defaults to every pair of elements. A run saves its whole dataset, so a run trained on
    a custom operation can be loaded and analysed in a process that never registered it.
    """
    if name in OPERATIONS and not overwrite:
        raise GrokscopeError(f"operation {name!r} is already registered (pass overwrite=True to replace it)")
    uses_p = callable(elements)
    if uses_p:
        elems_fn, fn3 = elements, fn
    else:
        fixed = list(elements)
        elems_fn = lambda p, _e=fixed: _e  # noqa: E731
        fn3 = lambda x, y, p, _f=fn: _f(x, y)  # noqa: E731
    if domain is None:
        dom_fn = lambda p: [(x, y) for x in elems_fn(p) for y in elems_fn(p)]  # noqa: E731
    elif callable(domain):
        dom_fn = domain
    else:
        fixed_dom = [tuple(d) for d in domain]
        dom_fn = lambda p, _d=fixed_dom: _d  # noqa: E731
    op = Operation(name, fn3, elems_fn, dom_fn, needs_prime, uses_p, kind, description)
    OPERATIONS[name] = op
    return op


def get_operation(name: str) -> Operation:
    try:
        return OPERATIONS[name]
    except KeyError:
        raise GrokscopeError(
            f"unknown operation {name!r}{did_you_mean(name, OPERATIONS) or '.'} Known: {', '.join(OPERATIONS)}"
        ) from None


# ---------------------------------------------------------------------------------------------
# The built-in operations (spec section 1).
_res = lambda p: list(range(p))  # noqa: E731
_all_pairs = lambda p: [(x, y) for x in range(p) for y in range(p)]  # noqa: E731
_nonzero_y = lambda p: [(x, y) for x in range(p) for y in range(1, p)]  # noqa: E731
_nonzero_xy = lambda p: [(x, y) for x in range(1, p) for y in range(1, p)]  # noqa: E731


def _inv(y: int, p: int) -> int:
    return pow(y, p - 2, p)


def _modular(name, f, domain=_all_pairs, needs_prime=False, kind="modular", description=""):
    register_operation(name, f, _res, domain, needs_prime=needs_prime, kind=kind, description=description)


_modular("x+y", lambda x, y, p: (x + y) % p, description="addition mod p")
_modular("x-y", lambda x, y, p: (x - y) % p, description="subtraction mod p")
_modular("x*y", lambda x, y, p: (x * y) % p, _nonzero_xy, True, "multiplicative",
         "multiplication mod p over non-zero x, y (= x+y mod p-1 up to renaming)")
_modular("x/y", lambda x, y, p: (x * _inv(y, p)) % p, _nonzero_y, True, "multiplicative",
         "division mod p, 0 <= x < p, 0 < y < p")
_modular("x/y if y odd else x-y",
         lambda x, y, p: (x * _inv(y, p)) % p if y % 2 else (x - y) % p, _all_pairs, True, "modular-mixed",
         "x/y when y is odd, else x-y (mod p)")
_modular("x^2+y^2", lambda x, y, p: (x * x + y * y) % p, kind="modular-poly")
_modular("x^2+xy+y^2", lambda x, y, p: (x * x + x * y + y * y) % p, kind="modular-poly")
_modular("x^2+xy+y^2+x", lambda x, y, p: (x * x + x * y + y * y + x) % p, kind="modular-poly")
_modular("x^3+xy", lambda x, y, p: (x**3 + x * y) % p, kind="modular-poly")
_modular("x^3+xy^2+y", lambda x, y, p: (x**3 + x * y * y + y) % p, kind="modular-poly")

S5 = list(itertools.permutations(range(5)))  # lexicographic: S5[0] is the identity


def compose(x: tuple, y: tuple) -> tuple:
    """(x·y)(i) = x(y(i)): apply y first, then x."""
    return tuple(x[y[i]] for i in range(len(y)))


def inverse(x: tuple) -> tuple:
    out = [0] * len(x)
    for i, xi in enumerate(x):
        out[xi] = i
    return tuple(out)


register_operation("s5", lambda x, y: compose(x, y), S5, kind="group", description="x·y in S5")
register_operation("s5conj", lambda x, y: compose(compose(x, y), inverse(x)), S5, kind="group",
                   description="x·y·x⁻¹ in S5")
register_operation("s5aba", lambda x, y: compose(compose(x, y), x), S5, kind="group", description="x·y·x in S5")
# The same three products in S4 (24 elements): the small-scale stand-in for S5 in `grokscope sweep
# --scale small` (576 equations instead of 14,400).
S4 = list(itertools.permutations(range(4)))
register_operation("s4", lambda x, y: compose(x, y), S4, kind="group", description="x·y in S4 (small S5 stand-in)")
register_operation("s4conj", lambda x, y: compose(compose(x, y), inverse(x)), S4, kind="group",
                   description="x·y·x⁻¹ in S4")
register_operation("s4aba", lambda x, y: compose(compose(x, y), x), S4, kind="group", description="x·y·x in S4")
BUILTIN_OPERATIONS = tuple(OPERATIONS)


# ---------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """Every equation of a task, split into training and validation sets.

    ``train_x``/``val_x``: (n, 4) token rows ``x op y =``; ``train_y``/``val_y``: (n,) answer tokens
    (the training answers include the outliers). ``train_idx``/``val_idx`` index the full equation
    table (``all_x``, ``all_y``); ``outlier_pos`` are positions in the training set whose answers were
    replaced, and ``train_y_clean`` holds their true answers.
    """

    op: str
    p: int
    elements: list[str]
    all_x: torch.Tensor
    all_y: torch.Tensor
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    train_y: torch.Tensor
    outlier_pos: torch.Tensor

    @property
    def n_elements(self) -> int:
        return len(self.elements)

    @property
    def d_vocab(self) -> int:
        return self.n_elements + 2

    @property
    def op_token(self) -> int:
        return self.n_elements

    @property
    def eq_token(self) -> int:
        return self.n_elements + 1

    @property
    def train_x(self) -> torch.Tensor:
        return self.all_x[self.train_idx]

    @property
    def val_x(self) -> torch.Tensor:
        return self.all_x[self.val_idx]

    @property
    def val_y(self) -> torch.Tensor:
        return self.all_y[self.val_idx]

    @property
    def train_y_clean(self) -> torch.Tensor:
        return self.all_y[self.train_idx]

    @property
    def token_names(self) -> list[str]:
        """Name of every token id: the elements (the answers are these first ``n_elements`` tokens), then
        the operation and "=". A row ``x op y =`` decodes to e.g. ["3", "x+y", "5", "="]."""
        return [*self.elements, self.op, "="]

    def decode(self, tokens):
        """Token ids (an int, a list or a tensor/array of any shape) -> their names, in the same nesting."""
        return decode_tokens(self.token_names, tokens)

    def name_tokens(self, model) -> None:
        """Give a HookedTransformer of this task a ``to_str_tokens`` that names token ids (TransformerLens'
        own needs a text tokenizer, which these models do not have)."""
        model.to_str_tokens = TokenNames(self.token_names)

    def tensors(self) -> dict[str, torch.Tensor]:
        """What a run saves: enough to rebuild this object without the operation's code."""
        return {k: getattr(self, k).contiguous() for k in
                ("all_x", "all_y", "train_idx", "val_idx", "train_y", "outlier_pos")}

    @classmethod
    def from_tensors(cls, op: str, p: int, elements: list[str], t: dict[str, torch.Tensor]) -> "Dataset":
        return cls(op, p, list(elements), **{k: t[k].long() for k in
                   ("all_x", "all_y", "train_idx", "val_idx", "train_y", "outlier_pos")})


def decode_tokens(names: list[str], tokens):
    """``names[t]`` for every id ``t`` in ``tokens`` (int, nested list, tensor or array), same nesting."""
    if hasattr(tokens, "tolist"):
        tokens = tokens.tolist()

    def name(t):
        if isinstance(t, (list, tuple)):
            return [name(u) for u in t]
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(names):
            raise GrokscopeError(f"{t!r} is not a token id of this task (0 to {len(names) - 1})")
        return names[t]

    return name(tokens)


class TokenNames:
    """``model.to_str_tokens`` for a grokscope model: token ids -> names (see ``Dataset.token_names``)."""

    def __init__(self, names: list[str]):
        self.names = list(names)

    def __call__(self, input, prepend_bos=None, padding_side=None):
        if isinstance(input, str) or (isinstance(input, list) and input and isinstance(input[0], str)):
            raise GrokscopeError("this model has no text tokenizer: its tokens are the task's elements; pass token "
                                 "ids (e.g. run.data.train_x[0]), or use run.decode(tokens)")
        return decode_tokens(self.names, input)


def equation_table(op_name: str, p: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """All equations of an operation: element names, (N, 4) token rows and (N,) answer tokens."""
    import torch

    op = get_operation(op_name)
    if op.uses_p:
        if p < 2:
            raise GrokscopeError(f"p must be at least 2, got {p}")
        if op.needs_prime and not is_prime(p):
            raise GrokscopeError(f"operation {op_name!r} needs a prime p (inverses mod p must exist); {p} is not prime")
    elements = list(op.elements(p))
    index = {e: i for i, e in enumerate(elements)}
    if len(index) != len(elements):
        raise GrokscopeError(f"operation {op_name!r} lists an element twice")
    n = len(elements)
    rows, labels = [], []
    for x, y in op.domain(p):
        c = op.fn(x, y, p)
        if c not in index:
            raise GrokscopeError(f"operation {op_name!r}: {x!r} ∘ {y!r} = {c!r} is not an element")
        rows.append((index[x], n, index[y], n + 1))
        labels.append(index[c])
    if not rows:
        raise GrokscopeError(f"operation {op_name!r} has no equations for p={p}")
    return [str(e) for e in elements], torch.tensor(rows, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


def make_dataset(op: str, p: int, frac: float, seed: int = 0, outliers: int = 0) -> Dataset:
    """Split every equation at random: ``round(frac * N)`` for training, the rest for validation.

    Outliers (appendix A.4): ``outliers`` training equations, drawn at random, each get the answer of
    another training equation drawn at random (a different equation; its answer may coincide).
    Validation is untouched. Both draws come from ``seed``.
    """
    import torch

    if not (0.0 < frac < 1.0):
        raise GrokscopeError(f"training fraction must be in (0, 1), got {frac}")
    elements, all_x, all_y = equation_table(op, p)
    n = len(all_y)
    n_train = int(round(frac * n))
    if n_train < 1 or n_train >= n:
        raise GrokscopeError(f"fraction {frac} of {n} equations leaves an empty training or validation set")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    train_idx, val_idx = perm[:n_train].sort().values, perm[n_train:].sort().values
    train_y = all_y[train_idx].clone()
    if outliers < 0 or outliers > n_train - 1 or (outliers and n_train < 2):
        raise GrokscopeError(f"outliers must be between 0 and {n_train - 1} (the training set size less one), got {outliers}")
    outlier_pos = torch.randperm(n_train, generator=g)[:outliers].sort().values
    if outliers:
        donors = torch.randint(0, n_train - 1, (outliers,), generator=g)
        donors = donors + (donors >= outlier_pos).long()  # never the equation itself
        train_y[outlier_pos] = all_y[train_idx][donors]
    return Dataset(op, p, elements, all_x, all_y, train_idx, val_idx, train_y, outlier_pos)


def check_dataset(data, cfg, meta: dict, what: str) -> None:
    """A run's saved equations, split and outliers (its data file) against its config (``cfg.task``) and
    against themselves: the table must be the operation's own, the split a split, the outliers as many
    as the config says."""
    import torch

    t = cfg.task
    if meta.get("op") not in (None, t.op) or meta.get("p") not in (None, str(t.p)):
        raise GrokscopeError(f"{what} was made for op {meta.get('op')!r}, p {meta.get('p')}; config.json says "
                             f"op {t.op!r}, p {t.p}")
    n_el = data.n_elements
    if n_el < 1:
        raise GrokscopeError(f"{what}: no elements")
    for name in ("all_x", "all_y", "train_idx", "val_idx", "train_y", "outlier_pos"):
        if getattr(data, name).dtype != torch.long:
            raise GrokscopeError(f"{what}: {name} is not an integer tensor")
    x, y = data.all_x, data.all_y
    n = len(y)
    if x.dim() != 2 or x.shape[1] != 4 or x.shape[0] != n or n < 2:
        raise GrokscopeError(f"{what}: the equations have shape {tuple(x.shape)} for {n} answers; expected ({n}, 4)")
    if bool((x[:, [0, 2]] < 0).any() | (x[:, [0, 2]] >= n_el).any()) or bool((x[:, 1] != n_el).any()) \
            or bool((x[:, 3] != n_el + 1).any()):
        raise GrokscopeError(f"{what}: a token is out of range (elements 0..{n_el - 1}, op {n_el}, = {n_el + 1})")
    for name, v, hi in (("all_y", y, n_el), ("train_y", data.train_y, n_el), ("train_idx", data.train_idx, n),
                        ("val_idx", data.val_idx, n)):
        if v.dim() != 1 or bool((v < 0).any() | (v >= hi).any()):
            raise GrokscopeError(f"{what}: {name} is out of range (0..{hi - 1})")
    tr, va = data.train_idx, data.val_idx
    if len(data.train_y) != len(tr):
        raise GrokscopeError(f"{what}: {len(data.train_y)} training answers for {len(tr)} training equations")
    seen = torch.zeros(n, dtype=torch.long)
    seen.index_add_(0, torch.cat([tr, va]), torch.ones(len(tr) + len(va), dtype=torch.long))
    if len(tr) == 0 or len(va) == 0 or bool((seen != 1).any()):
        raise GrokscopeError(f"{what}: the training and validation sets are not a split of the equations "
                             f"(they overlap, repeat or miss some)")
    op_ = data.outlier_pos
    if op_.dim() != 1 or bool((op_ < 0).any() | (op_ >= len(tr)).any()) or len(op_) != t.outliers:
        raise GrokscopeError(f"{what}: its {len(op_)} outliers do not match config.json's {t.outliers}")
    clean = torch.ones(len(tr), dtype=torch.bool)
    clean[op_] = False
    if not bool((data.train_y[clean] == y[tr][clean]).all()):
        raise GrokscopeError(f"{what}: training answers differ from the equations' answers outside the outliers")
    if len(tr) != int(round(t.frac * n)):
        raise GrokscopeError(f"{what}: {len(tr)} of {n} equations train; config.json's fraction {t.frac} gives "
                             f"{int(round(t.frac * n))}")
    if t.op in OPERATIONS and n <= 1_000_000:  # the table must be the operation's own
        elements, ex, ey = equation_table(t.op, t.p)
        if elements != data.elements or not torch.equal(ex, x) or not torch.equal(ey, y):
            raise GrokscopeError(f"{what}: its equations are not those of op {t.op!r} with p {t.p} (config.json)")
