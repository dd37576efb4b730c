"""Train the ``simulation-trained`` head (explainer/score/trained.py) on generated planted concepts.

    python -m bench.train_context_scorer [--cache DIR] [--epochs N] [--out FILE] [--seed 0]

1. Concepts are generated over the default corpus (bench/context_concepts.py): token-level and
   contextual, several descriptions each; any that overlaps a public concept of bench/concepts.yaml
   or bench/concepts_context.yaml is dropped, and a share of the concept groups (all concepts with
   the same context marker together) is held out.
2. Training windows: a seeded random sample of the corpus windows plus a few top windows of every
   training concept. Each token's span texts (``token_span_texts``) are embedded with
   all-MiniLM-L6-v2 and cached in ``--cache`` (the slow part on a CPU: about 100 texts/s a core).
3. The head is trained with torch on CPU (binary cross-entropy of every (description, token) pair:
   a concept's own windows and random ones, with the labels of the concept the description belongs
   to), seeded, and saved as float16 arrays in an npz file.
4. Held-out generated concepts are scored as ``bench_discrimination`` scores the public sets: each
   planted unit's held-out windows simulated from its own description and from the other held-out
   concepts' descriptions; the AUROC (right = positive) per kind, for the trained head and for
   ``simulation-context`` on the same windows. The public sets are measured by
   ``python -m bench.bench_discrimination --scorers simulation-context,simulation-trained``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from bench import configure_runtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.context_concepts import Generated, generate, holdout  # noqa: E402
from explainer.collect.corpus import default_corpus  # noqa: E402
from explainer.collect.models import resolve_model  # noqa: E402
from explainer.collect.planted import (  # noqa: E402
    CONTEXT_CONCEPTS,
    DEFAULT_CONCEPTS,
    TokenizedWindow,
    concept_activations,
    load_concepts,
    planted_record,
    tokenize_windows,
)
from explainer.score.contextual import DEFAULT_SPANS, DEFAULT_VERBAL_WEIGHT, token_texts  # noqa: E402
from explainer.score.correlation import score_simulation  # noqa: E402
from explainer.score.trained import SPANS, WEIGHTS_FILE, token_span_texts  # noqa: E402

VERSION = "1"


class Cache:
    """Span-text embeddings kept on disk between runs (one npz of texts and vectors)."""

    def __init__(self, path: Path, embedder):
        self.path, self.embedder = path, embedder
        self.vecs: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                self.vecs = dict(zip(z["texts"].tolist(), z["vecs"]))

    def ensure(self, texts, progress, chunk: int = 2000) -> None:
        missing = [t for t in dict.fromkeys(texts) if t and t not in self.vecs]
        t0 = time.perf_counter()
        for i in range(0, len(missing), chunk):
            part = missing[i : i + chunk]
            self.vecs.update(zip(part, np.asarray(self.embedder.embed(part), dtype=np.float32)))
            self.save()
            done = i + len(part)
            progress(f"embedded {done}/{len(missing)} span texts ({done / (time.perf_counter() - t0):.0f}/s)")

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        texts = list(self.vecs)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, texts=np.array(texts), vecs=np.stack([self.vecs[t] for t in texts]))
        tmp.replace(self.path)

    def spans(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        """(tokens × spans × dim array, mask of non-whitespace tokens) for one window."""
        rows = token_span_texts(tokens)
        dim = next(iter(self.vecs.values())).shape[0]
        out = np.zeros((len(rows), len(SPANS), dim), dtype=np.float32)
        for i, row in enumerate(rows):
            if row:
                for k, t in enumerate(row):
                    if t:
                        out[i, k] = self.vecs[t]
        return out, np.array([r is not None for r in rows])


def window_texts(windows: list[TokenizedWindow]) -> list[str]:
    return [t for w in windows for row in token_span_texts(w.tokens) if row for t in row]


def contextual_texts(windows) -> list[str]:
    """Texts ``simulation-context`` reads (its spans and the verbalised context)."""
    verbal = DEFAULT_VERBAL_WEIGHT > 0
    return [t for w in windows for row in token_texts(w.tokens, DEFAULT_SPANS, verbal) if row for t in row]


V1_MIX = {"token": 0.25, "preceding": 0.5, "centred": 1.0}
"""``simulation-context``'s cosine mix when the v1 head was trained (its --baseline start)."""


