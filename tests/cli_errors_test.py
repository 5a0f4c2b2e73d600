"""Bad inputs everywhere: every binary and the serving path refuse them with one clear line.

Each row of `CASES` is a binary (its module) and a bad command line: wrong types,
shapes and ranges, missing files, wrong file formats, unknown flag values,
incompatible flag combinations, a work dir that is not a training run, a
checkpoint of another model. Each must exit with status 2 (3 for unrestorable
checkpoints) and print exactly one line, `error: ...`, naming the argument and
the bad value, with no traceback, no output on stdout, and no file written or
changed anywhere under the test's directories.

TensorFlow takes seconds to import, so one driver process (`DRIVER`) imports it
once and runs every row through the binary's console-script entry point
`run()` -- absl's `app.run`, flag parsing and all -- catching its `SystemExit`
and capturing file descriptors 1 and 2. The rows in `FRESH` also run as fresh
`python -m` processes, to show that the driver's results are the real ones.
Stderr lines that TensorFlow's C++ runtime logs while it starts
(`TF_STARTUP`) are not the binaries' and are ignored.

Two tiny trained work dirs of the quick start preset, of different widths, are
shared by the rows that need one. `SERVING` requests go over HTTP to the REST
adapter serving an (untrained) iterative model's export; each must get HTTP 400
with a one-line `error` naming the input and its value, and change no file.
"""

import collections
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from export import exporter
from export import rest_adapter
from export import versions
from tests import testing
from tf_lti.config import presets
from tf_lti.training import builders

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lines TensorFlow's C++ runtime writes to stderr while it starts (absl log lines and their
# header); TF_CPP_MIN_LOG_LEVEL does not silence them in TF 2.21.
TF_STARTUP = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) |"
                        r"[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] )")
# What `training.workdir.restore_checkpoint` prints for each checkpoint it cannot restore.
CHECKPOINT_WARNING = re.compile(r"^warning: checkpoint \S+ cannot be restored \(")


def _snapshot(roots):
  """Every path under `roots`: `[size, mtime]` for a file, `None` for a directory."""
  tree = {}
  for root in roots:
    for directory, subdirectories, files in os.walk(root):
      tree.update({os.path.join(directory, name): None for name in subdirectories})
      for name in files:
        stat = os.lstat(os.path.join(directory, name))
        tree[os.path.join(directory, name)] = [stat.st_size, stat.st_mtime_ns]
  return tree


def _changes(before, after):
  return sorted(path for path in set(before) | set(after)
                if before.get(path, "absent") != after.get(path, "absent"))


# Reads cases as JSON lines on stdin and runs each in this process; writes one JSON line of
# results per case to argv[1]. Rows of one binary come together: before the next binary is
# imported, the flags of the previous one are deleted.
DRIVER = inspect.getsource(_snapshot) + inspect.getsource(_changes) + r'''
import gc
import importlib
import json
import logging
import os
import sys
import zipfile
import tempfile
import traceback

from absl import flags


def forget(name):
  """Deletes binary `name`'s module and flags, so that the next binary can define its own."""
  owned = flags.FLAGS.flags_by_module_dict()
  for owner in (name, "tf_lti.cli.flags"):
    for flag in list(owned.get(owner, [])):
      if flag.name in flags.FLAGS:
        delattr(flags.FLAGS, flag.name)
  sys.modules.pop(name, None)


def run(module, argv):
  """`module.run()` with `argv`, as its console script runs it: (status, stdout, stderr)."""
  outputs = [tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")]
  saved = [os.dup(1), os.dup(2)]
  for fd, output in zip((1, 2), outputs):
    os.dup2(output.fileno(), fd)
  sys.argv = [module.__name__, *argv]
  flags.FLAGS.unparse_flags()
  logging.getLogger("tensorflow").setLevel(logging.NOTSET)  # As in a new process.
  gc.freeze()  # The collection below then looks at this case's objects only (fast).
  try:
    module.run()
    status = 0
  except SystemExit as exit_:
    status = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
  except BaseException:  # pylint: disable=broad-except  (as Python prints an uncaught one)
    traceback.print_exc()
    status = 1
  finally:
    gc.collect()  # What the process would free at exit, and log, belongs to this case.
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in zip((1, 2), saved):
      os.dup2(copy, fd)
      os.close(copy)
  texts = []
  for output in outputs:
    output.seek(0)
    texts.append(output.read())
  return status, *texts


current = None
with open(sys.argv[1], "w") as results:
  for line in sys.stdin:
    case = json.loads(line)
    if case["binary"] != getattr(current, "__name__", None):
      if current is not None:
        forget(current.__name__)
      current = importlib.import_module(case["binary"])
    os.chdir(case["cwd"])
    before = _snapshot(case["watch"])
    status, stdout, stderr = run(current, case["argv"])
    changed = _changes(before, _snapshot(case["watch"]))
    results.write(json.dumps(dict(id=case["id"], status=status, stdout=stdout, stderr=stderr,
                                  changed=changed)) + "\n")
    results.flush()
'''

# `expected`: a fragment of the error line (or a tuple of them) naming the argument and the
# bad value; `{name}` placeholders as in `argv`.
Case = collections.namedtuple("Case", "binary argv expected status", defaults=(2,))

TRAIN, EVALUATE, ANALYZE, IMPUTE = ("trainers.train", "trainers.evaluate", "trainers.analyze",
                                    "trainers.impute")
