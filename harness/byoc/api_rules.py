"""What NNAPI and the Neuron Adapter API accept, per operation: one table for Python and C.

Each operation edgefarm emits (or the reference driver implements) has its NNAPI feature
level, its forms (explicit / implicit padding, ...), and per input position the operand types
allowed at each feature level, the ranks allowed, and whether the reference driver needs it
constant. A form's optional trailing inputs come in groups, each with the level that brought it
(CONV_2D's NCHW flag, then both dilation factors, from level 3): the input counts a form takes at
a level are its required inputs plus a prefix of the groups of that level or lower.

Facts, not code, from the APIs' documentation: the OperationCode reference of NNAPI
(developer.android.com/ndk/reference/group/neural-networks, the comments of AOSP's
``packages/modules/NeuralNetworks/runtime/include/NeuralNetworksTypes.h``) and the operation
validators of AOSP's runtime (``common/types/operations/src/*.cpp``) where the comments leave a
count open; MediaTek's Neuron Adapter API (``NeuronAdapter.h`` of the NeuroPilot SDK), whose
operation list marks each operation "Available since 4.1.0. NNAPI level 30" (its forms are NNAPI
feature level 4's), BATCH_MATMUL "Available since 5.1.2. NNAPI FL6", LOG "Not available".

Who uses it: :meth:`harness.byoc.nnmodel.NNModel.emit` checks every operation the translator
emits (a form the target does not take keeps the operator on the CPU, with the rule as its
reason); :func:`c_header` writes the same table as ``ef_rules.h`` when the reference driver is
built (:mod:`harness.byoc.link`), whose ``addOperation`` enforces it at the feature level the
driver was built for and returns the API's own error codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The newest NNAPI feature level (Android 15).
MAX_FEATURE_LEVEL = 8

# Operand type codes (identical in NNAPI and Neuron).
TYPE_CODES: dict[str, int] = {
    "FLOAT32": 0,
    "INT32": 1,
    "UINT32": 2,
    "TENSOR_FLOAT32": 3,
    "TENSOR_INT32": 4,
    "BOOL": 6,
    "TENSOR_FLOAT16": 8,
    "FLOAT16": 10,
}
TYPE_NAMES = {v: k for k, v in TYPE_CODES.items()}

# NNAPI's FeatureLevelCode values (ANeuralNetworks_getRuntimeFeatureLevel), per feature level.
FEATURE_LEVEL_CODES = {1: 27, 2: 28, 3: 29, 4: 30, 5: 31, 6: 1000006, 7: 1000007, 8: 1000008}

UP_TO_4 = frozenset({1, 2, 3, 4})
FROM_1 = frozenset({1, 2, 3, 4, 5, 6})  # "from 1": no upper bound; the driver holds rank 6
SCALAR = frozenset({0})
VECTOR = frozenset({1})


@dataclass(frozen=True)
class Arg:
    """One input position: its types (each with the feature level that allowed it), ranks,
    and whether the reference driver reads it when the model is built (a parameter: it must
    be a constant there)."""

    name: str
    types: tuple[tuple[str, int], ...]
    ranks: frozenset[int]
    param: bool = False
    same_type_as: int | None = None

    def types_at(self, level: int) -> set[str]:
        return {t for t, since in self.types if since <= level}


@dataclass(frozen=True)
class Form:
    """One way to call an operation. ``args`` lists every input; the last inputs are
    optional in ``groups`` of (size, feature level), in order. ``variadic``: the first arg
    repeats (one or more), the rest follow."""

    name: str
    since: int
    args: tuple[Arg, ...]
    groups: tuple[tuple[int, int], ...] = ()
    variadic: bool = False

    def counts(self) -> list[tuple[int, int]]:
        """(input count, feature level from which it is allowed), shortest first."""
        n = len(self.args) - sum(size for size, _ in self.groups)
        out = [(n, self.since)]
        level = self.since
        for size, since in self.groups:
            n += size
            level = max(level, since)
            out.append((n, level))
        return out

    def counts_at(self, level: int) -> list[int]:
        return [n for n, since in self.counts() if since <= level]

    def arg(self, position: int, n_inputs: int) -> Arg:
        if not self.variadic:
            return self.args[position]
        repeats = n_inputs - (len(self.args) - 1)
        return self.args[0] if position < repeats else self.args[position - repeats + 1]


@dataclass(frozen=True)
class OperationRule:
    name: str
    code: int
    since: int  # the NNAPI feature level that brought it
    forms: tuple[Form, ...]
    neuron_level: int | None  # the NNAPI level Neuron's version follows; None: not in Neuron
    source: str
    outputs: int = 1

    def available(self, api: str, level: int) -> bool:
        if api == "neuron":
            return self.neuron_level is not None
        return self.since <= level


# ------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------

FLOAT_TENSOR = (("TENSOR_FLOAT32", 1), ("TENSOR_FLOAT16", 3))
FLOAT_INT_TENSOR = (*FLOAT_TENSOR, ("TENSOR_INT32", 4))  # ADD, MUL, SUB, DIV: INT32 from 4
FLOAT_TENSOR_3 = (("TENSOR_FLOAT32", 3), ("TENSOR_FLOAT16", 3))  # operations of level 3
BMM_TYPES = (("TENSOR_FLOAT32", 6), ("TENSOR_FLOAT16", 6), ("TENSOR_INT32", 6))
INT32 = (("INT32", 1),)
FLOAT32 = (("FLOAT32", 1),)
BOOL = (("BOOL", 1),)
INT_VECTOR = (("TENSOR_INT32", 1),)


def tensor(
    name: str,
    ranks: frozenset[int] = UP_TO_4,
    types: tuple[tuple[str, int], ...] = FLOAT_TENSOR,
    same: int | None = 0,
) -> Arg:
    return Arg(name, types, ranks, same_type_as=same)


def i32(name: str) -> Arg:
    return Arg(name, INT32, SCALAR, param=True)


def flag(name: str) -> Arg:
    return Arg(name, BOOL, SCALAR, param=True)


INPUT4 = Arg("input", FLOAT_TENSOR, frozenset({4}))
PADS = (i32("padding left"), i32("padding right"), i32("padding top"), i32("padding bottom"))
STRIDES = (i32("stride width"), i32("stride height"))
ACT = i32("fused activation")
NCHW = flag("NCHW layout")
DILATION = (i32("dilation width"), i32("dilation height"))


def _conv(
    name: str, code: int, extra: tuple[Arg, ...], since: int, layout_required: bool
) -> OperationRule:
    weights = (
        tensor("filter", frozenset({4})),
        tensor("bias", VECTOR),
    )
    explicit = (INPUT4, *weights, *PADS, *STRIDES, *extra, ACT)
    implicit = (INPUT4, *weights, i32("padding scheme"), *STRIDES, *extra, ACT)
    if layout_required:  # GROUPED_CONV_2D: the layout flag is required, there is no dilation
        forms = (
            Form("explicit padding", since, (*explicit, NCHW)),
            Form("implicit padding", since, (*implicit, NCHW)),
        )
    else:
        groups = ((1, 3), (2, 3))
        forms = (
            Form("explicit padding", since, (*explicit, NCHW, *DILATION), groups),
            Form("implicit padding", since, (*implicit, NCHW, *DILATION), groups),
        )
    return OperationRule(name, code, since, forms, 4, f"NNAPI {name}; Neuron 4.1.0")


def _pool(name: str, code: int) -> OperationRule:
    filt = (i32("filter width"), i32("filter height"))
    return OperationRule(
        name,
        code,
        1,
        (
            Form("explicit padding", 1, (INPUT4, *PADS, *STRIDES, *filt, ACT, NCHW), ((1, 3),)),
            Form(
                "implicit padding",
                1,
                (INPUT4, i32("padding scheme"), *STRIDES, *filt, ACT, NCHW),
                ((1, 3),),
            ),
        ),
        4,
        f"NNAPI {name} (NCHW flag from level 3); Neuron 4.1.0",
    )


def _binary_act(name: str, code: int, since: int) -> OperationRule:
    # "Supported tensor rank: up to 4"; input 2 the FuseCode. TENSOR_INT32 from level 4.
    return OperationRule(
        name,
        code,
        since,
        (
            Form(
                "fused activation",
                since,
                (
                    tensor("input0", types=FLOAT_INT_TENSOR, same=None),
                    tensor("input1", types=FLOAT_INT_TENSOR),
                    ACT,
                ),
            ),
        ),
        4,
        f"NNAPI {name}; Neuron 4.1.0",
    )


def _binary3(name: str, code: int, neuron: int | None = 4) -> OperationRule:
    # Level-3 binary operations: "Supported tensor rank: from 1", no activation; MAXIMUM and
    # MINIMUM also take TENSOR_INT32, POW only floats.
    types = FLOAT_TENSOR_3 if name == "POW" else (*FLOAT_TENSOR_3, ("TENSOR_INT32", 3))
    return OperationRule(
        name,
        code,
        3,
        (
            Form(
                "plain",
                3,
                (
                    tensor("input0", FROM_1, types, None),
                    tensor("input1", FROM_1, types),
                ),
            ),
        ),
        neuron,
        f"NNAPI {name} (level 3, rank from 1); Neuron 4.1.0",
    )


def _unary(
    name: str,
    code: int,
    since: int,
    ranks: frozenset[int],
    neuron: int | None = 4,
    more: tuple[tuple[str, int], ...] = (),
) -> OperationRule:
    types = (*(FLOAT_TENSOR if since < 3 else FLOAT_TENSOR_3), *more)
    return OperationRule(
        name,
        code,
        since,
        (Form("plain", since, (tensor("input", ranks, types, None),)),),
        neuron,
        f"NNAPI {name} (level {since}, rank {'up to 4' if ranks == UP_TO_4 else 'from 1'})"
        + ("; Neuron 4.1.0" if neuron else "; Neuron: not available"),
    )


# ------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------

_RULES: tuple[OperationRule, ...] = (
    _binary_act("ADD", 0, 1),
    _pool("AVERAGE_POOL_2D", 1),
    OperationRule(
        "CONCATENATION",
        2,
        1,
        # "0 ~ n-1: the list of n input tensors ... n: an INT32 scalar, the axis"; the
        # runtime's validator asks for at least 2 inputs (one tensor and the axis).
        (Form("axis", 1, (tensor("tensor", same=None), i32("axis")), variadic=True),),
        4,
        "NNAPI CONCATENATION (rank up to 4); Neuron 4.1.0",
    ),
    _conv("CONV_2D", 3, (), 1, False),
    _conv("DEPTHWISE_CONV_2D", 4, (i32("depth multiplier"),), 1, False),
    _unary("FLOOR", 8, 1, UP_TO_4),
    OperationRule(
        "FULLY_CONNECTED",
        9,
        1,
        (
            Form(
                "fused activation",
                1,
                (
                    tensor("input", frozenset({2, 3, 4}), same=None),
                    tensor("weights", frozenset({2})),
                    tensor("bias", VECTOR),
                    ACT,
                ),
            ),
        ),
        4,
        "NNAPI FULLY_CONNECTED (input of rank 2 to 4, weights 2-D, bias 1-D); Neuron 4.1.0",
    ),
    _unary("LOGISTIC", 14, 1, UP_TO_4),
    _pool("MAX_POOL_2D", 17),
    _binary_act("MUL", 18, 1),
    _unary("RELU", 19, 1, UP_TO_4),
    _unary("RELU1", 20, 1, UP_TO_4),
    _unary("RELU6", 21, 1, UP_TO_4),
    OperationRule(
        "RESHAPE",
        22,
        1,
        (
            Form(
                "shape",
                1,
                (
                    tensor("input", types=(*FLOAT_TENSOR, ("TENSOR_INT32", 6)), same=None),
                    Arg("shape", INT_VECTOR, VECTOR, param=True),
                ),
            ),
        ),
        4,
        "NNAPI RESHAPE (rank up to 4, shape a 1-D TENSOR_INT32, TENSOR_INT32 data from level 6); "
        "Neuron 4.1.0",
    ),
    OperationRule(
        "SOFTMAX",
        25,
        1,
        (
            # Before level 3 the input is 2-D or 4-D and the last axis is the one reduced.
            Form(
                "beta",
                1,
                (
                    tensor("input", frozenset({2, 4}), same=None),
                    Arg("beta", FLOAT32, SCALAR, param=True),
                ),
            ),
            # From level 3: any rank up to 4, and an optional INT32 axis.
            Form(
                "beta and axis",
                3,
                (tensor("input", same=None), Arg("beta", FLOAT32, SCALAR, param=True), i32("axis")),
                ((1, 3),),
            ),
        ),
        4,
        "NNAPI SOFTMAX (axis input from level 3; the runtime's validator: 2 or 3 inputs, "
        "rank other than 2 or 4 from level 3); Neuron 4.1.0",
    ),
    _unary("TANH", 28, 1, UP_TO_4),
    _binary_act("DIV", 30, 2),
    OperationRule(
        "MEAN",
        31,
        2,
        (
            Form(
                "axes",
                2,
                (
                    tensor("input", same=None),
                    Arg("axes", INT_VECTOR, VECTOR, param=True),
                    i32("keep_dims"),
                ),
            ),
        ),
        4,
        "NNAPI MEAN (level 2, rank up to 4); Neuron 4.1.0",
    ),
    _binary_act("SUB", 36, 2),
    OperationRule(
        "TRANSPOSE",
        37,
        2,
        (
            Form(
                "perm", 2, (tensor("input", same=None), Arg("perm", INT_VECTOR, VECTOR, param=True))
            ),
        ),
        4,
        "NNAPI TRANSPOSE (level 2, rank up to 4; the runtime's validator: 2 inputs); Neuron 4.1.0",
    ),
    _unary("ABS", 38, 3, FROM_1, more=(("TENSOR_INT32", 4),)),
    _unary("EXP", 49, 3, FROM_1),
    _conv("GROUPED_CONV_2D", 55, (i32("groups"),), 3, True),
    _unary("LOG", 60, 3, FROM_1, neuron=None),
    _binary3("MAXIMUM", 65),
    _binary3("MINIMUM", 66),
    _unary("NEG", 67, 3, FROM_1, more=(("TENSOR_INT32", 3),)),
    _binary3("POW", 70),
    _unary("RSQRT", 83, 3, FROM_1),
    _unary("SQRT", 88, 3, FROM_1),
    _unary("HARD_SWISH", 99, 4, FROM_1),
    OperationRule(
        "BATCH_MATMUL",
        102,
        6,
        # The comments call adj_x / adj_y "optional" (default false), but the runtime's
        # validator takes exactly 4 inputs: both flags are always given.
        (
            Form(
                "adjoint flags",
                6,
                (
                    tensor("input0", frozenset({2, 3, 4}), BMM_TYPES, None),
                    tensor("input1", frozenset({2, 3, 4}), BMM_TYPES),
                    flag("adj_x"),
                    flag("adj_y"),
                ),
            ),
        ),
        6,
        "NNAPI BATCH_MATMUL (level 6, rank 2 to 4, 4 inputs); Neuron 5.1.2 (NNAPI FL6)",
    ),
)

RULES: dict[str, OperationRule] = {r.name: r for r in _RULES}
BY_CODE: dict[int, OperationRule] = {r.code: r for r in _RULES}


# ------------------------------------------------------------------------------------------
# Checking an operation
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperandInfo:
    type: str  # TENSOR_FLOAT32, INT32, ...
    rank: int
    constant: bool


@dataclass(frozen=True)
class Violation:
    """A rule an operation breaks. ``kind``: level (the operation or form is not at this
    feature level / in this API), count, type, rank, constant."""

    kind: str
    message: str


def level_of(api: str, rule: OperationRule, level: int) -> int:
    """The NNAPI feature level whose forms apply: the target's for NNAPI, the one Neuron's
    version of the operation follows for Neuron."""
    if api == "neuron":
        return rule.neuron_level or 0
    return level


def _api_label(api: str, level: int) -> str:
    return "the Neuron Adapter API" if api == "neuron" else f"NNAPI feature level {level}"


def check(
    name: str,
    inputs: Sequence[OperandInfo],
    n_outputs: int,
    *,
    api: str,
    level: int,
    driver: bool = True,
) -> Violation | None:
    """The first rule operation ``name`` with ``inputs`` breaks for ``api`` (nnapi / neuron)
    at feature ``level``, or None. ``driver``: also the reference driver's need for constant
    parameters."""
    rule = RULES.get(name)
    if rule is None:
        return Violation("level", f"{name} is not an operation edgefarm knows the rules of")
    if api == "neuron" and rule.neuron_level is None:
        return Violation("level", f"{name} is not available in the Neuron Adapter API")
    if api != "neuron" and rule.since > level:
        return Violation(
            "level", f"{name} needs NNAPI feature level {rule.since}; the target has {level}"
        )
    at = level_of(api, rule, level)
    if n_outputs != rule.outputs:
        return Violation("count", f"{name} has {rule.outputs} output(s), not {n_outputs}")
    n = len(inputs)
    forms = [f for f in rule.forms if f.since <= at]
    matching = [f for f in forms if _count_ok(f, n, at)]
    if not matching:
        later = [f for f in rule.forms if _count_ok(f, n, MAX_FEATURE_LEVEL)]
        allowed = sorted({c for f in forms for c in _counts_text(f, at)})
        msg = f"{name} takes {' or '.join(allowed)} inputs at {_api_label(api, at)}, not {n}"
        if later and api != "neuron":
            since = min(min(s for c, s in f.counts() if c == n or f.variadic) for f in later)
            return Violation("level", f"{msg} ({n} inputs from NNAPI feature level {since})")
        return Violation("count", msg)
    first: Violation | None = None
    for form in reversed(matching):  # the newest form first: its message is the most useful
        v = _check_form(name, form, inputs, at, api, driver)
        if v is None:
            return None
        first = first or v
    return first


def _count_ok(form: Form, n: int, level: int) -> bool:
    if form.variadic:
        return n >= len(form.args)
    return n in form.counts_at(level)


def _counts_text(form: Form, level: int) -> list[str]:
    if form.variadic:
        return [f"{len(form.args)} or more"]
    return [str(c) for c in form.counts_at(level)]


def _check_form(
    name: str, form: Form, inputs: Sequence[OperandInfo], level: int, api: str, driver: bool
) -> Violation | None:
    for i, info in enumerate(inputs):
        arg = form.arg(i, len(inputs))
        where = f"{name} input {i} ({arg.name}, {form.name} form)"
        allowed = arg.types_at(level)
        if info.type not in allowed:
            return Violation(
                "type",
                f"{where} is {info.type}; {_api_label(api, level)} takes "
                f"{' or '.join(sorted(allowed))}",
            )
        same = arg.same_type_as
        if same is not None and form.variadic:
            same = None
        if same is not None and inputs[same].type != info.type:
            return Violation("type", f"{where} is {info.type}, input {same} {inputs[same].type}")
        if info.rank not in arg.ranks:
            return Violation(
                "rank", f"{where} has rank {info.rank}; allowed: {_ranks_text(arg.ranks)}"
            )
        if driver and arg.param and not info.constant:
            return Violation(
                "constant",
                f"{where} must be a constant (the reference driver reads it when "
                "the model is built)",
            )
    return None


def _ranks_text(ranks: frozenset[int]) -> str:
    if ranks == SCALAR:
        return "a scalar (rank 0)"
    return ", ".join(str(r) for r in sorted(ranks))


# ------------------------------------------------------------------------------------------
# The C table (ef_rules.h), written when the reference driver is built
# ------------------------------------------------------------------------------------------


def _type_mask(arg: Arg, level: int) -> int:
    mask = 0
    for t in arg.types_at(level):
        mask |= 1 << TYPE_CODES[t]
    return mask


def _c_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def c_header() -> str:
    """``ef_rules.h``: this table for the reference driver (``driver/src/ef_conform.c``)."""
    out = [
        "/* Generated by harness.byoc.api_rules at driver build time: do not edit. */",
        "#ifndef EF_RULES_H_",
        "#define EF_RULES_H_",
        "/* Included by ef_conform.c, after ef_conform.h (the types). */",
        f"#define EF_MAX_FEATURE_LEVEL {MAX_FEATURE_LEVEL}",
    ]
    entries = []
    for rule in _RULES:
        form_names = []
        for k, form in enumerate(rule.forms):
            base = f"ef_r_{rule.name.lower()}_{k}"
            args = []
            for arg in form.args:
                masks = ", ".join(str(_type_mask(arg, lv)) for lv in range(MAX_FEATURE_LEVEL + 1))
                ranks = sum(1 << r for r in arg.ranks)
                same = -1 if arg.same_type_as is None or form.variadic else arg.same_type_as
                args.append(
                    f"  {{{_c_str(arg.name)}, {{{masks}}}, {ranks}u, {same}, {int(arg.param)}}},"
                )
            out.append(f"static const ef_rule_arg {base}_args[] = {{")
            out.extend(args)
            out.append("};")
            counts = ", ".join(f"{{{c}, {s}}}" for c, s in form.counts())
            out.append(f"static const uint8_t {base}_counts[][2] = {{{counts}}};")
            form_names.append(
                f"  {{{_c_str(form.name)}, {form.since}, {len(form.args)}, {int(form.variadic)}, "
                f"{base}_args, {len(form.counts())}, {base}_counts}},"
            )
        out.append(f"static const ef_rule_form ef_r_{rule.name.lower()}_forms[] = {{")
        out.extend(form_names)
        out.append("};")
        entries.append(
            f"  {{{rule.code}, {_c_str(rule.name)}, {rule.since}, {rule.neuron_level or 0}, "
            f"{rule.outputs}, {len(rule.forms)}, ef_r_{rule.name.lower()}_forms}},"
        )
    out.append("static const ef_rule_op ef_rules[] = {")
    out.extend(entries)
    out.append("};")
    out.append(f"#define EF_N_RULES {len(_RULES)}")
    out.append("#endif /* EF_RULES_H_ */")
    return "\n".join(out) + "\n"
