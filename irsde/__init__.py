"""IR-SDE: mean-reverting SDE image restoration (Luo et al., ICML 2023)."""
