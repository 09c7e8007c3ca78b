"""BertGenerationTokenizer: a SentencePiece model behind the shared tokenizer shell.

The bbc / wmt BertGeneration checkpoints ship a SentencePiece model (``spiece.model``).
As in transformers, the subword work is done by the ``sentencepiece`` library; this
class only adds the special tokens and the decoding rule that keeps special tokens
out of the SentencePiece decoder (which would otherwise mangle them).

BertGeneration adds *no* special tokens around a sequence: ``<s>``/``</s>`` come from
the model's own training setup, so ``tokenizer("hi")`` gives just the pieces of "hi".
"""
import os
import shutil
from pathlib import Path

from .base import PreTrainedTokenizer


def _load_processor(vocab_file, sp_model_kwargs):
    try:
        import sentencepiece as spm
    except ImportError as exc:  # pragma: no cover - sentencepiece is a core dependency
        raise ImportError("BertGenerationTokenizer needs the sentencepiece package: pip install sentencepiece") from exc
    if vocab_file is None or not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"vocab_file {str(vocab_file)!r}: no such SentencePiece model file")
    processor = spm.SentencePieceProcessor(**sp_model_kwargs)
    try:
        processor.Load(str(vocab_file))
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"vocab_file {str(vocab_file)!r} is not a readable SentencePiece model: {exc}") from exc
    return processor


class BertGenerationTokenizer(PreTrainedTokenizer):
    """SentencePiece tokenizer of BertGeneration (transformers' ``BertGenerationTokenizer``).

    ``sp_model_kwargs`` go to ``SentencePieceProcessor``; for example
    ``{"enable_sampling": True, "nbest_size": -1, "alpha": 0.1}`` turns on subword
    regularisation (a different split on every call).
    """

    vocab_files_names = {"vocab_file": "spiece.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                 sep_token="<::::>", sp_model_kwargs=None, **kwargs):  # fmt: skip
        self.sp_model_kwargs = dict(sp_model_kwargs or {})
        self.vocab_file = str(vocab_file) if vocab_file is not None else None
        self.sp_model = _load_processor(self.vocab_file, self.sp_model_kwargs)
        super().__init__(
            bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, pad_token=pad_token,
            sep_token=sep_token, sp_model_kwargs=self.sp_model_kwargs, **kwargs,
        )  # fmt: skip

    @property
    def vocab_size(self):
        return self.sp_model.get_piece_size()

    def get_vocab(self):
        vocab = {self.convert_ids_to_tokens(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text):
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token):
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index):
        if not 0 <= index < self.vocab_size:
            raise ValueError(f"token id {index} is out of range for a vocabulary of {self.vocab_size} pieces")
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens):
        """Decode runs of pieces with SentencePiece; glue special tokens in verbatim."""
        specials = set(self.all_special_tokens)
        out, run = "", []
        for token in tokens:
            if token in specials:
                out += self.sp_model.decode(run) + token
                run = []
            else:
                run.append(token)
        return (out + self.sp_model.decode(run)).strip()

    def save_vocabulary(self, save_directory, filename_prefix=None):
        target = Path(save_directory) / ((filename_prefix + "-" if filename_prefix else "") + "spiece.model")
        if os.path.isfile(self.vocab_file):
            if os.path.abspath(self.vocab_file) != os.path.abspath(target):
                shutil.copyfile(self.vocab_file, target)
        else:  # the file was moved since loading: write the model we hold in memory
            target.write_bytes(self.sp_model.serialized_model_proto())
        return (str(target),)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["sp_model_proto"] = self.sp_model.serialized_model_proto()
        del state["sp_model"]
        return state

    def __setstate__(self, state):
        import sentencepiece as spm

        proto = state.pop("sp_model_proto")
        self.__dict__.update(state)
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.LoadFromSerializedProto(proto)
