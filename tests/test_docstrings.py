"""help() on the public calls documents their arguments and returns (issue 33): every
parameter of the forward calls is named in its docstring, which has a Returns section."""
import inspect
import pydoc

import pytest

import minibertgen as mb

UNDOCUMENTED = {"self", "record", "kwargs"}  # record: training's internal hook


@pytest.mark.parametrize("call", [mb.EncoderDecoderModel.__call__, mb.BertGenerationEncoder.__call__,
                                  mb.BertModel.__call__, mb.RobertaModel.__call__])
def test_forward_calls_document_every_argument(call):
    doc = inspect.getdoc(call) or ""
    assert "Returns" in doc and "Call self as a function" not in pydoc.render_doc(call)
    missing = [name for name in inspect.signature(call).parameters
               if name not in UNDOCUMENTED and name not in doc]
    assert not missing, missing


@pytest.mark.parametrize("cls", [mb.BertGenerationDecoder, mb.BertLMHeadModel, mb.RobertaForCausalLM])
def test_causal_lm_call_documents_labels_and_returns(cls):
    doc = inspect.getdoc(cls.__call__)
    assert "labels" in doc and "Returns" in doc and "logits" in doc
    assert cls.forward is cls.__call__  # help(model.forward) shows the same text


def test_from_pretrained_documents_its_options():
    doc = inspect.getdoc(mb.EncoderDecoderModel.from_pretrained)
    for option in ("pretrained_model_name_or_path", "dtype", "device", "quantization_config", "config",
                   "output_loading_info", "Returns", "from_encoder_decoder_pretrained"):
        assert option in doc, option
