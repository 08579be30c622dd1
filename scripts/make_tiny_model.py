"""Make a tiny random-weight Llama that vLLM's CPU backend serves (no download needed).

Its text is noise; its memory is real. head_dim = 128 / 4 = 32, one the CPU attention
backend accepts (head_dim 16 starts and then dies on the first request). The weights
are seeded, so every machine makes the same bytes and runs compare the same model.

The tokenizer learns memgap's prompt words (memgap.load.prompts.WORDS) as one token each,
with their leading space, as real vocabularies do: trained on a few sentences alone it
split them into ~3 tokens, and memgap's exact-length prompts could not converge (a
32-token prompt came out as 4).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from memgap.load.prompts import WORDS  # imports httpx only, which vLLM has too

    corpus = [
        "the quick brown fox jumps over the lazy dog " * 4,
        "memory goes to the kv cache, the weights and the page cache " * 4,
        "hello world, how are you today? numbers 0123456789 " * 4,
        # every prompt word, often enough that BPE merges it whole (with its leading space)
        *(" ".join(WORDS) + " " for _ in range(8)),
    ]
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    fast.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        max_position_embeddings=4096,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_tiny_model.py OUT_DIR")
    main(Path(sys.argv[1]))
