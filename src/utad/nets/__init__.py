"""Pure networks (no optimiser, I/O or device logic): shared blocks, IE-Net, Expert-Net, backbones for PM."""
