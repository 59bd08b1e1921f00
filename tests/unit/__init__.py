"""Single components: paths, decoding, the model, the store engines, generated code."""
