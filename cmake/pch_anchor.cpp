// Anchor source for the precompiled torch/torch.h.
