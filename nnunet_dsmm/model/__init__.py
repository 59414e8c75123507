"""The paper's mathematics in plain torch: modality codes and prompts, masking, losses, the hypernetwork
heads, the networks and the text encoder. Imports nothing else of the package but ``errors``."""
