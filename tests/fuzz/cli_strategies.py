"""Hypothesis strategies for whole ``fpcost`` command lines (argv lists), one per command.

Each option draws either a value it accepts (so that cases reach deep into the commands) or
an adversarial one: huge and unrepresentable integers, non-finite and subnormal floats,
negative numbers, empty and whitespace strings, unicode digits, very long strings, and
paths to the bad files of ``scratch`` (wrong-typed config.json, broken TOML profiles,
inconsistent results files, NaN images, device nodes, symlinks, directories).

Paths are relative: cases run in the scratch directory. Outputs go only to paths inside it
(``OUTPUT_PATHS``), never to the machine's own ``/dev`` nodes: the cases run as root, and a
command that replaces its output atomically would replace ``/dev/null`` itself.
Model-level strategies (``tests/strategies.py``) give the valid preset names.
"""

from __future__ import annotations

from hypothesis import strategies as st

from fpcost.cli.prune import METHOD_NAMES
from fpcost.costmodel.pipeline import ALL_STAGES
from fpcost.hardware_profiles import list_profiles
from tests.strategies import preset_names

from . import scratch

# --- adversarial values ------------------------------------------------------------------------

HUGE_INTS = ("1e15", str(10**15), str(2**31), str(2**53 + 1), str(2**63 - 1), str(2**63),
             str(2**64), "1e153", "2e151", "1e200", "1e298", "1" + "0" * 4300)
BAD_INTS = ("-1", "-5", "0", "-0", "1.5", "nan", "inf", "-inf", "1e-320", "", " ", " 5 ", "²",
            "٣", "0x10", "1_000", "abc", "5" * 5000)
BAD_FLOATS = ("0", "-0", "-0.0", "1e-320", "nan", "-nan", "inf", "-inf", "1e200", "1.0000001",
              "-1", "", " ", "½", "0x1p-2", "1e308", "1e309")
BAD_TEXTS = ("", " ", "\t", "\n", "x" * 10_000, "é", "ß\x00", "-", "--", "--help", "a,b",
             ",,", "-3,-2,", "0:1:0", "1:0:-1", "0:1:1e-9", "0.1:1:1e-7", "1:1e9", "0:1e15:1",
             "1:2**63:1")
# /dev/full as an input (endless zeros) is in the regression tests, once per input option:
# each read runs into the memory cap, seconds per case, too slow to draw again and again.
BAD_INPUT_PATHS = ("no-such-file.json", "adir", "adir/", "special/dangling.json", "/proc/x",
                   "special/link.json", "special/null")
# Output paths inside the scratch directory: a new file, a symlink (its target must be
# written), a dangling symlink, device nodes (written through, never replaced), a
# directory, a missing directory, unwritable /proc.
OUTPUT_PATHS = ("out/a.json", "out/a.csv", "out/a.png", "out/a.toml", "out/a", "special/link.json",
                "special/link.csv", "special/link.png", "special/link.toml",
                "special/dangling.json", "special/null", "special/full", "adir",
                "no-such-dir/x.json", "/proc/x", "/proc/x.toml", "")
ADVERSARIAL = st.sampled_from(HUGE_INTS + BAD_INTS + BAD_FLOATS + BAD_TEXTS + BAD_INPUT_PATHS)

PROFILE_NAMES = tuple(list_profiles())
QUANTS = ("w16a16kv16", "w4a16kv16", "w8a8kv8", "w4a4kv4", "w4a8kv4", "w16a16kv4", "w32a32kv32",
          "w2a16kv16", "w16a16", "W4A16KV16", "w4a16kv16x")
FORMATS = ("json", "json", "csv", "table")


def ints(lo: int, hi: int):
    return st.integers(lo, hi).map(str)


def ratios():
    return st.floats(1e-4, 1.0, allow_nan=False).map(repr)


def int_lists(lo: int, hi: int, max_size: int = 8):
    return st.lists(st.integers(lo, hi), min_size=1, max_size=max_size).map(
        lambda xs: ",".join(map(str, xs)))


def ranges(lo: float, hi: float):
    """``START:STOP:STEP`` with a handful of points, or a short list."""
    return st.one_of(
        st.tuples(st.integers(1, 20), st.integers(1, 20)).map(
            lambda ab: f"{lo + (hi - lo) * min(ab) / 20:g}:{hi:g}:{(hi - lo) / max(ab):g}"),
        st.lists(st.floats(lo, hi, allow_nan=False), min_size=1, max_size=4).map(
            lambda xs: ",".join(f"{x:g}" for x in xs)))


def sometimes_adversarial(valid, bad=ADVERSARIAL):
    """``valid`` two times in three, else ``bad``."""
    return st.integers(0, 2).flatmap(lambda i: bad if i == 0 else valid)


