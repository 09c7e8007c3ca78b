"""minibertgen: a from-scratch NumPy/CuPy engine for BertGeneration."""
