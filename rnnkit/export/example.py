"""Run an exported rnnkit model with onnxruntime and numpy only (plus ``tokenizers`` for subword runs).

This file is copied into every folder written by ``rnnkit export``; it needs neither PyTorch nor rnnkit.
It reads ``model.json`` beside it for the task, the graphs and their tensors' names and shapes.

    python example.py score "some text"                  # LM: total log-likelihood (nats) and tokens
    python example.py generate "ROMEO:" --length 50      # LM: greedy continuation
    python example.py tag "The cat sat ." "A dog ran ."  # tagger: one whitespace-tokenised sentence per argument
    python example.py translate "a sentence" [--beam 5]  # seq2seq: greedy (or beam) translation
    python example.py classify "a text" "another text"   # classifier: label and probabilities of each text

Every command prints one JSON object per line. The functions below are the reference for other runtimes:

* LM scoring runs ``lm_sequence`` (ids, lengths -> log p of each token given the ones before it); generation
  feeds ``lm_step`` one token at a time, carrying the state tensors (named in ``model.json``, zeros at first).
* Tagging runs ``tagger`` (words, lengths[, chars, char_lengths] -> scores (B, T, K)), then takes the argmax,
  or with the CRF head (``crf.json``) the Viterbi path: ``viterbi`` below, a small numpy post-step.
* Classification runs ``classifier`` (words, lengths[, chars, char_lengths] -> probabilities (B, K)), then
  takes the argmax, or for multi-label runs every label above ``model.json``'s ``threshold``.
* Translation runs ``encoder`` once, then ``decoder_step`` per output token; at most
  ``floor(2 * source tokens + 10)`` tokens, then ``<eos>`` is forced (rnnkit's defaults).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
CHAR_UNK = "\ufffd"  # how a char-level run shows <unk>
MAX_LEN_A, MAX_LEN_B, LENGTH_PENALTY = 2.0, 10, 0.6  # rnnkit's translation defaults


# --- tokenizers (rnnkit.data.tokenize, for the saved dicts) -------------------------------------------------

class Tokenizer:
    """Text <-> ids for an rnnkit tokenizer dict (``level`` char, word or subword)."""

    def __init__(self, d: dict) -> None:
        v = d["vocab"]
        self.level, self.itos = d["level"], list(v["specials"]) + list(v["tokens"])
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.unk = v["unk"]
        self.unk_id = self.stoi.get(self.unk) if self.unk is not None else None
        self.pad_id, self.bos_id, self.eos_id = (self.stoi.get(s) for s in (PAD, BOS, EOS))
        self.bpe = None
        if self.level == "subword":
            from tokenizers import Tokenizer as BPE

            self.bpe = BPE.from_str(d["bpe"])

    def _lookup(self, symbols: list[str]) -> list[int]:
        return [self.stoi.get(s, self.unk_id) for s in symbols]

    def _fix(self, ids: list[int]) -> list[int]:
        """A literal <pad> in the text reads as <unk>, never as padding (char level: cannot happen)."""
        return [self.unk_id if i == self.pad_id and self.unk_id is not None else i for i in ids]

    def encode(self, line: str) -> list[int]:
        """Ids of one line; no <bos>/<eos>."""
        if self.level == "char":
            return self._lookup(list(line))
        if self.level == "word":
            return self._fix(self._lookup(line.split()))
        return self._fix(self.bpe.encode(line, add_special_tokens=False).ids)

    def encode_stream(self, text: str) -> list[int]:
        """Ids of a text as a language model reads it: each line's ids then <eos> (char: every character)."""
        if self.level == "char":
            return self.encode(text)
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        out: list[int] = []
        for line in lines:
            out += self.encode(line) + [self.eos_id]
        return out

    def decode(self, ids: list[int]) -> str:
        """Text of one line's ids; <pad>, <bos> and <eos> are skipped."""
        skip = {self.pad_id, self.bos_id, self.eos_id}
        symbols = [self.itos[i] for i in ids if i not in skip]
        if self.level == "char":
            return "".join(CHAR_UNK if s == self.unk else s for s in symbols)
        if self.level == "word":
            return " ".join(symbols)
        return self.bpe.decoder.decode(symbols)

    def decode_stream(self, ids: list[int]) -> str:
        """Inverse of encode_stream: <eos> becomes a newline."""
        if self.level == "char":
            return self.decode(ids)
        text, cur = "", []
        for i in ids:
            if i == self.eos_id:
                text, cur = text + self.decode(cur) + "\n", []
            else:
                cur.append(i)
        return text + (self.decode(cur) if cur else "")


# --- the exported folder ------------------------------------------------------------------------------------

