"""``rnnkit tag train | predict | evaluate``."""

from __future__ import annotations

import argparse
import sys

from rnnkit.cli import common
from rnnkit.data.conll import is_conllu, read_columns, read_conllu, read_plain, write_conll, write_conllu
from rnnkit.data.files import read_lines
from rnnkit.errors import ConfigError, DataError
from rnnkit.tasks import tag

INPUT_FORMATS = ("auto", "plain", "conllu", "columns")


def register(tasks: argparse._SubParsersAction) -> None:
    sub = common.add_task_parser(tasks, "tag", help="sequence labelling (POS, NER)",
                                 description="Sequence labelling: train a BiLSTM(-CRF) tagger, tag sentences, "
                                 "evaluate accuracy and span F1.")

    p = common.add_train_parser(sub, tag, report_training, help="train a tagger",
                                description="Train a word + character BiLSTM tagger (softmax or CRF output). With "
                                "no data given: UPOS on the bundled UD English EWT, within a few minutes.")

    p = common.add_run_command(sub, cmd_predict, "predict", help="tag sentences with a trained run",
                               description="Tag sentences. Input: one whitespace-tokenised sentence per line (blank "
                               "lines are skipped), a CoNLL-U file or a column file (tokens in the first column, "
                               "other columns ignored). Output on stdout: token<TAB>tag lines with a blank line "
                               "after each sentence, or CoNLL-U.")
    p.add_argument("--input", metavar="FILE", help="file to tag (default: standard input)")
    p.add_argument("--input-format", choices=INPUT_FORMATS, default="auto",
                   help="auto (default): CoNLL-U if the file looks like it, else plain sentences")
    p.add_argument("--format", choices=("conll", "conllu"), default="conll",
                   help="conll (default): token<TAB>tag; conllu: CoNLL-U with the tag column filled (a CoNLL-U "
                   "input is copied with only that column replaced)")
    p.add_argument("--column", choices=("upos", "xpos"), default=None,
                   help="CoNLL-U column to fill (default: the run's column, or upos)")

    p = common.add_evaluate_command(sub, cmd_evaluate, help="accuracy and span F1 on a labelled file",
                                    test="CoNLL-U or column file (default: the run's validation data)")
    p.add_argument("--column", metavar="C", default=None,
                   help="label column: upos/xpos for CoNLL-U, a number for column files (default: the run's)")


def report_training(run: tag.TagRun, args: argparse.Namespace) -> None:
    """After training: the best checkpoint's validation scores (stderr)."""
    if run.config.valid is not None or run.config.train is None:
        print(f"rnnkit: best checkpoint on the validation data: {_summary(run.evaluate())}", file=sys.stderr)


def _read_input(args: argparse.Namespace) -> tuple[list[list[str]], bool]:
    """(tokenised sentences, whether the input is a CoNLL-U file to copy the layout from)."""
    fmt = args.input_format
    if args.input is None:
        if fmt not in ("auto", "plain"):
            raise ConfigError(f"field 'input_format': {fmt} input needs --input FILE")
        return read_plain(common.stdin_lines()), False
    what = "input to tag"
    if fmt == "auto":
        fmt = "conllu" if is_conllu(args.input, what=what) else "plain"
    if fmt == "conllu":
        return [s.tokens for s in read_conllu(args.input, what=what)], True
    if fmt == "columns":
        return [s.tokens for s in read_columns(args.input, what=what)], False
    sentences = read_plain(read_lines(args.input, what=what))
    if not sentences:
        raise DataError(f"{args.input}: no sentences found ({what})")
    return sentences, False


def cmd_predict(args: argparse.Namespace) -> int:
    run = common.load_run(tag, args)
    sentences, from_conllu = _read_input(args)
    tags = run.predict(sentences)
    pairs = list(zip(sentences, tags))
    if args.format == "conll":
        write_conll(pairs, sys.stdout)
        return 0
    column = args.column or (run.config.column.lower() if str(run.config.column).lower() in ("upos", "xpos")
                             else "upos")
    write_conllu(pairs, sys.stdout, column, source=args.input if from_conllu else None)
    return 0


def _summary(m: dict) -> str:
    kind = "span" if m["span_level"] else "token-level micro (the tag set is not BIO/BIOES)"
    return (f"accuracy {m['accuracy']:.4f}  precision {m['precision']:.4f}  recall {m['recall']:.4f}  "
            f"f1 {m['f1']:.4f} [{kind}]  tokens {m['tokens']}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = common.load_run(tag, args)
    m = run.evaluate(args.test, column=args.column)
    if m.get("unseen_label_tokens"):
        shown = ", ".join(m["unseen_labels"][:10])
        print(f"rnnkit: warning: {m['unseen_label_tokens']} gold tokens have labels never seen in training "
              f"(counted as errors): {shown}", file=sys.stderr)
    return common.print_result(m, args.json, _summary(m))
