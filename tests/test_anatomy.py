from llamalab import anatomy


def test_llama_reference_sizes_match_published_parameter_counts():
    table = {r["model"]: r for r in anatomy.llama_reference_table()}
    published = {"LLaMA-7B": 6.74e9, "LLaMA-13B": 13.0e9, "LLaMA-33B": 32.5e9, "LLaMA-65B": 65.2e9}
    for name, n in published.items():
        assert abs(table[name]["parameters"] / n - 1) < 0.01, name
    assert table["LLaMA-13B"]["fp16_fits_A100_40GB"] and not table["LLaMA-33B"]["fp16_fits_A100_40GB"]
    assert table["LLaMA-33B"]["fp16_fits_A100_80GB"] and table["LLaMA-33B"]["int8_fits_A100_40GB"]
    assert table["LLaMA-65B"]["4bit_fits_A100_40GB"] and not table["LLaMA-65B"]["int8_fits_A100_40GB"]


def test_architecture_is_read_from_the_model(tiny):
    model, _ = tiny
    arch = anatomy.architecture(model)
    assert arch["parameters"] == sum(p.numel() for p in model.parameters())
    assert (arch["layers"], arch["attention_heads"], arch["kv_heads"]) == (2, 4, 2)
    assert arch["attention"] == "GQA" and arch["norm"].startswith("RMSNorm")
    assert arch["mlp"].startswith("SwiGLU")
