"""Synthetic prompts of an exact token length, measured with the server's own tokenizer.

llama.cpp's server answers ``POST /tokenize {"content": ...}`` with ``{"tokens": [...]}``
and vLLM's ``POST /tokenize {"prompt": ...}`` with ``{"tokens": [...], "count": n}``; one
body with both keys suits both. ``add_special`` (llama.cpp) and vLLM's default count the
BOS token the way a completion request does. A server without the endpoint gets an
approximate prompt (about one token per short common word) and a measured count of None.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import httpx

# Short, common English words: one token each (with their leading space) in the BPE
# vocabularies of SmolLM2, Llama, Qwen and GPT-2, so the first guess is nearly right.
WORDS = (
    "the of and to in is was for on that with as by at from his her he it an be this are"
    " or had not but have one all were they which she you their has we been two there more"
    " when its who will no if out so said what up into them can only other new some could"
    " time these may than first then do any like my now over such our man me even most made"
    " after also did many before must through back years where much your way well down"
    " should because each just those people how too little state good very make world still"
    " own see men work long get here between both life being under never day same another"
    " know while last might us great old year off come since against go came right used take"
    " three small house water green river stone light night city road music table paper"
).split()

CountTokens = Callable[[str], Awaitable[int | None]]
MAX_ADJUSTMENTS = 12


def tokenizer_for(client: httpx.AsyncClient, base_url: str) -> CountTokens:
    url = base_url.rstrip("/") + "/tokenize"

    async def count(text: str) -> int | None:
        try:
            resp = await client.post(
                url, json={"content": text, "prompt": text, "add_special": True}
            )
        except httpx.HTTPError:
            return None
        if resp.status_code != 200:
            return None
        try:
            body = resp.json()
        except ValueError:
            return None
        tokens = body.get("tokens") if isinstance(body, dict) else None
        return len(tokens) if isinstance(tokens, list) else None

    return count


async def build_prompt(
    client: httpx.AsyncClient, base_url: str, n_tokens: int, seed: int
) -> tuple[str, int | None]:
    """A prompt of ``n_tokens`` tokens by the server's tokenizer, deterministic for ``seed``.

    Returns the text and its measured token count (None: no tokenizer endpoint, the
    length is approximate). The count can differ from ``n_tokens`` only where no word
    sequence fits exactly (e.g. ``n_tokens`` below what a single word plus BOS takes).
    """
    return await build_prompt_with(tokenizer_for(client, base_url), n_tokens, seed)


async def build_prompt_with(count: CountTokens, n_tokens: int, seed: int) -> tuple[str, int | None]:
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(max(n_tokens, 1))]
    measured = await count(" ".join(words))
    if measured is None:
        return " ".join(words), None
    best = (abs(measured - n_tokens), " ".join(words), measured)
    for _ in range(MAX_ADJUSTMENTS):
        diff = n_tokens - measured
        if diff == 0:
            break
        if diff > 0:
            words.extend(rng.choice(WORDS) for _ in range(diff))
        elif len(words) > 1:
            # Remove at most what is too many, keeping one word; a word that turned out to
            # be two tokens makes this overshoot, which the next round corrects by adding.
            del words[max(1, len(words) + diff) :]
        else:
            break
        text = " ".join(words)
        got = await count(text)
        if got is None:
            break
        measured = got
        if abs(measured - n_tokens) < best[0]:
            best = (abs(measured - n_tokens), text, measured)
    return best[1], best[2]