def build_head(dim: int, rank: int, hidden: int, seed: int, baseline: float = 0.0):
    import torch

    torch.manual_seed(seed)
    k = len(SPANS)

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.P = torch.nn.Parameter(torch.randn(k, dim, rank) * dim**-0.5)
            self.Q = torch.nn.Parameter(torch.randn(k, dim, rank) * dim**-0.5)
            self.l1 = torch.nn.Linear(k * (rank + 1), hidden)
            self.l2 = torch.nn.Linear(hidden, 1)
            self.wc = torch.nn.Parameter(torch.zeros(k))
            if baseline:
                # start from simulation-context's mix of cosines (token, preceding, centred), scaled,
                # with the MLP's output at zero: training learns corrections to it
                total = sum(V1_MIX.values())
                with torch.no_grad():
                    self.wc.copy_(torch.tensor([baseline * V1_MIX.get(s, 0.0) / total for s in SPANS]))
                    self.l2.weight.zero_()

        def forward(self, e, s):
            """e: B × dim explanations; s: B × T × k × dim spans → B × T logits."""
            cos = torch.einsum("btkd,bd->btk", s, e)
            u = torch.einsum("bd,kdr->bkr", e, self.P)
            v = torch.einsum("btkd,kdr->btkr", s, self.Q)
            x = torch.cat([cos, (v * u[:, None]).flatten(2)], dim=2)
            return self.l2(torch.relu(self.l1(x))).squeeze(-1) + cos @ self.wc

        def arrays(self) -> dict[str, np.ndarray]:
            return {
                "P": self.P.detach().numpy(),
                "Q": self.Q.detach().numpy(),
                "W1": self.l1.weight.detach().numpy(),
                "b1": self.l1.bias.detach().numpy(),
                "w2": self.l2.weight.detach().numpy()[0],
                "b2": self.l2.bias.detach().numpy(),
                "wc": self.wc.detach().numpy(),
            }

    return Head()


def train(train_set: list[Generated], windows, train_ids, cache: Cache, desc_vec, args, progress):
    import torch

    torch.set_num_threads(max(1, args.threads))
    spans = {i: cache.spans(windows[i].tokens) for i in train_ids}
    s_all = torch.tensor(np.stack([spans[i][0] for i in train_ids]))  # W × T × k × dim
    mask = torch.tensor(np.stack([spans[i][1] for i in train_ids]))  # W × T
    labels = torch.tensor(
        np.array([[concept_activations(g.concept, windows[i]) for i in train_ids] for g in train_set], dtype=np.float32)
    )  # C × W × T
    own = [torch.nonzero(labels[c].sum(1) > 0).squeeze(1) for c in range(len(train_set))]
    head = build_head(s_all.shape[-1], args.rank, args.hidden, args.seed, args.baseline)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    rng = random.Random(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    usable = [c for c in range(len(train_set)) if len(own[c])]  # a concept with no positive window teaches nothing
    if not usable:
        raise SystemExit("train-context-scorer: no training concept fires in the training windows (--top-windows?)")
    steps = args.epochs * max(1, len(usable) // args.batch)
    for step in range(steps):
        batch = rng.sample(usable, min(args.batch, len(usable)))
        e = torch.tensor(np.stack([desc_vec[rng.choice(train_set[c].descriptions)] for c in batch]))
        wins = []
        for c in batch:
            pos = own[c][torch.randint(0, len(own[c]), (args.pos_windows,), generator=g)]
            rnd = torch.randint(0, len(train_ids), (args.rand_windows,), generator=g)
            wins.append(torch.cat([pos, rnd]))
        w = torch.stack(wins)  # B × n
        s = s_all[w].flatten(1, 2)  # B × (n·T) × k × dim
        y = torch.stack([labels[c][w[b]].flatten() for b, c in enumerate(batch)])
        m = mask[w].flatten(1).float()
        logit = head(e, s)
        # balanced per description: positives and negatives weigh the same
        npos = (y * m).sum(1, keepdim=True).clamp(min=1)
        nneg = ((1 - y) * m).sum(1, keepdim=True).clamp(min=1)
        weight = m * (y / npos + (1 - y) / nneg) / 2
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logit, y, reduction="none") * weight).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            progress(f"step {step + 1}/{steps} loss {loss.item():.4f}")
    return head


def save_weights(head, path: Path, meta: dict) -> None:
    arrays = {k: v.astype(np.float16) for k, v in head.arrays().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, version=np.array(VERSION), meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)


def auroc(pos, neg) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg)) if pos and neg else float("nan")


def discrimination(concepts: list[Generated], windows, cache: Cache, simulate) -> dict:
    """AUROC of right over wrong descriptions per kind and overall, as bench_discrimination does."""
    records = {}
    for g in concepts:
        rec = planted_record(g.concept, windows)
        if len(rec.windows_for("heldout", "top")) >= 2:
            records[g.concept.name] = (g, rec.windows_for("heldout"))
    names = list(records)
    matrix = {}
    for c in names:
        held = records[c][1]
        true, dom = [list(w.activations) for w in held], [w.domain for w in held]
        matrix[c] = {
            o: score_simulation(true, simulate(records[o][0].descriptions[0], held), dom, n_boot=10).value
            for o in names
        }
    out = {}
    for kind in ("token", "context", "all"):
        sel = [c for c in names if kind == "all" or records[c][0].kind == kind]
        pos = [matrix[c][c] for c in sel]
        neg = [matrix[c][o] for c in sel for o in sel if o != c]
        out[kind] = {"auroc": round(auroc(pos, neg), 4), "n": len(sel)}
    out["fooled"] = sorted(c for c in names if any(matrix[c][o] >= matrix[c][c] for o in names if o != c))
    return out


