"""A tiny EGTR configuration shared by the model tests (a forward pass in milliseconds)."""

TINY = {
    "backbone": "resnet18",
    "d_model": 64,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "num_queries": 10,
    "num_labels": 5,
    "num_rel_labels": 3,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
}
