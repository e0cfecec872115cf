"""The role maps of the model families: for each role a method can target (q, k, v, o: the attention
projections; ffn_in, ffn_out: the feed-forward layers), the module-name patterns of a family's layers.
This is their one home: the model configs of a family extend its map (`/base/roles/<family>`,
registered by harness/config/roles.py), methods take BERT's names as the default targets of a config
built in code, and tests read them from here. It imports nothing, so that every layer can read it.
"""

BERT_ROLES = {
    "q": "query",
    "k": "key",
    "v": "value",
    "o": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": r"re:.*\.layer\.\d+\.output\.dense",  # the FFN's down projection, not attention.output.dense
}

# Llama and every decoder of its layout (SmolLM2, Qwen2, Mistral): a gated FFN with two input projections
LLAMA_ROLES = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "ffn_in": ["gate_proj", "up_proj"],
    "ffn_out": "down_proj",
}

ROLE_MAPS = {"bert": BERT_ROLES, "llama": LLAMA_ROLES}