def inputs(valid_names: tuple[str, ...]):
    return st.sampled_from(valid_names + BAD_INPUT_PATHS)


CONFIG = inputs(scratch.CONFIG_FILES)
PROFILE = st.sampled_from(PROFILE_NAMES + scratch.PROFILE_FILES + BAD_INPUT_PATHS + ("tpu", ""))
RESULTS = inputs(scratch.RESULTS_FILES)
OUTPUT = st.sampled_from(OUTPUT_PATHS)


def command(name: tuple[str, ...], options: dict, flags: tuple[str, ...] = (), max_options: int = 6,
            positional=None):
    """``[*name, *positional, --opt value, ..., *flags, --format F]``: up to ``max_options``
    distinct options, each value from ``sometimes_adversarial`` of its valid strategy."""
    @st.composite
    def build(draw):
        keys = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=max_options))
        argv = list(name)
        if positional is not None:
            argv += draw(positional)
        for key in keys:
            value = draw(sometimes_adversarial(options[key]))
            argv += [key, value]
        argv += draw(st.lists(st.sampled_from(flags), unique=True)) if flags else []
        return argv
    return build()


# --- cost-model commands -------------------------------------------------------------------------

MODEL_OPTIONS = {
    "--model": st.one_of(preset_names, st.sampled_from(("llava-1.5-13b", "video-llava-7b", "gpt5",
                                                         "LLAVA-1.5-7B"))),
    "--config": CONFIG,
    "--hardware": PROFILE,
    "--bits": st.sampled_from(("4", "8", "16", "32", "3")),
    "--quant": st.sampled_from(QUANTS),
    "--accounting": st.sampled_from(("fpcost", "llm-viewer")),
}
ESTIMATE_OPTIONS = {
    **MODEL_OPTIONS,
    "--tokens": ints(1, 10**6),
    "--visual-tokens": ints(0, 5000),
    "--text-tokens": ints(0, 2000),
    "--keep-ratio": ratios(),
    "--frame-tokens": int_lists(0, 300),
    "--image-size": st.tuples(st.integers(1, 4000), st.integers(1, 4000)).map(lambda s: f"{s[0]}x{s[1]}"),
    "--output-tokens": ints(0, 2000),
    "--tokens-from": RESULTS,
    "--batch": ints(1, 512),
    "--vision-layers": st.sampled_from(("all", "feature")),
    "--vision-quant": st.sampled_from(QUANTS),
    "--selection-layers": st.sampled_from(("-3,-2", "0,1", "-1", "23", "-24,-1", "0", "24")),
    "--stage": st.sampled_from(ALL_STAGES + ("all",)),
    "--format": st.sampled_from(FORMATS),
    "--tensor-parallel": ints(0, 16),
    "--pipeline-parallel": ints(0, 100),
    "--frames": ints(0, 64),
    "--min-pixels": ints(0, 10**7),
    "--max-pixels": ints(0, 10**8),
}
estimate_argv = command(("estimate",), ESTIMATE_OPTIONS, ("--breakdown", "--flash-attention"))

TRACE = inputs(scratch.TRACE_FILES)
SECONDS = st.one_of(st.floats(1e-4, 100).map(str), st.sampled_from(("0", "-1", "nan", "inf",
                                                                    "1e400", "0.0")))
SERVE_OPTIONS = {
    **MODEL_OPTIONS,
    "--rate": st.one_of(st.floats(0.01, 200).map(str), st.sampled_from(("0", "-3", "nan", "inf",
                                                                         "1e300"))),
    "--num-requests": ints(0, 400),
    "--seed": ints(0, 2**32),
    "--output-tokens": ints(0, 300),
    "--text-tokens": ints(0, 2000),
    "--keep-ratio": ratios(),
    "--image-size": st.tuples(st.integers(1, 4000), st.integers(1, 4000)).map(lambda s: f"{s[0]}x{s[1]}"),
    "--trace": TRACE,
    "--tokens-from": RESULTS,
    "--slo-ttft": SECONDS,
    "--slo-tpot": SECONDS,
    "--max-num-seqs": ints(0, 1024),
    "--max-num-batched-tokens": ints(0, 100000),
    "--tensor-parallel": ints(0, 16),
    "--pipeline-parallel": ints(0, 100),
    "--method": st.sampled_from(("freepruner", "random", "uniform", "cls", "prumerge+", "nope")),
    "--format": st.sampled_from(FORMATS),
    "--output": OUTPUT,
}
# a workload source is required (--rate, --trace or --max-rate); a case without one gets a rate
serve_argv = command(("serve",), SERVE_OPTIONS, ("--chunked-prefill", "--max-rate")).map(
    lambda argv: argv if {"--rate", "--trace", "--max-rate"} & set(argv) else [*argv, "--rate", "2"])

