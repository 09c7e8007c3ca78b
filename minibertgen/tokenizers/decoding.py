"""``decode`` and ``batch_decode``: ids back to text, as transformers' slow tokenizers do it."""
from .calling import _to_int_list

__all__ = ["DecodeMixin"]


class DecodeMixin:
    """Mixed into PreTrainedTokenizer; relies on its convert/special-token API."""

    def decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None,
               spaces_between_special_tokens=True):  # fmt: skip
        """Turn ids back into text. Special tokens stay unless ``skip_special_tokens``."""
        ids = _to_int_list(token_ids)
        tokens = self.convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens)
        if isinstance(tokens, str):
            tokens = [tokens]
        specials = set(self.all_special_tokens)
        # Tokens added by a user (not special) are glued back verbatim, outside the
        # subword decoder, because the subword model never produced them.
        verbatim = set(self._added_encoder) - specials
        verbatim |= {t for t in self.additional_special_tokens if self.convert_tokens_to_ids(t) >= self.vocab_size}
        texts, run = [], []
        for token in tokens:
            if skip_special_tokens and token in specials:
                continue
            if token in verbatim:
                if run:
                    piece = self.convert_tokens_to_string(run)
                    if piece:
                        texts.append(piece)
                    run = []
                texts.append(token)
            else:
                run.append(token)
        if run:
            texts.append(self.convert_tokens_to_string(run))
        text = (" " if spaces_between_special_tokens else "").join(texts)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, skip_special_tokens=False, clean_up_tokenization_spaces=None, **kwargs):
        """Decode each row of a 2-D list or array of ids."""
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [
            self.decode(seq, skip_special_tokens=skip_special_tokens,
                        clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs)  # fmt: skip
            for seq in sequences
        ]

    @staticmethod
    def clean_up_tokenization(out_string):
        """Undo the spaces WordPiece-style decoding puts before punctuation and contractions."""
        for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                               (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):  # fmt: skip
            out_string = out_string.replace(spaced, joined)
        return out_string
