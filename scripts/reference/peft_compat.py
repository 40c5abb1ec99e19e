"""What the reference scripts share to run PEFT 0.21.2 under transformers 5.24.

PEFT's sequence-classification prefix tuning looks for a `past_key_values` parameter in BertModel.forward's
signature, which transformers 5.24 renamed `cache` (the old name still works, as a deprecated alias until
5.40) — PEFT then raises "Model does not support past key values…". let_peft_see_bert_cache() adds the old
name to the signature PEFT inspects (this process only), so PEFT's own path runs unchanged."""
import inspect
from transformers.models.bert import modeling_bert


def let_peft_see_bert_cache():
    f = modeling_bert.BertModel.forward
    sig = inspect.signature(f)
    if "past_key_values" in sig.parameters: return
    ps = list(sig.parameters.values())
    ps.insert([p.name for p in ps].index("cache") + 1,
              inspect.Parameter("past_key_values", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None))
    f.__signature__ = sig.replace(parameters=ps)
