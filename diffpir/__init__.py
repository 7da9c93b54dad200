"""DiffPIR: plug-and-play image restoration with a diffusion prior (Zhu et al., CVPRW 2023)."""