def main(argv: list[str] | None = None) -> dict:
    configure_runtime()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/context_scorer_cache/spans.npz"))
    ap.add_argument("--out", type=Path, default=WEIGHTS_FILE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=0.2, help="share of concept groups held out")
    ap.add_argument("--random-windows", type=int, default=250)
    ap.add_argument("--top-windows", type=int, default=2, help="top windows per training concept")
    ap.add_argument("--eval-concepts", type=int, default=30, help="held-out generated concepts evaluated")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pos-windows", type=int, default=4)
    ap.add_argument("--rand-windows", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument(
        "--baseline",
        type=float,
        default=10.0,
        help="start from simulation-context's cosine mix times this (0: from zero)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--embed-only", action="store_true", help="fill the embedding cache and stop")
    ap.add_argument("--no-baseline", action="store_true", help="skip simulation-context on the held-out concepts")
    args = ap.parse_args(argv)
    for flag in ("top_windows", "epochs", "batch", "pos_windows"):
        if getattr(args, flag, 1) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1")
    progress = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t_start = time.perf_counter()

    from transformers import AutoTokenizer

    from store.embedding import LocalEmbedder

    src = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(src.directory, gguf_file=src.gguf_file)
    windows = tokenize_windows(default_corpus(), tokenizer, window=32)
    public = load_concepts(DEFAULT_CONCEPTS) + load_concepts(CONTEXT_CONCEPTS)
    generated, dropped = generate(windows, public, seed=args.seed)
    train_set = [g for g in generated if not holdout(g.group, args.holdout)]
    held_set = [g for g in generated if holdout(g.group, args.holdout)]
    progress(
        f"{len(generated)} generated concepts ({sum(g.kind == 'context' for g in generated)} contextual), "
        f"{len(dropped)} dropped ({sum('public' in r for r in dropped.values())} overlapping a public concept); "
        f"{len(train_set)} for training, {len(held_set)} held out"
    )
    rng = random.Random(args.seed)
    ids = set(rng.sample(range(len(windows)), min(args.random_windows, len(windows))))
    for g in train_set:
        acts = [(sum(concept_activations(g.concept, w)), i) for i, w in enumerate(windows)]
        ids.update(i for a, i in sorted(acts, key=lambda x: (-x[0], x[1]))[: args.top_windows] if a > 0)
    train_ids = sorted(ids)
    # held-out generated concepts for evaluation: a seeded sample, token-level and contextual alike
    ev = random.Random(args.seed + 1)
    held_tok = [g for g in held_set if g.kind == "token"]
    held_ctx = [g for g in held_set if g.kind == "context"]
    half = args.eval_concepts // 2
    eval_set = ev.sample(held_tok, min(half, len(held_tok))) + ev.sample(held_ctx, min(half, len(held_ctx)))
    eval_windows = [w for g in eval_set for w in planted_record(g.concept, windows).windows_for("heldout")]

    embedder = LocalEmbedder()
    cache = Cache(args.cache, embedder)
    descs = [d for g in generated for d in g.descriptions]
    texts = descs + window_texts([windows[i] for i in train_ids]) + window_texts(eval_windows)
    if not args.no_baseline:
        texts += contextual_texts(eval_windows)
    progress(f"{len(train_ids)} training windows, {len(eval_windows)} evaluation windows")
    cache.ensure(texts, progress)
    if args.embed_only:
        return {}

    desc_vec = {d: cache.vecs[d] for d in descs}
    t0 = time.perf_counter()
    head = train(train_set, windows, train_ids, cache, desc_vec, args, progress)
    train_s = time.perf_counter() - t0
    meta = {
        "version": VERSION,
        "seed": args.seed,
        "rank": args.rank,
        "hidden": args.hidden,
        "epochs": args.epochs,
        "baseline_init": args.baseline,
        "weight_decay": args.weight_decay,
        "train_concepts": len(train_set),
        "held_out_concepts": len(held_set),
        "held_out_groups_share": args.holdout,
        "trained_by": "bench/train_context_scorer.py",
    }
    save_weights(head, args.out, meta)
    progress(f"saved {args.out} ({args.out.stat().st_size} bytes) after {train_s:.0f} s of training")

    from explainer.score.contextual import ContextualSimulator
    from explainer.score.trained import TrainedSimulator

    class Cached:
        name = "all-MiniLM-L6-v2"

        def embed(self, texts):
            cache.ensure(texts, lambda s: None)
            return [cache.vecs[t] for t in texts]

    trained = TrainedSimulator(weights=args.out)
    trained.vectors = ContextualSimulator(Cached())
    result = {"trained": discrimination(eval_set, windows, cache, trained.simulate)}
    if not args.no_baseline:
        result["simulation-context"] = discrimination(eval_set, windows, cache, ContextualSimulator(Cached()).simulate)
    out = {"benchmark": "train_context_scorer", **meta, "held_out_generated": result, "train_s": round(train_s, 1)}
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