BENCHMARK, SWEEP, ORACLE = "trainers.benchmark", "trainers.sweep", "trainers.oracle"
EXPORT, LATENCY = "export.export", "export.latency_benchmark"
# A row that wrongly passes trains one step only.
QUICK = ["--preset=quickstart", "--max_steps=1", "--workdir={cases}/new_run"]
ERROR_INPUTS = ["--procedure=iterative", "--iterative_inputs=data,params,error"]
EXPORT_TO = "--export_base={cases}/exports"

# {cases}: a scratch directory with bad files (see `_bad_files`); {run}: the trained work
# dir; {other}: one of a different model (wider networks); {hybrid}: {run}'s config and
# model spec with {other}'s checkpoints; {config_only}: {run}'s config alone.
CASES = {
    # Flags absl cannot parse: wrong types, unknown flags and values, missing, positional.
    "train-epochs-not-int": Case(TRAIN, [*QUICK, "--epochs=abc"], "flag --epochs=abc: invalid"),
    "train-learning-rate-not-float": Case(TRAIN, [*QUICK, "--learning_rate=fast"],
                                          "flag --learning_rate=fast: could not convert"),
    "train-bool-not-bool": Case(TRAIN, [*QUICK, "--deterministic=maybe"],
                                "flag --deterministic=maybe: ('Non-boolean argument"),
    "train-unknown-flag": Case(TRAIN, [*QUICK, "--epoch=3"], "Unknown command line flag 'epoch'"),
    "train-unknown-strategy": Case(TRAIN, [*QUICK, "--strategy=gpus"],
                                   "flag --strategy=gpus: value should be one of"),
    "train-negative-devices": Case(TRAIN, [*QUICK, "--num_cpu_devices=-1"],
                                   "flag --num_cpu_devices=-1: -1 is not a non-negative integer"),
    "train-no-workdir": Case(TRAIN, ["--preset=quickstart"],
                             "flag --workdir=None: Flag --workdir must have a value"),
    "train-positional": Case(TRAIN, [*QUICK, "runs/x"],
                             "unexpected positional arguments ['runs/x']"),
    # Config values and combinations (`config.validate`).
    "train-unknown-preset": Case(TRAIN, ["--preset=mnist", "--workdir={cases}/new_run"],
                                 ("`preset` must be one of [", "; got 'mnist'.")),
    "train-negative-iterations": Case(TRAIN, [*QUICK, "--num_iterations=-3"],
                                      "`num_iterations` must be > 0; got -3."),
    "train-zero-batch": Case(TRAIN, [*QUICK, "--batch_size=0"], "`batch_size` must be > 0; got 0."),
    "train-list-not-ints": Case(TRAIN, [*QUICK, "--latent_sizes=8,x"],
                                "`latent_sizes` must be a comma-separated list of integers; "
                                "got '8,x'."),
    "train-wrong-list-length": Case(TRAIN, [*QUICK, "--latent_sizes=8,4", "--kl=sample"],
                                    "`hidden_units` needs one positive width per latent level "
                                    "(2); got [128]."),
    "train-unknown-posterior": Case(TRAIN, [*QUICK, "--posterior=gauss"],
                                    "`posterior` must be one of ('diagonal', 'rank_one', 'point', "
                                    "'planar', 'iaf', 'hierarchical', 'categorical'); got 'gauss'."),
    "train-unknown-iterative-input": Case(TRAIN, [*QUICK, "--iterative_inputs=data,errors"],
                                          "`iterative_inputs` must be a non-empty subset of "
                                          "('data', 'params', 'gradient', 'error'); got "
                                          "['data', 'errors']."),
    "train-error-encoding-iw-bound": Case(TRAIN, [*QUICK, *ERROR_INPUTS, "--bound=iw",
                                                  "--num_samples=5"],
                                          "`iterative_inputs` with error encoding needs "
                                          "`bound=elbo`; got 'iw'."),
    "train-error-encoding-flow": Case(TRAIN, [*QUICK, *ERROR_INPUTS, "--posterior=planar",
                                              "--kl=sample"],
                                      "`posterior=planar` works with `procedure=amortized` or "
                                      "`semi_amortized`"),
    "train-error-encoding-categorical": Case(
        TRAIN, [*QUICK, *ERROR_INPUTS, "--posterior=categorical", "--latent_sizes=10",
                "--num_categories=5", "--estimator=gumbel_softmax"],
        "`posterior=categorical` has no reparameterized gradient for SVI steps: `procedure` "
        "must be amortized and `eval_svi_steps` <= 0; got procedure='iterative'"),
    "train-error-encoding-pixelcnn": Case(TRAIN, [*QUICK, *ERROR_INPUTS, "--decoder=pixelcnn"],
                                          "`decoder=pixelcnn` has no prediction errors: drop "
                                          "`error` from `iterative_inputs`."),
    "train-error-encoding-text": Case(TRAIN, [*QUICK, *ERROR_INPUTS, "--source=ptb:{cases}",
                                              "--decoder=lstm", "--encoder=lstm",
                                              "--binarization=none"],
                                      "`procedure=iterative` encodes fixed-size data"),
    "train-error-encoding-estimator": Case(TRAIN, [*QUICK, *ERROR_INPUTS, "--kl=sample",
                                                   "--estimator=stl"],
                                           "`estimator=stl` trains a standard encoder: "
                                           "`procedure` must be amortized; got 'iterative'."),
    "train-analytic-kl-two-levels": Case(TRAIN, [*QUICK, "--latent_sizes=8,4",
                                                 "--hidden_units=8,8"],
                                         "`kl=analytic` needs a one-level model; `latent_sizes` "
                                         "[8, 4] has 2 levels"),
    "train-preset-and-config": Case(TRAIN, [*QUICK,
                                            "--config={cases}/corrupt_config/config.json"],
                                    "Give `preset` or `config`, not both"),
    "train-missing-config": Case(TRAIN, ["--config={cases}/missing.json", "--max_steps=1",
                                         "--workdir={cases}/new_run"],
                                 "`config` file '{cases}/missing.json' does not exist."),
    "train-corrupt-config": Case(TRAIN, ["--config={cases}/corrupt_config/config.json",
                                         "--workdir={cases}/new_run"],
                                 "{cases}/corrupt_config/config.json is not a valid config: "
                                 "Expecting property name"),
    "train-negative-seed": Case(TRAIN, [*QUICK, "--seed=-1"],
                                "`seed` must be in [0, 2147483647]; got -1."),
    "train-huge-seed": Case(TRAIN, [*QUICK, "--seed=9999999999"],
                            "`seed` must be in [0, 2147483647]; got 9999999999."),
    "train-negative-data-seed": Case(TRAIN, [*QUICK, "--data_seed=-1"],
                                     "`data_seed` must be in [0, 2147483647]; got -1."),
    # Data: missing files and wrong formats; a batch larger than the data.
    "train-missing-data": Case(TRAIN, [*QUICK, "--source={cases}/missing.npz"],
                               "{cases}/missing.npz: no such file"),
    "train-text-file-as-data": Case(TRAIN, [*QUICK, "--source={cases}/notes.txt"],
                                    "unknown data source '{cases}/notes.txt'"),
    "train-text-file-named-npz": Case(TRAIN, [*QUICK, "--source={cases}/text.npz"],
                                      "{cases}/text.npz: not an .npz (zip) archive"),
    "train-truncated-npz": Case(TRAIN, [*QUICK, "--source={cases}/truncated.npz"],
                                "{cases}/truncated.npz: cannot read as .npz"),
    "train-npz-member-with-bad-crc": Case(TRAIN, [*QUICK, "--source={cases}/bad_crc.npz"],
                                          "{cases}/bad_crc.npz, key 'x_train': corrupt archive "
                                          "member: Bad CRC-32"),
    "train-npz-header-larger-than-file": Case(TRAIN, [*QUICK, "--source={cases}/huge.npz"],
                                              "{cases}/huge.npz, key 'x_train': declares a "
                                              "[1000000, 100000] float64 array (800000000000 "
                                              "bytes) but holds 27000 bytes"),
    # Beyond any host's memory: 1M columns x 100,000 units x 2 layers x 4 float32 copies.
    "train-too-many-columns": Case(TRAIN, [*QUICK, "--source={cases}/wide.npz", "--batch_size=2",
                                           "--hidden_units=100000"],
                                   "A model of 1000000 data dimensions with these widths "
                                   "(`hidden_units` [100000]) needs about 2980.2 GiB"),
    "train-batch-larger-than-data": Case(TRAIN, [*QUICK, "--batch_size=100000"],
                                         "`batch_size` 100000 is larger than the training set"),
    # Work dirs: a file, under a file, another run's.
    "train-workdir-is-a-file": Case(TRAIN, ["--preset=quickstart", "--workdir={cases}/notes.txt"],
                                    "`workdir` '{cases}/notes.txt' cannot be a directory"),
    "train-workdir-under-a-file": Case(TRAIN, ["--preset=quickstart",
                                               "--workdir={cases}/notes.txt/run"],
                                       "`workdir` '{cases}/notes.txt/run' cannot be a directory: "
                                       "'{cases}/notes.txt' is a file."),
    "train-workdir-of-another-config": Case(TRAIN, ["--preset=quickstart", "--workdir={run}"],
                                            "`workdir` '{run}' holds a run with a different "
                                            "config"),

    "evaluate-not-a-workdir": Case(EVALUATE, ["--workdir={cases}/not_a_workdir"],
                                   "`workdir` '{cases}/not_a_workdir' is not a training work "
                                   "dir: it has no config.json."),
    "evaluate-missing-workdir": Case(EVALUATE, ["--workdir={cases}/missing"],
                                     "`workdir` '{cases}/missing' is not a training work dir"),
    "evaluate-corrupt-config": Case(EVALUATE, ["--workdir={cases}/corrupt_config"],
                                    "{cases}/corrupt_config/config.json is not a valid config: "
                                    "Expecting property name"),
    "evaluate-wrong-typed-config": Case(EVALUATE, ["--workdir={cases}/wrong_typed_config"],
                                        "{cases}/wrong_typed_config/config.json is not a valid "
                                        "config: config field `seed` must be an integer; got "
                                        "'zero'."),
    "evaluate-section-not-an-object": Case(EVALUATE, ["--workdir={cases}/list_config"],
                                           "{cases}/list_config/config.json is not a valid "
                                           "config: config section `train` must be a JSON object "
                                           "of fields; got [1, 2]."),
    "evaluate-no-checkpoint": Case(EVALUATE, ["--workdir={config_only}"],
                                   "`workdir` '{config_only}' has no checkpoint"),
    "evaluate-checkpoint-of-other-model": Case(EVALUATE, ["--workdir={hybrid}"],
                                               "no checkpoint in '{hybrid}/checkpoints' can be "
                                               "restored: ckpt-3 (Received incompatible tensor",
                                               status=3),
    "evaluate-unknown-split": Case(EVALUATE, ["--workdir={run}", "--split=train"],
                                   "flag --split=train: value should be one of <test|valid>"),
    "evaluate-negative-samples": Case(EVALUATE, ["--workdir={run}",
                                                 "--num_importance_samples=-5"],
                                      "`num_importance_samples` must be in [0, 10000000]; got "
                                      "-5."),
    "evaluate-absurd-samples": Case(EVALUATE, ["--workdir={run}",
                                               "--num_importance_samples=1000000000000"],
                                    "`num_importance_samples` must be in [0, 10000000]; got "
                                    "1000000000000."),
    "evaluate-zero-batch": Case(EVALUATE, ["--workdir={run}", "--eval_batch_size=0"],
                                "`eval_batch_size` must be >= 1; got 0."),
    "evaluate-zero-chunk": Case(EVALUATE, ["--workdir={run}", "--eval_chunk_size=0"],
                                "`eval_chunk_size` must be >= 1; got 0."),
    "evaluate-negative-svi-steps": Case(EVALUATE, ["--workdir={run}", "--eval_svi_steps=-2"],
                                        "`eval_svi_steps` must be >= -1 (-1: as trained); got "
                                        "-2."),
    "evaluate-gap-zero-steps": Case(EVALUATE, ["--workdir={run}", "--report=gap",
                                               "--gap_svi_steps=0"],
                                    "`gap_svi_steps` must be >= 1; got 0."),

    "analyze-not-a-workdir": Case(ANALYZE, ["--workdir={cases}/not_a_workdir"],
                                  "`workdir` '{cases}/not_a_workdir' is not a training work dir"),
    "analyze-zero-iterations": Case(ANALYZE, ["--workdir={run}", "--num_iterations=0"],
                                    "`num_iterations` must be >= 1; got 0."),
    "analyze-negative-example": Case(ANALYZE, ["--workdir={run}", "--example_index=-1"],
                                     "`example_index` must be >= 0; got -1."),
    "analyze-example-out-of-range": Case(ANALYZE, ["--workdir={run}", "--example_index=5000"],
                                         "`example_index` must be in [0, 179); got 5000."),
    "analyze-zero-grid-step": Case(ANALYZE, ["--workdir={run}", "--grid_step=0"],
                                   "`grid_step` must be in (0, 1]; got 0.0."),
    "analyze-learning-rates-not-numbers": Case(ANALYZE, ["--workdir={run}",
                                                         "--analysis=optimizers",
                                                         "--learning_rates=0.1,fast"],
                                               "`learning_rates` must be comma-separated numbers; "
                                               "got '0.1,fast'."),
    "analyze-missing-labels": Case(ANALYZE, ["--workdir={run}", "--analysis=embedding",
                                             "--labels={cases}/missing.npz"],
                                   "`labels` file '{cases}/missing.npz' does not exist."),
    "analyze-landscape-of-8d-latent": Case(ANALYZE, ["--workdir={run}"],
                                           "An ELBO landscape needs a 2-D latent space; the "
                                           "model has 8 dimensions."),

    "impute-not-a-workdir": Case(IMPUTE, ["--workdir={cases}/not_a_workdir"],
                                 "`workdir` '{cases}/not_a_workdir' is not a training work dir"),
    "impute-negative-iterations": Case(IMPUTE, ["--workdir={run}", "--num_iterations=-3"],
                                       "`num_iterations` must be >= 1; got -3."),
    "impute-fraction-above-one": Case(IMPUTE, ["--workdir={run}", "--missing_fraction=1.5"],
                                      "`missing_fraction` must be in (0, 1]; got 1.5."),
    "impute-block-larger-than-image": Case(IMPUTE, ["--workdir={run}", "--missing=block",
                                                    "--block_size=100"],
                                           "`block_size` must be in [1, 8] for images of shape "
                                           "(8, 8); got 100."),
    "impute-output-dir-is-a-file": Case(IMPUTE, ["--workdir={run}",
                                                 "--output_dir={cases}/notes.txt"],
                                        "`output_dir` '{cases}/notes.txt' cannot be a directory"),

    "benchmark-unknown-mode": Case(BENCHMARK, ["--mode=inference"],
                                   "flag --mode=inference: value should be one of"),
    "benchmark-too-few-timed-steps": Case(BENCHMARK, ["--timed_steps=1"],
                                          "`timed_steps` must be >= 3; got 1."),
    "benchmark-zero-event-size": Case(BENCHMARK, ["--event_size=0", "--xla=off"],
                                      "`event_size` must be >= 1; got 0."),
    "benchmark-negative-warmup": Case(BENCHMARK, ["--warmup_steps=-1", "--xla=off"],
                                      "`warmup_steps` must be >= 0; got -1."),
    "benchmark-sweep-not-ints": Case(BENCHMARK, ["--sweep_svi_steps=5,ten"],
                                     "`sweep_svi_steps` must be integers >= 0; got '5,ten'."),
    "benchmark-hvp-without-svi": Case(BENCHMARK, ["--mode=hvp", "--xla=off"],
                                      "`mode=hvp` needs `procedure=semi_amortized`; got "
                                      "'amortized'."),
    "benchmark-strategy-with-iw-eval": Case(BENCHMARK, ["--strategy=mirrored", "--mode=iw_eval"],
                                            "`strategy` 'mirrored' times `mode=train` only; got "
                                            "`mode` 'iw_eval'."),

    "sweep-unknown-field": Case(SWEEP, [*QUICK, "--sweep_field=samples"],
                                "`sweep_field` must be a scalar config field; got 'samples'."),
    "sweep-values-not-ints": Case(SWEEP, [*QUICK, "--sweep_values=1,two"],
                                  "`sweep_values` ['1', 'two'] do not fit `num_samples`"),
    "sweep-bad-later-value": Case(SWEEP, [*QUICK, "--sweep_values=1,0"],
                                  "`num_samples` must be > 0; got 0."),
    "sweep-unknown-procedure": Case(SWEEP, [*QUICK, "--sweep_values=1",
                                            "--sweep_procedures=amortized,svi"],
                                    "`procedure` must be one of ('amortized', 'iterative', "
                                    "'semi_amortized'); got 'svi'."),
    "sweep-workdir-is-a-file": Case(SWEEP, ["--preset=quickstart", "--workdir={cases}/notes.txt"],
                                    "`workdir` '{cases}/notes.txt' cannot be a directory"),
    "sweep-optional-int-not-int": Case(SWEEP, [*QUICK, "--sweep_field=validation_size",
                                               "--sweep_values=many"],
                                       "`sweep_values` ['many'] do not fit `validation_size`: "
                                       "invalid literal for int()"),
    "sweep-value-not-bool": Case(SWEEP, [*QUICK, "--sweep_field=batch_norm",
                                         "--sweep_values=maybe"],
                                 "`sweep_values` ['maybe'] do not fit `batch_norm`: 'maybe' is "
                                 "not a boolean"),

    "oracle-zero-train": Case(ORACLE, ["--workdir={cases}/oracle", "--num_train=0"],
                              "`num_train` must be >= 1; got 0."),
    "oracle-batch-above-train": Case(ORACLE, ["--workdir={cases}/oracle", "--num_train=10"],
                                     "`batch_size` must be <= `num_train` (10); got 50."),
    "oracle-landscape-example-out-of-range": Case(ORACLE, ["--workdir={cases}/oracle",
                                                           "--num_test=3",
                                                           "--landscape_example=5"],
                                                  "`landscape_example` must be -1 or in [0, 3) "
                                                  "(`num_test`); got 5."),
    "oracle-momentum-above-one": Case(ORACLE, ["--workdir={cases}/oracle", "--svi_momentum=1.5"],
                                      "`svi_momentum` must be in [0, 1); got 1.5."),
    "oracle-zero-step-size": Case(ORACLE, ["--workdir={cases}/oracle", "--svi_step_size=0"],
                                  "`svi_step_size` must be > 0; got 0.0."),
    "oracle-workdir-is-a-file": Case(ORACLE, ["--workdir={cases}/notes.txt"],
                                     "`workdir` '{cases}/notes.txt' cannot be a directory"),

    "export-no-export-base": Case(EXPORT, ["--workdir={run}"],
                                  "flag --export_base=None: Flag --export_base must have a value"),
    "export-not-a-workdir": Case(EXPORT, ["--workdir={cases}/not_a_workdir", EXPORT_TO],
                                 "`workdir` '{cases}/not_a_workdir' is not a training work dir"),
    "export-checkpoint-of-other-model": Case(EXPORT, ["--workdir={run}", EXPORT_TO,
                                                      "--checkpoint={other}/checkpoints/ckpt-3"],
                                             "`checkpoint` '{other}/checkpoints/ckpt-3' does not "
                                             "match the model of '{run}' (config.json)"),
    "export-workdir-of-other-model": Case(EXPORT, ["--workdir={other}", EXPORT_TO,
                                                   "--checkpoint={run}/checkpoints/ckpt-3"],
                                          "`checkpoint` '{run}/checkpoints/ckpt-3' does not "
                                          "match the model of '{other}' (config.json)"),
    "export-hybrid-workdir": Case(EXPORT, ["--workdir={hybrid}", EXPORT_TO],
                                  "no checkpoint in '{hybrid}/checkpoints' can be restored",
                                  status=3),
    "export-missing-checkpoint": Case(EXPORT, ["--workdir={run}", EXPORT_TO,
                                               "--checkpoint={run}/checkpoints/ckpt-9"],
                                      "`checkpoint` '{run}/checkpoints/ckpt-9' is not a "
                                      "checkpoint prefix"),
    "export-zero-version": Case(EXPORT, ["--workdir={run}", EXPORT_TO, "--version=0"],
                                "`version` must be an integer >= 1; got 0."),
    "export-zero-chunk": Case(EXPORT, ["--workdir={run}", EXPORT_TO, "--chunk_size=0"],
                              "`chunk_size` must be >= 1; got 0."),
    "export-base-is-a-file": Case(EXPORT, ["--workdir={run}", "--export_base={cases}/notes.txt"],
                                  "`export_base` '{cases}/notes.txt' cannot be a directory"),

    "latency-export-not-name-path": Case(LATENCY, ["--exports={cases}/exports"],
                                         "`exports` entries must be name=path; got "
                                         "'{cases}/exports'."),
    "latency-missing-export": Case(LATENCY, ["--exports=a={cases}/missing"],
                                   "`exports`: '{cases}/missing' is neither a SavedModel "
                                   "directory nor an export base"),
    "latency-zero-batch": Case(LATENCY, ["--exports=a={cases}/missing", "--batch_sizes=0"],
                               "`batch_sizes` must be integers >= 1; got [0]."),
    "latency-unknown-runtime": Case(LATENCY, ["--exports=a={cases}/missing", "--runtimes=grpc"],
                                    "`runtimes` must be a subset of ('function', 'session'); got "
                                    "['grpc']."),
}
# Also run as a fresh process: a restore that fails (TensorFlow would log at exit).
FRESH = ("export-checkpoint-of-other-model",)
RUNS = ("run", "other", "hybrid", "config_only", "truncated")
NEEDS_RUNS = re.compile(r"\{(%s)\}" % "|".join(RUNS))


