"""``rnnkit seq2seq train | translate | evaluate | attention``."""

from __future__ import annotations

import argparse
import sys

from rnnkit.cli import common
from rnnkit.data.files import read_lines
from rnnkit.errors import ConfigError
from rnnkit.tasks import seq2seq as s2s

NBEST_FORMAT = ("With --nbest K > 1, each input line i (0-based) gives up to K lines "
                "'i<TAB>score<TAB>translation', best first, where score = log p(translation | source) / "
                "((5 + |Y|) / 6) ** length-penalty and |Y| counts the end-of-sentence token; an empty input "
                "line gives the one line 'i<TAB>0.0000<TAB>' (empty translation).")


def register(tasks: argparse._SubParsersAction) -> None:
    sub = common.add_task_parser(tasks, "seq2seq", help="attention seq2seq translation",
                                 description="Sequence to sequence translation with attention: train, translate, "
                                 "evaluate BLEU/chrF, plot attention.")

    p = common.add_train_parser(sub, s2s, report_training, check=check_train_flags, help="train a translation model",
                                description="Train a bidirectional-encoder, attentive-decoder translation model on "
                                "source<TAB>target pairs (--train/--valid) or line-aligned files "
                                "(--src-train/--tgt-train). With no data given: English to French on the bundled "
                                "Tatoeba subset (CC BY 2.0 FR, www.manythings.org/anki and tatoeba.org), within a "
                                "few minutes.")
    p.add_argument("--samples", type=int, default=5, metavar="N",
                   help="after training, print N validation sources and their greedy translations as "
                   "source<TAB>translation lines (0: none; default 5)")

    p = common.add_run_command(sub, cmd_translate, "translate", help="translate sentences with a trained run",
                               description="Translate one source sentence per line (standard input or --input) into "
                               "one translation per line on standard output, in input order; an empty or blank line "
                               "gives an empty line. " + NBEST_FORMAT)
    p.add_argument("--input", metavar="FILE", help="sentences to translate (default: standard input)")
    _add_search_flags(p)
    p.add_argument("--nbest", type=int, default=1, metavar="K",
                   help="print the K best translations per sentence with their scores (K <= --beam; default 1)")
    p.add_argument("--batch-size", type=int, default=s2s.EVAL_BATCH, metavar="N",
                   help=f"sentences decoded together (default {s2s.EVAL_BATCH})")

    p = common.add_evaluate_command(
        sub, cmd_evaluate, help="BLEU, chrF and exact match on test pairs",
        test="TSV file of source<TAB>target pairs (default: the run's validation pairs)",
        json='print one JSON line {"bleu", "chrf", "exact_match", "sentences"}',
        description="Translate the sources of test pairs and score the translations against the targets: sacrebleu "
        "corpus BLEU and chrF on detokenised text (0-100), exact match (fraction of sentences) and the number of "
        "sentences.")
    p.add_argument("--src-test", metavar="FILE", help="test sources, one per line (with --tgt-test)")
    p.add_argument("--tgt-test", metavar="FILE", help="test references, line-aligned with --src-test")
    p.add_argument("--group-references", action="store_true",
                   help="score each distinct source once against all its references: the targets of every line "
                   "that repeats it and, in --test, further target columns (source<TAB>target<TAB>target...); "
                   "'sentences' then counts distinct sources")
    _add_search_flags(p)

    p = common.add_run_command(sub, cmd_attention, "attention", help="plot the attention of one translation",
                               description="Translate one sentence greedily and draw its attention weights as a "
                               "heatmap (output tokens x source tokens). Prints the image path; the translation goes "
                               "to stderr.")
    p.add_argument("sentence", help="the source sentence")
    p.add_argument("--out", metavar="FILE", default="attention.png", help="image file (.png, .pdf, .svg...), or "
                   "an existing folder to write attention.png into")