SWEEP_OPTIONS = {
    "--model": st.one_of(preset_names, st.sampled_from(scratch.CONFIG_FILES[:6])),
    "--config": CONFIG,
    "--hardware": PROFILE,
    "--bits": st.sampled_from(("4", "8", "16")),
    "--quant": st.sampled_from(QUANTS),
    "--keep-ratios": ranges(0.05, 1.0),
    "--visual-tokens": st.one_of(int_lists(0, 3000, 4), st.just("64:576:64")),
    "--text-tokens": ints(0, 2000),
    "--batch": st.one_of(int_lists(1, 256, 3), st.just("1:64:8")),
    "--accounting": st.sampled_from(("fpcost", "llm-viewer")),
    "--stage": st.sampled_from(ALL_STAGES + ("all",)),
    "--format": st.sampled_from(FORMATS),
    "--output": OUTPUT,
    "--tensor-parallel": st.one_of(int_lists(0, 16, 3), st.just("1:8:1")),
    "--pipeline-parallel": int_lists(0, 100, 2),
    "--frames": ints(0, 64),
}
sweep_argv = command(("sweep",), SWEEP_OPTIONS, ("--flash-attention",))

table3_argv = command(("table3",), {"--hardware": PROFILE,
                                    "--accounting": st.sampled_from(("fpcost", "llm-viewer")),
                                    "--format": st.sampled_from(FORMATS)})
hardware_argv = command(
    ("hardware",), {"--format": st.sampled_from(FORMATS)},
    positional=st.one_of(st.just([]), PROFILE.map(lambda p: [p]), ADVERSARIAL.map(lambda p: [p])))

PLOT_COMMON = {
    **MODEL_OPTIONS,
    "--text-tokens": ints(0, 2000),
    "--batch": ints(1, 64),
    "--output": st.sampled_from(("out/p.png", "out/p.PNG", "special/link.png", "special/null",
                                 "special/full", "out/p.jpg", "adir", "/proc/x.png", "")),
}
ROOFLINE_OPTIONS = {**PLOT_COMMON, "--keep-ratio": ratios(), "--visual-tokens": ints(0, 3000),
                    "--stage": st.sampled_from(("prefill", "decode", "all"))}
PLOT_SWEEP_OPTIONS = {**PLOT_COMMON, "--keep-ratios": ranges(0.05, 1.0),
                      "--visual-tokens": st.one_of(int_lists(0, 3000, 4), st.just("64:576:64"))}
plot_argv = st.one_of(
    command(("plot", "roofline"), ROOFLINE_OPTIONS, ("--flash-attention",), max_options=4),
    command(("plot", "sweep"), PLOT_SWEEP_OPTIONS, ("--flash-attention",), max_options=4),
).map(lambda argv: argv if "--output" in argv else [*argv, "--output", "out/p.png"])

# --- prune -------------------------------------------------------------------------------------------

PRUNE_OPTIONS = {
    "--method": st.sampled_from(METHOD_NAMES + ("magic",)),
    "--ratio": ratios(),
    "--budget": ints(1, 64),
    "--seed": ints(0, 2**32),
    "--k": ints(1, 64),
    "--start-layer": ints(-4, 4),
    "--end-layer": ints(-4, 5),
    "--complementary-layer": ints(-4, 4),
    "--head-reduce": st.sampled_from(("mean", "max")),
    "--image-size": ints(28, 112),
    "--overlay": st.sampled_from(("out/overlays", "special/null", "special/link.json", "/proc/x",
                                  "images/rgb.png")),
    "--output": OUTPUT,
    "--format": st.sampled_from(FORMATS),
}
PRUNE_IMAGES = st.lists(st.sampled_from(scratch.IMAGE_FILES * 3 + scratch.BAD_IMAGE_FILES
                                        + ("missing.png", "adir", "special/null")),
                        min_size=1, max_size=3)
prune_argv = command(
    ("prune",), PRUNE_OPTIONS, ("--include-cls", "--exclude-cls"), max_options=4,
    positional=PRUNE_IMAGES.flatmap(lambda images: st.sampled_from(
        (["--model", "model"], ["--model", "model"], ["--model", "model"], ["--model", "adir"],
         ["--model", "no-such-model"], ["--model", ""])).map(lambda m: [*images, *m])))

# --- calibrate / validate: argument checks only ---------------------------------------------------
# (argv, must_refuse): one option at most gets a value that must be refused before any
# measurement; the others are ordinary. A command line with must_refuse False may reach the
# measurement (the harness stops it there) or end with exit 0 / 2.

MUST_REFUSE_COUNTS = ("-1", "1e200", str(10**200), str(2**63), str(2**64), "1" + "0" * 4300, "²",
                      "", "1.5", "nan", str(10**12))  # '٣' is int('٣') = 3: not refused
