"""A CLIP-format BPE vocabulary built by hand, laid out like the real one (byte alphabet, merges, specials)."""

from __future__ import annotations

from transformers import CLIPTokenizer


def byte_alphabet() -> list[str]:
    """CLIP's printable stand-ins for the 256 byte values, in CLIP's order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def build_tokenizer(words_in_merge_order: list[str]) -> CLIPTokenizer:
    """A tokenizer whose merges spell each word letter by letter, earlier words being more frequent.

    A word ending in "</w>" becomes a word-final token, any other a word-internal one.
    """
    alphabet = byte_alphabet()
    vocab = {char: index for index, char in enumerate(alphabet)}
    vocab.update({char + "</w>": 256 + index for index, char in enumerate(alphabet)})
    merges: list[tuple[str, str]] = []
    for word in words_in_merge_order:
        final = word.endswith("</w>")
        letters = list(word[:-4] if final else word)
        if final:
            letters[-1] += "</w>"
        current = letters[0]
        for piece in letters[1:]:
            merged = current + piece
            if merged not in vocab:
                merges.append((current, piece))
                vocab[merged] = len(vocab)
            current = merged
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)
