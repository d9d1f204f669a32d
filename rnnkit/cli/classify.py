"""``rnnkit classify train | predict | evaluate | explain``."""

from __future__ import annotations

import argparse
import sys

from rnnkit.cli import common
from rnnkit.data.files import read_lines
from rnnkit.tasks import classify


def register(tasks: argparse._SubParsersAction) -> None:
    sub = common.add_task_parser(tasks, "classify", help="text classification (sentiment, topic, intent)",
                                 description="Text classification: train a recurrent classifier (optionally from a "
                                 "trained rnnkit lm run), classify texts, evaluate, show attention weights.")

    common.add_train_parser(sub, classify, report_training, help="train a classifier",
                            description="Train an embedding -> recurrent stack -> pooling -> linear classifier; the "
                            "best checkpoint is chosen by validation accuracy (multi-label: micro-F1). With no "
                            "data given: the genre of each sentence of the bundled UD English EWT, within a few "
                            "minutes.")

    p = common.add_run_command(sub, cmd_predict, "predict", help="classify texts with a trained run",
                               description="Classify texts: one text per input line, one prediction per line on "
                               "stdout (a blank input line gives a blank output line). Multi-label runs print "
                               "the labels above the run's threshold, tab-separated.")
    p.add_argument("--input", metavar="FILE", help="one text per line (default: standard input)")
    p.add_argument("--probs", action="store_true", help="print each label's probability after it "
                   "(label<TAB>probability)")
    p.add_argument("--top-k", type=int, metavar="K", default=None,
                   help="print the K most probable labels, most probable first")

    p = common.add_evaluate_command(sub, cmd_evaluate, help="accuracy, macro/micro F1 and per-class scores",
                                    test="labelled file, read with the run's format settings (default: the run's "
                                    "validation data)")
    p.add_argument("--confusion", metavar="PNG", help="also write the confusion matrix picture here")

    p = common.add_run_command(sub, cmd_explain, "explain", help="attention-pooling weights over a text's tokens",
                               description="Show which tokens decided: the attention-pooling weights of a run "
                               "trained with --pooling attention, printed as token<TAB>weight lines (one weight "
                               "column per head) and optionally drawn.")
    p.add_argument("text", help="the text to explain")
    p.add_argument("--out", metavar="PNG", help="write the weights as a picture here")


def report_training(run: classify.ClassifyRun, args: argparse.Namespace) -> None:
    """After training: the best checkpoint's validation scores (stderr)."""
    if run.config.valid is not None or run.config.train is None:
        print(f"rnnkit: best checkpoint on the validation data: {_summary(run.evaluate())}", file=sys.stderr)


def _summary(m: dict) -> str:
    return (f"accuracy {m['accuracy']:.4f}  macro_f1 {m['macro_f1']:.4f}  micro_f1 {m['micro_f1']:.4f}  "
            f"examples {m['examples']}")


def cmd_predict(args: argparse.Namespace) -> int:
    run = common.load_run(classify, args)
    lines = read_lines(args.input, what="texts to classify") if args.input else common.stdin_lines()
    keep = [i for i, line in enumerate(lines) if line.strip()]
    predictions = run.predict([lines[i] for i in keep], top_k=args.top_k, probs=args.probs)
    out = [""] * len(lines)
    for i, pred in zip(keep, predictions):
        if args.top_k is not None or args.probs:
            out[i] = "\t".join(f"{label}\t{p:.4f}" if args.probs else label for label, p in pred)
        else:
            out[i] = "\t".join(pred) if run.config.multi_label else pred
    sys.stdout.write("".join(line + "\n" for line in out))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = common.load_run(classify, args)
    m = run.evaluate(args.test)
    if m.get("unseen_label_examples"):
        print(f"rnnkit: warning: {m['unseen_label_examples']} test examples have labels never seen in training "
              f"(counted as errors): {', '.join(m['unseen_labels'][:10])}", file=sys.stderr)
    if args.confusion:
        from rnnkit.plot import plot_confusion

        matrix, labels = run.confusion(args.test)
        plot_confusion(matrix, labels, args.confusion)
        print(f"rnnkit: wrote {args.confusion}", file=sys.stderr)
    return common.print_result(m, args.json, _summary(m))


def cmd_explain(args: argparse.Namespace) -> int:
    run = common.load_run(classify, args)
    tokens, weights = run.explain(args.text)
    for t, column in zip(tokens, zip(*weights)):
        print("\t".join([t, *(f"{w:.4f}" for w in column)]))
    if args.out:
        from rnnkit.plot import plot_word_weights

        plot_word_weights(weights, tokens, args.out)
        print(f"rnnkit: wrote {args.out}", file=sys.stderr)
    return 0