MUST_REFUSE_THREADS = MUST_REFUSE_COUNTS + ("100000", "0")
MUST_REFUSE_OUTPUTS = ("/proc/x.toml", "adir", "no-such-dir/x.toml", "")

CALIBRATE_VALID = {
    "--device": st.just("cpu"),
    "--dtype": st.sampled_from(("float32", "bfloat16", "int8")),
    "--name": st.sampled_from(("mine", "x y", 'a"b', "é", "a\nb", "[x]", "x" * 300)),
    "--threads": ints(1, 2),
    "--clock": st.sampled_from(("wall", "thread")),
    "--warmup": ints(0, 3),
    "--repeats": ints(1, 5),
    "--statistic": st.sampled_from(("median", "min")),
    "--format": st.sampled_from(FORMATS),
    "--nominal-output": st.sampled_from(("out/nominal.toml", "special/link.toml", "special/null")),
}
CALIBRATE_BAD = {
    "--threads": MUST_REFUSE_THREADS,
    "--warmup": MUST_REFUSE_COUNTS[:-1],  # 10**12 warm-up calls: a bound may or may not cover it
    "--repeats": MUST_REFUSE_COUNTS[:-1] + ("0",),
    "--output": MUST_REFUSE_OUTPUTS,
    "--device": ("gpu", "", "CPU"),
    "--dtype": ("int4", "", "fp16"),
}

VALIDATE_VALID = {
    "--model": st.sampled_from(("scaled", "llava-1.5-7b")),
    "--config": st.sampled_from(("configs/tiny-llama.json", "configs/llama.json")),
    "--dtype": st.sampled_from(("float32", "bfloat16")),
    "--tokens": st.one_of(int_lists(1, 2048, 4), st.just("64, 128 256")),
    "--tokens-from": st.just("results/ok-576.json"),
    "--text-tokens": ints(0, 100),
    "--threads": ints(1, 2),
    "--warmup": ints(0, 3),
    "--repeats": ints(1, 5),
    "--hooked-repeats": ints(1, 3),
    "--folds": ints(2, 4),
    "--statistic": st.sampled_from(("median", "min")),
    "--output": st.sampled_from(("out/report.json", "special/link.json", "special/null")),
    "--format": st.sampled_from(FORMATS),
}
VALIDATE_BAD = {
    "--threads": MUST_REFUSE_THREADS,
    "--warmup": MUST_REFUSE_COUNTS[:-1],
    "--repeats": MUST_REFUSE_COUNTS[:-1] + ("0",),
    "--hooked-repeats": MUST_REFUSE_COUNTS[:-1] + ("0",),
    "--folds": MUST_REFUSE_COUNTS[:-1] + ("1",),
    "--tokens": ("0", "-5", "", ",", "²", "1e3", "64," + "1" + "0" * 4300, str(2**63), "10" + "0" * 14),
    "--tokens-from": ("results/kept-gt-tokens.json", "results/tokens-negative.json",
                      "results/deep.json", "results/kept-huge.json", "special/null", "adir"),
    "--config": ("configs/deep.json", "configs/model-type-list.json", "configs/hidden-size-huge.json",
                 "special/null"),
    "--profile": ("profiles/bandwidth-1e-320.toml", "profiles/deep.toml", "tpu", "special/null"),
    "--output": ("/proc/x", "adir", "no-such-dir/x.json"),
    "--text-tokens": ("-1", str(2**63), "1" + "0" * 4300),
}


def _checked(name: tuple[str, ...], valid: dict, bad: dict, required: tuple[str, ...] = ()):
    @st.composite
    def build(draw):
        keys = draw(st.lists(st.sampled_from(sorted(valid)), unique=True, max_size=5))
        chosen = {key: draw(valid[key]) for key in keys}
        must_refuse = draw(st.booleans())
        if must_refuse:
            key = draw(st.sampled_from(sorted(bad)))
            chosen[key] = draw(st.sampled_from(bad[key]))
        argv = list(name) + list(required)
        for key, value in chosen.items():
            argv += [key, value]
        return argv, must_refuse
    return build()


CPU_PROFILE = scratch.CPU_PROFILE  # a CPU profile of this machine, for validate
calibrate_argv = _checked(("calibrate",), CALIBRATE_VALID, CALIBRATE_BAD).map(
    lambda case: ((case[0] if "--output" in case[0] else [*case[0], "--output", "out/cal.toml"]),
                  case[1]))
validate_argv = _checked(("validate",), VALIDATE_VALID, VALIDATE_BAD).map(
    lambda case: ((case[0] if "--profile" in case[0] else [*case[0], "--profile", CPU_PROFILE]),
                  case[1]))
