"""Stage 1, collect: load the subject model, hook a layer (optionally through an SAE or directions), run it
over the corpus and keep each unit's top, quantile and random windows with its statistics."""