def _bad_files(cases):
  """The scratch directory's bad inputs."""
  os.makedirs(os.path.join(cases, "not_a_workdir"))
  with open(os.path.join(cases, "not_a_workdir", "notes.txt"), "w") as f:
    f.write("not a run\n")
  for name in ("notes.txt", "text.npz"):
    with open(os.path.join(cases, name), "w") as f:
      f.write("a text file, not data\n")
  np.savez(os.path.join(cases, "whole.npz"), x_train=np.zeros((100, 64), np.uint8),
           x_test=np.zeros((20, 64), np.uint8))
  with open(os.path.join(cases, "whole.npz"), "rb") as f:
    data = f.read()
  with open(os.path.join(cases, "truncated.npz"), "wb") as f:
    f.write(data[:len(data) // 2])
  data = bytearray(data)
  data[data.index(b"x_train.npy") + len("x_train.npy") + 200] ^= 0xFF  # Inside its data.
  with open(os.path.join(cases, "bad_crc.npz"), "wb") as f:
    f.write(bytes(data))
  os.remove(os.path.join(cases, "whole.npz"))
  # A million columns: small data (2 examples per split, compressed zeros), a huge model.
  wide = np.zeros((2, 1_000_000), np.uint8)
  np.savez_compressed(os.path.join(cases, "wide.npz"), x_train=wide, x_valid=wide, x_test=wide)
  header = io.BytesIO()  # A 27 KB archive declaring an 800 GB array.
  np.lib.format.write_array_header_1_0(
      header, {"descr": "<f8", "fortran_order": False, "shape": (1_000_000, 100_000)})
  with zipfile.ZipFile(os.path.join(cases, "huge.npz"), "w") as archive:
    for key in ("x_train", "x_test"):
      archive.writestr(f"{key}.npy", header.getvalue() + bytes(27_000))
  os.makedirs(os.path.join(cases, "corrupt_config"))
  with open(os.path.join(cases, "corrupt_config", "config.json"), "w") as f:
    f.write("{not json")
  for name, config in (("wrong_typed_config", {"train": {"seed": "zero"}}),
                       ("list_config", {"train": [1, 2]})):
    os.makedirs(os.path.join(cases, name))
    with open(os.path.join(cases, name, "config.json"), "w") as f:
      json.dump(config, f)


def _runs(runs):
  """The trained work dir, one of a different model, their hybrid and a config-only dir."""
  run = testing.tiny_run(os.path.join(runs, "run"), 3, hidden_units=(8,),
                         num_importance_samples=5, eval_batch_size=500)
  other = testing.tiny_run(os.path.join(runs, "other"), 3, hidden_units=(12,),
                           eval_batch_size=500)
  hybrid = os.path.join(runs, "hybrid")
  os.makedirs(hybrid)
  shutil.copy(os.path.join(run, "config.json"), hybrid)
  shutil.copy(os.path.join(run, "model_spec.json"), hybrid)
  shutil.copytree(os.path.join(other, "checkpoints"), os.path.join(hybrid, "checkpoints"))
  config_only = os.path.join(runs, "config_only")
  os.makedirs(config_only)
  shutil.copy(os.path.join(run, "config.json"), config_only)
  truncated = os.path.join(runs, "truncated")  # The run's checkpoint, its data cut in half.
  shutil.copytree(os.path.join(run, "checkpoints"), truncated)
  data = os.path.join(truncated, "ckpt-3.data-00000-of-00001")
  os.truncate(data, os.path.getsize(data) // 2)
  return dict(run=run, other=other, hybrid=hybrid, config_only=config_only, truncated=truncated)


def _fresh(case, places, watch):
  """Starts `case` as a fresh `python -m` process; `finish()` returns its results."""
  before = _snapshot(watch)
  process = subprocess.Popen([sys.executable, "-m", case.binary,
                              *[a.format(**places) for a in case.argv]], cwd=places["cases"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=REPO))

  def finish():
    stdout, stderr = process.communicate(timeout=300)
    return dict(status=process.returncode, stdout=stdout, stderr=stderr,
                changed=_changes(before, _snapshot(watch)))

  return finish


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
  """Runs every row: `{"driver": {id: result}, "fresh": {id: result}, "places": ...}`.

  The rows that need no trained work dir run while the fixture trains the
  shared ones in this process.
  """
  cases = str(tmp_path_factory.mktemp("cases"))
  runs = str(tmp_path_factory.mktemp("runs"))
  _bad_files(cases)
  places = dict(cases=cases, **{name: os.path.join(runs, name) for name in RUNS})
  results_path = os.path.join(str(tmp_path_factory.mktemp("driver")), "results.jsonl")
  driver = subprocess.Popen([sys.executable, "-c", DRIVER, results_path], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO))

  def send(ids, watch):
    for case_id in ids:
      case = CASES[case_id]
      driver.stdin.write(json.dumps(dict(id=case_id, binary=case.binary, cwd=cases, watch=watch,
                                         argv=[a.format(**places) for a in case.argv])) + "\n")
    driver.stdin.flush()

  early = [i for i, case in CASES.items() if not NEEDS_RUNS.search(" ".join(case.argv))]
  send(sorted(early, key=lambda i: CASES[i].binary), [cases])
  assert _runs(runs) == {name: places[name] for name in RUNS}
  send(sorted(set(CASES) - set(early), key=lambda i: CASES[i].binary), [cases, runs])
  driver.stdin.close()
  fresh = {i: _fresh(CASES[i], places, [cases, runs]) for i in FRESH}
  output = driver.stdout.read()
  assert driver.wait(timeout=600) == 0, output[-3000:]
  with open(results_path) as f:
    results = {result.pop("id"): result for result in map(json.loads, f)}
  return dict(driver=results, fresh={i: finish() for i, finish in fresh.items()}, places=places)


def _error_line(stderr, status):
  """The one line a failed run prints, after TF's start-up lines (and, for unrestorable
  checkpoints, `train_lib`'s warning per checkpoint it tried)."""
  lines = [line for line in stderr.splitlines() if not TF_STARTUP.match(line)]
  if status == 3:
    lines = [line for line in lines if not CHECKPOINT_WARNING.match(line)]
  assert len(lines) == 1, stderr
  assert lines[0].startswith("error: "), stderr
  return lines[0]


def _check(result, case, places):
  assert result["status"] == case.status, result["stderr"]
  assert "Traceback" not in result["stderr"], result["stderr"]
  line = _error_line(result["stderr"], case.status)
  for fragment in (case.expected,) if isinstance(case.expected, str) else case.expected:
    assert fragment.format(**places) in line
  assert result["stdout"] == ""
  assert result["changed"] == []  # No directory or file appeared or changed.


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_command_line_is_one_error_line_exit_status_and_nothing_written(cli_results,
                                                                            case_id):
  _check(cli_results["driver"][case_id], CASES[case_id], cli_results["places"])


@pytest.mark.parametrize("case_id", FRESH)
def test_fresh_processes_fail_as_in_the_driver(cli_results, case_id):
  _check(cli_results["fresh"][case_id], CASES[case_id], cli_results["places"])
  driver, fresh = cli_results["driver"][case_id], cli_results["fresh"][case_id]
  assert _error_line(fresh["stderr"], fresh["status"]) == _error_line(driver["stderr"],
                                                                      driver["status"])


def test_every_binary_has_rows():
  binaries = {"trainers.train", "trainers.evaluate", "trainers.analyze", "trainers.impute",
              "trainers.benchmark", "trainers.sweep", "trainers.oracle", "export.export",
              "export.latency_benchmark"}
  assert {case.binary for case in CASES.values()} == binaries


EVENT_SIZE, LATENT_SIZE = 64, 8  # The quick start's 8 x 8 digits and its latent size.
X = [[0.0] * EVENT_SIZE] * 2


def _encode(x=X, num_iterations=2):
  return {"signature_name": "encode", "inputs": {"x": x, "num_iterations": num_iterations}}


# Request bodies to the iterative export's REST API and a fragment of the error each gets.
SERVING = {
    "encode-x-too-narrow": (_encode(x=[[0.0] * 10] * 2),
                            "`x` must have shape [B, 64]; got shape [2, 10]"),
    "encode-x-not-a-batch": (_encode(x=X[0]), "`x` must have shape [B, 64]; got shape [64]"),
    "encode-x-strings": (_encode(x=[["0.5"] * EVENT_SIZE]),
                         ("Input `x`: JSON value [['0.5', ", "is not of expected type float32.")),
    "encode-x-ragged": (_encode(x=[[0.0] * EVENT_SIZE, [0.0]]),
                        "Input `x`: setting an array element with a sequence."),
    "encode-x-beyond-float32": (_encode(x=[[1e300] * EVENT_SIZE]),
                                "Input `x`: JSON value 1e+300 is not a finite float32."),
    "encode-x-outside-bernoulli": (_encode(x=[[-5.0] * EVENT_SIZE]),
                                   "`x` values must be in [0, 1]; got -5"),
    "encode-negative-iterations": (_encode(num_iterations=-1),
                                   "`num_iterations` must be in [0, 1000]; got -1"),
    "encode-too-many-iterations": (_encode(num_iterations=5000),
                                   "`num_iterations` must be in [0, 1000]; got 5000"),
    "encode-fractional-iterations": (_encode(num_iterations=1.5),
                                     "Input `num_iterations`: JSON value 1.5 is not of expected "
                                     "type int32."),
    "encode-iterations-beyond-int32": (_encode(num_iterations=2**40),
                                       "Input `num_iterations`: JSON value 1099511627776 is out "
                                       "of the range of int32."),
    "encode-iterations-not-scalar": (_encode(num_iterations=[2, 2]),
                                     "Input `num_iterations`: In[0] should be a scalar: [2]"),
    "encode-row-format-scalar": ({"signature_name": "encode",
                                  "instances": [{"x": row, "num_iterations": 2} for row in X]},
                                 "Input `num_iterations`: In[0] should be a scalar: [2]"),
    "encode-missing-input": ({"signature_name": "encode", "inputs": {"x": X}},
                             "missing ['num_iterations']"),
    "sample-negative-n": ({"signature_name": "sample", "inputs": {"n": -3, "seed": [1, 2]}},
                          "`n` must be in [0, 10000]; got -3"),
    "sample-seed-of-three": ({"signature_name": "sample", "inputs": {"n": 2, "seed": [1, 2, 3]}},
                             "seed must have shape [2], not [3]"),
    "decode-z-too-wide": ({"signature_name": "decode", "inputs": {"z": [[0.0] * 9]}},
                          "`z` must have shape [B, 8]; got shape [1, 9]"),
    "log-likelihood-zero-samples": ({"signature_name": "log_likelihood",
                                     "inputs": {"x": X, "num_importance_samples": 0}},
                                    "`num_importance_samples` must be in [1, 100000]; got 0"),
    "unknown-signature": ({"signature_name": "embed", "inputs": {"x": X}},
                          'Serving signature key "embed" not found.'),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  """An (untrained) iterative model's export behind the REST adapter: its URL and export base."""
  config = presets.from_preset("quickstart").override(dict(
      procedure="iterative", num_iterations=2, iterative_inputs=("data", "params"),
      hidden_units=(8,), latent_sizes=(LATENT_SIZE,))).validate()
  model = builders.build_model(config, testing.image_spec(EVENT_SIZE))
  model.build_all(np.zeros([2, EVENT_SIZE], np.float32))
  base = str(tmp_path_factory.mktemp("exports"))
  versions.export_saved_model(exporter.ServingModule(model), base)
  adapter = rest_adapter.RestAdapter(base, model_name="vae")
  host, port = adapter.start()
  try:
    yield dict(url=f"http://{host}:{port}/v1/models/vae:predict", base=base)
  finally:
    adapter.stop()




@pytest.mark.parametrize("request_id", list(SERVING))
def test_bad_serving_request_is_http_400_with_one_line_naming_the_input(server, request_id):
  body, expected = SERVING[request_id]
  before = _snapshot([server["base"]])
  status, reply = testing.post_json(server["url"], body)
  assert status == 400 and list(reply) == ["error"], reply
  message = reply["error"]
  assert "\n" not in message and "Traceback" not in message, message
  for fragment in (expected,) if isinstance(expected, str) else expected:
    assert fragment in message
  assert _changes(before, _snapshot([server["base"]])) == []


# Bad arguments of the public Python entry points the binaries call (`export_from_workdir`
# validates before it restores anything; the binary checks `version` and `chunk_size` itself).
EXPORT_ARGUMENTS = {
    "version-zero": (dict(version=0), ValueError, "`version` must be an integer >= 1; got 0."),
    "version-bool": (dict(version=True), ValueError,
                     "`version` must be an integer >= 1; got True."),
    "chunk-size-zero": (dict(chunk_size=0), ValueError, "`chunk_size` must be >= 1; got 0."),
    "base-is-a-file": (dict(export_base="{cases}/notes.txt"), ValueError,
                       "`export_base` '{cases}/notes.txt' cannot be a directory"),
    "missing-checkpoint": (dict(checkpoint="{run}/checkpoints/ckpt-9"), FileNotFoundError,
                           "`checkpoint` '{run}/checkpoints/ckpt-9' is not a checkpoint prefix"),
    "truncated-checkpoint": (dict(checkpoint="{truncated}/ckpt-3"), ValueError,
                             "`checkpoint` '{truncated}/ckpt-3' does not match the model of "
                             "'{run}'"),
}


@pytest.mark.parametrize("argument_id", list(EXPORT_ARGUMENTS))
def test_export_from_workdir_rejects_bad_arguments_and_writes_nothing(cli_results, argument_id):
  places = cli_results["places"]
  arguments, error, expected = EXPORT_ARGUMENTS[argument_id]
  arguments = {name: value.format(**places) if isinstance(value, str) else value
               for name, value in arguments.items()}
  arguments.setdefault("export_base", os.path.join(places["cases"], "exports"))
  watch = [places["cases"], places["run"]]
  before = _snapshot(watch)
  with pytest.raises(error) as raised:
    exporter.export_from_workdir(places["run"], **arguments)
  assert expected.format(**places) in str(raised.value)
  assert _changes(before, _snapshot(watch)) == []


@pytest.mark.parametrize("path, expected", [
    ("{cases}/missing", "'{cases}/missing' is neither a SavedModel directory"),
    ("{base}/1", "`export_base` '{base}/1' is a version directory; give its parent"),
], ids=["missing", "version-directory"])
def test_rest_adapter_rejects_what_is_not_an_export_base(cli_results, server, path, expected):
  places = dict(cli_results["places"], base=server["base"])
  with pytest.raises(FileNotFoundError) as raised:
    rest_adapter.RestAdapter(path.format(**places))
  assert expected.format(**places) in str(raised.value)