def _add_search_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam", type=int, default=s2s.DEFAULT_BEAM, metavar="K",
                   help=f"beam width (1 = greedy search; default {s2s.DEFAULT_BEAM})")
    p.add_argument("--length-penalty", type=float, default=s2s.DEFAULT_LENGTH_PENALTY, metavar="ALPHA",
                   help="GNMT length penalty: rank hypotheses by log p / ((5 + |Y|) / 6) ** ALPHA (0 = by "
                   f"log-probability; default {s2s.DEFAULT_LENGTH_PENALTY})")
    p.add_argument("--max-len-a", type=float, default=s2s.DEFAULT_MAX_LEN_A, metavar="A",
                   help=f"at most A * source tokens + B output tokens (default {s2s.DEFAULT_MAX_LEN_A})")
    p.add_argument("--max-len-b", type=int, default=s2s.DEFAULT_MAX_LEN_B, metavar="B",
                   help=f"see --max-len-a (default {s2s.DEFAULT_MAX_LEN_B})")


def _search(args: argparse.Namespace) -> dict:
    return {"beam": args.beam, "length_penalty": args.length_penalty, "max_len_a": args.max_len_a,
            "max_len_b": args.max_len_b}


def check_train_flags(args: argparse.Namespace) -> None:
    if args.samples < 0:
        raise ConfigError(f"field 'samples': must be >= 0, got {args.samples}")


def report_training(run: s2s.Seq2SeqRun, args: argparse.Namespace) -> None:
    """After training: the best checkpoint's greedy validation scores (stderr) and sample translations
    (stdout)."""
    valid, _ = s2s.load_valid_pairs(run.config)
    if valid is not None:
        m = run.evaluate_pairs(valid, beam=1)
        print(f"rnnkit: best checkpoint on the validation pairs (greedy): BLEU {m['bleu']:.2f}  chrF "
              f"{m['chrf']:.2f}  exact match {m['exact_match']:.4f}  sentences {m['sentences']}", file=sys.stderr)
        sources = list(dict.fromkeys(s for s, _ in valid))[: args.samples]
        for src, hyp in zip(sources, run.translate(sources, beam=1)):
            print(f"{src}\t{hyp}")


def _check_search(args: argparse.Namespace) -> None:
    if args.beam < 1:
        raise ConfigError(f"field 'beam': must be >= 1, got {args.beam}")
    if args.max_len_a < 0 or args.max_len_b < 0:
        raise ConfigError(f"field 'max_len_a/max_len_b': must be >= 0, got {args.max_len_a} and {args.max_len_b}")


def cmd_translate(args: argparse.Namespace) -> int:
    _check_search(args)
    if not 1 <= args.nbest <= args.beam:
        raise ConfigError(f"field 'nbest': must be in [1, --beam = {args.beam}], got {args.nbest}")
    if args.batch_size < 1:
        raise ConfigError(f"field 'batch_size': must be >= 1, got {args.batch_size}")
    run = common.load_run(s2s, args)
    lines = read_lines(args.input, what="sentences to translate") if args.input else common.stdin_lines()
    search = {**_search(args), "batch_size": args.batch_size}
    if args.nbest == 1:
        for hyp in run.translate(lines, **search):
            print(hyp)
        return 0
    for i, hyps in enumerate(run.translate_nbest(lines, args.nbest, **search)):
        if not hyps:
            print(f"{i}\t{0.0:.4f}\t")
        for h in hyps:
            print(f"{i}\t{h.score:.4f}\t{h.text}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _check_search(args)
    run = common.load_run(s2s, args)
    m = run.evaluate(args.test, src=args.src_test, tgt=args.tgt_test, group_references=args.group_references,
                     **_search(args))
    text = f"BLEU {m['bleu']:.2f}  chrF {m['chrf']:.2f}  exact match {m['exact_match']:.4f}  sentences {m['sentences']}"
    return common.print_result(m, args.json, text)


def cmd_attention(args: argparse.Namespace) -> int:
    from rnnkit.plot import image_path, plot_attention

    image_path(args.out, "attention.png")  # a bad --out fails before the model is loaded
    run = common.load_run(s2s, args)
    src, out, weights = run.attention(args.sentence)
    print(f"rnnkit: translation: {run.translate([args.sentence], beam=1)[0]}", file=sys.stderr)
    print(plot_attention(weights.numpy(), src, out, args.out))
    return 0