class Exported:
    """``model.json`` and one onnxruntime session per graph."""

    def __init__(self, folder: str | Path) -> None:
        self.dir = Path(folder)
        self.meta = json.loads((self.dir / "model.json").read_text(encoding="utf-8"))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.sessions = {name: ort.InferenceSession(str(self.dir / g["file"]), opts,
                                                    providers=["CPUExecutionProvider"])
                         for name, g in self.meta["graphs"].items()}

    def json(self, name: str) -> dict:
        return json.loads((self.dir / name).read_text(encoding="utf-8"))

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a graph on the feeds it takes (a graph may ignore some, e.g. memory without attention);
        returns its outputs by name."""
        g = self.meta["graphs"][graph]
        names = [o["name"] for o in g["outputs"]]
        return dict(zip(names, self.sessions[graph].run(names, {i["name"]: feeds[i["name"]] for i in g["inputs"]})))


def pad(rows: list[list[int]], value: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (B, T) int64 ids and (B,) lengths."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    out = np.full((len(rows), max(lengths.max(initial=0), 1)), value, dtype=np.int64)
    for b, r in enumerate(rows):
        out[b, :len(r)] = r
    return out, lengths


# --- language model -----------------------------------------------------------------------------------------

def lm_score(m: Exported, tok: Tokenizer, texts: list[str]) -> list[float]:
    """Total log-likelihood of each text read as one stream (its first token is not predicted)."""
    ids, lengths = pad([tok.encode_stream(t) for t in texts])
    out = m.run("lm_sequence", {"ids": ids, "lengths": lengths})["token_log_probs"]  # (B, T), 0 at padding
    return [float(row.astype(np.float64).sum()) for row in out]


def lm_generate(m: Exported, tok: Tokenizer, prompt: str, length: int) -> list[int]:
    """Greedy continuation of ``prompt`` by ``length`` tokens (the prompt is read as rnnkit's generate does)."""
    ids = tok.encode_stream(prompt) if prompt else []
    if tok.level != "char" and ids and not prompt.endswith("\n") and ids[-1] == tok.eos_id:
        ids = ids[:-1]  # a prompt is an unfinished line
    if not ids:
        ids = tok.encode_stream("\n") or [tok.eos_id]
    layers, _, hidden = m.meta["state"]["shape"]
    state = {n: np.zeros((layers, 1, hidden), dtype=np.float32) for n in m.meta["state"]["names"]}
    out: list[int] = []
    for i in range(len(ids) + length - 1):
        token = ids[i] if i < len(ids) else out[-1]
        res = m.run("lm_step", {"ids": np.array([token], dtype=np.int64), **state})
        state = {n: res[f"{n}_out"] for n in state}
        if i >= len(ids) - 1:
            out.append(int(res["log_probs"][0].argmax()))
    return out[:length]


# --- tagger -------------------------------------------------------------------------------------------------

def viterbi(scores: np.ndarray, start: np.ndarray, trans: np.ndarray, end: np.ndarray) -> list[int]:
    """Best tag path of one sentence: ``scores`` (T, K) emissions; ``start`` (K,), ``trans`` (K, K) from row tag
    to column tag, ``end`` (K,); disallowed entries are -inf. The same recursion as rnnkit's CRF.decode."""
    score = start + scores[0]  # (K,)
    back = []
    for t in range(1, len(scores)):
        total = score[:, None] + trans  # (K, K): previous tag i -> tag j
        back.append(total.argmax(axis=0))
        score = total.max(axis=0) + scores[t]
    cur = int((score + end).argmax())
    path = [cur]
    for idx in reversed(back):
        cur = int(idx[cur])
        path.append(cur)
    return path[::-1]


def char_feeds(m: Exported, vocab: dict, words: list[list[str]], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """``chars`` (B, T, C) and ``char_lengths`` (B, T) of each text's words, for a graph with a character encoder."""
    chars = Tokenizer({"level": "char", "vocab": vocab})
    width = max(len(w) for s in words for w in s)
    feeds = {"chars": np.full(tuple(shape) + (width,), m.meta["char_pad_id"], dtype=np.int64),
             "char_lengths": np.zeros(shape, dtype=np.int64)}
    for b, s in enumerate(words):
        for t, w in enumerate(s):
            feeds["chars"][b, t, :len(w)] = chars._lookup(list(w))
            feeds["char_lengths"][b, t] = len(w)
    return feeds


def tag(m: Exported, sentences: list[list[str]]) -> list[list[str]]:
    """Tags of tokenised sentences (each non-empty)."""
    v = m.json(m.meta["vocabs"])
    words = Tokenizer({"level": "word", "vocab": v["words"]})
    keys = [[w.lower() for w in s] if v["lowercase"] else s for s in sentences]
    ids, lengths = pad([words._lookup(s) for s in keys], words.pad_id)
    feeds = {"words": ids, "lengths": lengths}
    if v["chars"] is not None:
        n = v["max_word_chars"]
        trim = [[w if not n or len(w) <= n else w[:(n + 1) // 2] + w[len(w) - n // 2:] for w in s] for s in sentences]
        feeds.update(char_feeds(m, v["chars"], trim, ids.shape))
    scores = m.run("tagger", feeds)["scores"]  # (B, T, K)
    crf = m.json(m.meta["crf"]) if m.meta["crf"] else None
    labels, out = m.meta["labels"], []
    for b, n in enumerate(lengths):
        if crf:
            path = viterbi(scores[b, :n], *(np.array(crf[k]) for k in ("start", "transitions", "end")))
        else:
            path = scores[b, :n].argmax(axis=1).tolist()
        out.append([labels[i] for i in path])
    return out


# --- classifier ---------------------------------------------------------------------------------------------

def classify(m: Exported, texts: list[str]) -> np.ndarray:
    """Class probabilities (N, K) of texts (each with at least one token), labels in ``model.json``'s order."""
    v = m.json(m.meta["vocabs"])
    tok = Tokenizer(v["tokenizer"])
    texts = [t.lower() if v["lowercase"] else t for t in texts]
    ids, lengths = pad([tok.encode(t) for t in texts], tok.pad_id)
    feeds = {"words": ids, "lengths": lengths}
    if v["chars"] is not None:
        feeds.update(char_feeds(m, v["chars"], [t.split() for t in texts], ids.shape))
    return m.run("classifier", feeds)["probabilities"]


def decide(m: Exported, probs: np.ndarray) -> list:
    """The label of each row (multi-label: the labels above the run's threshold, most probable first)."""
    labels = m.meta["labels"]
    if not m.meta["multi_label"]:
        return [labels[int(p.argmax())] for p in probs]
    return [[labels[c] for c in np.argsort(-p, kind="stable") if p[c] > m.meta["threshold"]] for p in probs]


# --- seq2seq ------------------------------------------------------------------------------------------------

def _encode_source(m: Exported, src_ids: list[int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(decoder state, encoder memory incl. mask) of one source sentence."""
    src, lengths = pad([src_ids], m.meta["pad_id"])
    enc = m.run("encoder", {"src": src, "src_lengths": lengths})
    memory = {n: enc[n] for n in m.meta["memory"]}
    memory["mask"] = np.arange(src.shape[1])[None, :] < lengths[:, None]  # (1, S)
    return {n: enc[n] for n in m.meta["state"]}, memory


def _step(m: Exported, prev: np.ndarray, state: dict, memory: dict) -> tuple[np.ndarray, dict]:
    out = m.run("decoder_step", {"prev": prev, **state, **memory})
    return out["log_probs"], {n: out[f"{n}_out"] for n in state}


def _limit(n_src: int) -> int:
    return math.floor(n_src * MAX_LEN_A + MAX_LEN_B)


def greedy(m: Exported, src_ids: list[int]) -> list[int]:
    """Most likely next token at every step until <eos> (forced after ``_limit`` tokens)."""
    state, memory = _encode_source(m, src_ids)
    eos, prev, out = m.meta["eos_id"], np.array([m.meta["bos_id"]], dtype=np.int64), []
    for t in range(_limit(len(src_ids)) + 1):
        log_probs, state = _step(m, prev, state, memory)
        best = eos if t == _limit(len(src_ids)) else int(log_probs[0].argmax())
        if best == eos:
            break
        out.append(best)
        prev = np.array([best], dtype=np.int64)
    return out


def beam(m: Exported, src_ids: list[int], width: int) -> list[int]:
    """Beam search as rnnkit's (one sentence, the best hypothesis): ``width`` live hypotheses; of the best
    ``2 * width`` extensions, those ending in <eos> among the first ``width`` finish, ranked by
    ``log p / ((5 + |Y|) / 6) ** 0.6`` (|Y| counts <eos>); stop after ``width`` finished hypotheses or when no
    live one can beat the best finished one."""
    state, memory = _encode_source(m, src_ids)
    eos, limit, k = m.meta["eos_id"], _limit(len(src_ids)), width
    factor = lambda n: ((5 + n) / 6) ** LENGTH_PENALTY
    state = {n: np.repeat(v, k, axis=1 if n in ("h", "c") else 0) for n, v in state.items()}
    memory = {n: np.repeat(v, k, axis=0) for n, v in memory.items()}
    alive = np.full(k, -np.inf)
    alive[0] = 0.0  # one live hypothesis (<bos>) at the start
    tokens: list[list[int]] = [[] for _ in range(k)]
    best, best_tokens, n_finished = -np.inf, [], 0
    prev = np.full(k, m.meta["bos_id"], dtype=np.int64)
    for t in range(limit + 1):
        log_probs, state = _step(m, prev, state, memory)
        log_probs = log_probs.astype(np.float64)
        if t == limit:  # only <eos> is left
            log_probs = np.where(np.arange(log_probs.shape[1]) == eos, log_probs, -np.inf)
        cand = (alive[:, None] + log_probs).reshape(-1)  # (k*V,)
        order = np.argsort(-cand, kind="stable")[:2 * k]  # best first
        origin, token, score = order // log_probs.shape[1], order % log_probs.shape[1], cand[order]
        ends = (token == eos) & np.isfinite(score)
        for r in np.flatnonzero(ends[:k]):  # only <eos> extensions ranked in the first k finish
            n_finished += 1
            if score[r] / factor(t + 1) > best:
                best, best_tokens = score[r] / factor(t + 1), tokens[origin[r]]
        live = np.where(ends | ~np.isfinite(score), -np.inf, score)
        pick = np.argsort(-live, kind="stable")[:k]
        alive = live[pick]
        if len(alive) < k:
            alive = np.concatenate([alive, np.full(k - len(alive), -np.inf)])
            pick = np.concatenate([pick, np.zeros(k - len(pick), dtype=pick.dtype)])
        rows = origin[pick]
        tokens = [tokens[o] + [int(token[p])] for o, p in zip(rows, pick)]
        if n_finished >= k or best >= alive[0] / factor(limit + 1) or not np.isfinite(alive[0]):
            break
        state = {n: (v[:, rows] if n in ("h", "c") else v[rows]) for n, v in state.items()}
        prev = token[pick].astype(np.int64)
    return best_tokens


# --- command line -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run an rnnkit model exported to ONNX (see this file's docstring).")
    p.add_argument("--dir", default=str(Path(__file__).resolve().parent), help="exported folder (default: here)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="LM: total log-likelihood of each text")
    s.add_argument("texts", nargs="+")
    g = sub.add_parser("generate", help="LM: greedy continuation of a prompt")
    g.add_argument("prompt")
    g.add_argument("--length", type=int, default=50)
    t = sub.add_parser("tag", help="tagger: tags of whitespace-tokenised sentences")
    t.add_argument("sentences", nargs="+")
    c = sub.add_parser("classify", help="classifier: label and class probabilities of texts")
    c.add_argument("texts", nargs="+")
    r = sub.add_parser("translate", help="seq2seq: translate sentences")
    r.add_argument("sentences", nargs="+")
    r.add_argument("--beam", type=int, default=1, help="beam width (1: greedy)")
    args = p.parse_args(argv)
    m = Exported(args.dir)
    task = m.meta["task"]
    expected = {"score": "lm", "generate": "lm", "tag": "tag", "translate": "seq2seq",
                "classify": "classify"}[args.command]
    if task != expected:
        print(f"example.py: error: '{args.command}' needs a {expected} export, this is a {task} export",
              file=sys.stderr)
        return 2
    if args.command == "score":
        tok = Tokenizer(m.json(m.meta["tokenizer"]))
        for text, total in zip(args.texts, lm_score(m, tok, args.texts)):
            print(json.dumps({"text": text, "log_likelihood": total}))
    elif args.command == "generate":
        tok = Tokenizer(m.json(m.meta["tokenizer"]))
        ids = lm_generate(m, tok, args.prompt, args.length)
        print(json.dumps({"prompt": args.prompt, "ids": ids, "text": tok.decode_stream(ids)}))
    elif args.command == "tag":
        sentences = [s.split() for s in args.sentences]
        for s, tags in zip(sentences, tag(m, sentences)):
            print(json.dumps({"tokens": s, "tags": tags}))
    elif args.command == "classify":
        probs = classify(m, args.texts)
        key = "labels" if m.meta["multi_label"] else "label"
        for text, row, decided in zip(args.texts, probs, decide(m, probs)):
            print(json.dumps({"text": text, key: decided,
                              "probabilities": dict(zip(m.meta["labels"], map(float, row)))}))
    else:
        toks = m.json(m.meta["tokenizers"])
        source = Tokenizer(toks["source"])
        target = source if toks["shared"] else Tokenizer(toks["target"])
        for sentence in args.sentences:
            src = source.encode(sentence.strip())
            ids = (greedy(m, src) if args.beam == 1 else beam(m, src, args.beam)) if src else []
            print(json.dumps({"source": sentence, "ids": ids, "text": target.decode(ids)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
